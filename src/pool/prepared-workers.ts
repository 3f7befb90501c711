import type { Logger } from 'pino'
import type { Preparation, PreparedStart, Program } from './run.ts'
import type { Worker } from './worker.ts'
import type { AcquireOptions, Flavor, PoolStats, WorkerPool, WorkerProvider } from './worker-pool.ts'

type PreparableProgram = Extract<Program, { runner: 'steps' }> & { prepare: PreparedStart }

export interface PreparedOptions {
  /** prepared workers at once, across languages; 0 turns preparing off */
  max: number
  /** a language's prepared workers are let go after this long without a request for it */
  idleMs: number
  log: Logger
}

interface LanguageState {
  /** what each of its workers was prepared with: the same for every request it serves */
  preparation: Preparation
  idle: Worker[]
  preparing: number
  inFlight: number
  /** the most executions of the language at once since the last demand window began */
  peak: number
  lastRequestAt: number
  /** after a failed prepare: no new attempt before this time, and the pause before the next one */
  retryAt: number
  retryDelayMs: number
}

/** How often demand is looked at again: idle languages let go, peaks forgotten. */
const DEMAND_WINDOW_MS = 60_000
const RETRY_DELAY_MS = 1_000
const MAX_RETRY_DELAY_MS = 60_000
/** an interpreter started ahead needs nothing the data zygote preloads */
const PREPARED_FLAVOR: Flavor = 'light'

function isPreparable (program: Program | undefined): program is PreparableProgram {
  return program?.runner === 'steps' && program.prepare !== undefined
}

/** What a worker is prepared with for `program`: its interpreter and environment, never its code or file name. */
function preparationOf (program: PreparableProgram): Preparation {
  return { start: program.prepare, env: program.env ?? {} }
}

/**
 * Workers are kept per preparation, by value: a request is given a worker prepared with exactly the
 * preparation it would make itself, so a descriptor that lets something of a request into its
 * preparation (as Java's file name once did) only ever shares it with requests that carry the same.
 */
function preparationKey (preparation: Preparation): string {
  return JSON.stringify(preparation)
}

/**
 * Workers whose interpreter was started ahead (sandbox/prepared.py), per language, in front of the warm
 * pool. A language gets prepared workers once it is asked for: as many as its executions ran at once in
 * the last minute (at least one), within `max` across languages, the most recently used first. After
 * `idleMs` without a request a language has none, so an idle language costs nothing; the first request
 * of a language, or one finding none ready, takes a plain warm worker and runs its steps as processes.
 * Each prepared worker was taken from the warm pool for good (the pool refills) and is still single-use.
 */
export class PreparedWorkers implements WorkerProvider {
  private readonly languages = new Map<string, LanguageState>()
  private readonly running = new Map<Worker, LanguageState>()
  private readonly timer: NodeJS.Timeout
  private closing = false
  private hits = 0
  private misses = 0

  constructor (private readonly pool: WorkerPool, private readonly options: PreparedOptions) {
    this.timer = setInterval(() => this.review(), DEMAND_WINDOW_MS).unref()
  }

  async acquire (flavor?: Flavor, program?: Program, options?: AcquireOptions): Promise<Worker> {
    if (!isPreparable(program) || this.options.max === 0) return await this.pool.acquire(flavor, program, options)
    const state = this.stateFor(program)
    state.lastRequestAt = Date.now()
    state.inFlight++
    state.peak = Math.max(state.peak, state.inFlight)
    let worker: Worker | undefined
    let dead = 0
    while ((worker = state.idle.pop()) !== undefined && !worker.isAlive) { worker.dispose(); dead++ }
    if (worker !== undefined) this.hits++
    else this.misses++
    if (worker === undefined) this.options.log.debug({ language: program.prepare.key, dead, preparing: state.preparing }, 'no prepared worker ready')
    // the pool hands out its warm worker before any refill here can adopt it for preparing
    const plain = worker === undefined ? this.pool.acquire(flavor) : null
    this.refill()
    try {
      worker ??= await (plain as Promise<Worker>)
    } catch (error) {
      state.inFlight--
      throw error
    }
    this.running.set(worker, state)
    return worker
  }

  release (worker: Worker): void {
    const state = this.running.get(worker)
    if (state !== undefined) {
      state.inFlight--
      this.running.delete(worker)
    }
    this.pool.release(worker)
  }

  stats (): PoolStats {
    const prepared: Record<string, number> = {}
    for (const state of this.languages.values()) {
      const key = state.preparation.start.key
      if (state.idle.length > 0) prepared[key] = (prepared[key] ?? 0) + state.idle.length
    }
    return { ...this.pool.stats(), prepared, preparedHits: this.hits, preparedMisses: this.misses }
  }

  async ready (): Promise<void> { await this.pool.ready() }

  async close (): Promise<void> {
    this.closing = true
    clearInterval(this.timer)
    for (const state of this.languages.values()) for (const worker of state.idle.splice(0)) worker.dispose()
    await this.pool.close()
  }

  private stateFor (program: PreparableProgram): LanguageState {
    const preparation = preparationOf(program)
    const key = preparationKey(preparation)
    let state = this.languages.get(key)
    if (state === undefined) {
      state = { preparation, idle: [], preparing: 0, inFlight: 0, peak: 0, lastRequestAt: 0, retryAt: 0, retryDelayMs: RETRY_DELAY_MS }
      this.languages.set(key, state)
    }
    return state
  }

  /** Languages by recency of use, each with how many prepared workers it should have now. */
  private targets (): Array<{ state: LanguageState, target: number }> {
    const now = Date.now()
    let budget = this.options.max
    return [...this.languages.values()]
      .sort((a, b) => b.lastRequestAt - a.lastRequestAt)
      .map((state) => {
        const wanted = now - state.lastRequestAt > this.options.idleMs ? 0 : Math.max(1, state.peak)
        const target = Math.min(wanted, budget)
        budget -= target
        return { state, target }
      })
  }

  /** Prepare workers up to each language's target; a language over its target lets its extra ones go. */
  private refill (): void {
    if (this.closing) return
    for (const { state, target } of this.targets()) {
      while (state.idle.length > target) state.idle.shift()?.dispose()
      while (state.idle.length + state.preparing < target && Date.now() >= state.retryAt) this.prepareOne(state)
    }
  }

  private prepareOne (state: LanguageState): void {
    state.preparing++
    const started = performance.now()
    this.pool.adopt(PREPARED_FLAVOR).then(async (worker) => {
      if (worker === null) throw new Error('no warm worker to prepare')
      try {
        const prepareMs = await worker.prepare(state.preparation)
        if (this.closing) throw new Error('closing')
        this.options.log.debug({ language: state.preparation.start.key, prepareMs, totalMs: Math.round(performance.now() - started) }, 'worker prepared')
        state.idle.push(worker)
        worker.exited.then(() => { state.idle = state.idle.filter((candidate) => candidate !== worker) }, () => {})
      } catch (error) {
        worker.dispose()
        throw error
      }
    }).then(() => {
      state.preparing--
      state.retryDelayMs = RETRY_DELAY_MS
      this.refill()
    }, (error: Error) => {
      state.preparing--
      if (this.closing) return
      // an interpreter that does not come up is tried again later, each time a little later
      this.options.log.warn({ err: error, language: state.preparation.start.key, retryInMs: state.retryDelayMs }, 'preparing a worker failed')
      state.retryAt = Date.now() + state.retryDelayMs
      setTimeout(() => this.refill(), state.retryDelayMs).unref()
      state.retryDelayMs = Math.min(MAX_RETRY_DELAY_MS, state.retryDelayMs * 2)
    })
  }

  /** Once a minute: forget old peaks, let idle languages' workers go, and forget languages idle and empty. */
  private review (): void {
    for (const state of this.languages.values()) state.peak = state.inFlight
    this.refill()
    const now = Date.now()
    for (const [key, state] of this.languages) {
      const isEmpty = state.idle.length === 0 && state.preparing === 0 && state.inFlight === 0
      if (isEmpty && now - state.lastRequestAt > this.options.idleMs) this.languages.delete(key)
    }
  }
}
