import type { Logger } from 'pino'
import { WARDEN_ERRORS, WardenError } from '../errors.ts'
import type { Program } from './run.ts'
import type { Worker } from './worker.ts'
import { ZygoteSet } from './zygotes.ts'

export interface WorkerPoolOptions {
  /** warm workers kept ready */
  min: number
  /** single-use workers alive at once, warm or busy */
  max: number
  /** how long a request may wait for a worker before it is refused */
  acquireTimeoutMs: number
  /** requests allowed to wait for a busy pool; more are refused at once */
  maxQueue: number
  /** told how long each worker took to fork and isolate itself, in ms */
  onSpawn?: (ms: number) => void
  log: Logger
}

export interface PoolStats {
  warm: number
  busy: number
  starting: number
  waiting: number
  zygotesAlive: number
  zygotes: number
  spawned: number
  acquiredWarm: number
  acquiredCold: number
  /** jails (zygotes) started since the server started, restarts included */
  jailsStarted: number
  /** worker slots of all zygotes by state (free, spawning, occupied, cleaning, dead) */
  slots: Record<string, number>
  /** interpreters started ahead and waiting for a program, by language (prepared-workers.ts) */
  prepared?: Record<string, number>
  /** executions of a preparable language that found a prepared worker, and that did not */
  preparedHits?: number
  preparedMisses?: number
}

/** What the server needs from a source of single-use workers: the warm pool, or the cold baseline (cold-workers.ts). */
export interface WorkerProvider {
  /** a worker for one execution; `program` lets a provider hand out one prepared for it (prepared-workers.ts) */
  acquire (program?: Program): Promise<Worker>
  release (worker: Worker): void
  stats (): PoolStats
  ready (): Promise<void>
  close (): Promise<void>
  /** a warm worker taken for good (a kernel's), or null when none is coming soon; absent in the cold baseline */
  adopt? (): Promise<Worker | null>
}

function poolUnavailable (message: string): WardenError {
  return new WardenError(WARDEN_ERRORS.jailUnavailable, message)
}

/** Every worker is busy and the queue is full, or the wait ran out: come back in `retryAfterSeconds`. */
function poolBusy (message: string, retryAfterSeconds: number): WardenError {
  return new WardenError(WARDEN_ERRORS.poolBusy, message, { retryAfterSeconds })
}

interface Waiter { resolve: (worker: Worker) => void, reject: (error: Error) => void, timer: NodeJS.Timeout }

const SPAWN_RETRY_DELAY_MS = 250
/** How long a kernel waits for a worker being forked before it forks its own. */
const ADOPT_WAIT_MS = 1_000

/**
 * Warm single-use workers. A worker serves one execution and is destroyed; the pool refills to `min`
 * (plus one per waiting request, up to `max`) in the background, so a refill is never on a request's
 * path while a warm worker is there. Workers of a zygote that died are dropped at once, not counted
 * as warm until a request finds them dead.
 */
export class WorkerPool implements WorkerProvider {
  private readonly idle: Worker[] = []
  private readonly busy = new Set<Worker>()
  private readonly waiters: Waiter[] = []
  private readonly adopters: Array<(worker: Worker | null) => void> = []
  private starting = 0
  private spawned = 0
  private acquiredWarm = 0
  private acquiredCold = 0
  private recentWallMs = 1_000
  private closing = false
  private retryTimer: NodeJS.Timeout | null = null
  private readyWaiters: Array<() => void> = []

  constructor (private readonly zygotes: ZygoteSet, private readonly options: WorkerPoolOptions) {
    zygotes.onLost((zygote) => {
      this.dropIdle((worker) => ZygoteSet.isFrom(worker, zygote))
      // requests waiting for a worker wait for the restarted zygote, within their own timeout
    })
    this.refill()
  }

  /** Resolves when `min` warm workers are ready (or at once when min is 0). */
  async ready (): Promise<void> {
    if (this.idle.length >= this.options.min) return
    await new Promise<void>((resolve) => this.readyWaiters.push(resolve))
  }

  async acquire (): Promise<Worker> {
    if (!this.zygotes.hasLiveZygote && !this.zygotes.isRecovering) throw poolUnavailable('no jail is running; see /health')
    this.dropIdle((worker) => !worker.isAlive)
    const warm = this.idle.pop()
    if (warm !== undefined) {
      this.acquiredWarm++
      this.busy.add(warm)
      this.refill()
      return warm
    }
    // MAX_QUEUE counts requests that wait for a busy pool; those waiting for a worker being forked now
    // are not queued behind anyone
    const queuedBeyondStarting = this.waiters.length - this.starting
    if (this.total() >= this.options.max && queuedBeyondStarting >= this.options.maxQueue) {
      throw poolBusy(`All ${this.options.max} workers are busy and ${this.options.maxQueue} requests are already waiting.`, this.retryAfterSeconds())
    }
    const worker = await new Promise<Worker>((resolve, reject) => {
      const timer = setTimeout(() => {
        const index = this.waiters.indexOf(waiter)
        if (index >= 0) this.waiters.splice(index, 1)
        reject(this.zygotes.hasLiveZygote
          ? poolBusy(`No worker became free within ${Math.round(this.options.acquireTimeoutMs / 1000)} s.`, this.retryAfterSeconds())
          : poolUnavailable('no jail is running; see /health'))
      }, this.options.acquireTimeoutMs)
      const waiter: Waiter = { resolve, reject, timer }
      this.waiters.push(waiter)
      this.refill()
    })
    this.acquiredCold++
    return worker
  }

  /**
   * A warm worker taken out of the pool for good (a kernel adopts it: no fork on its first cell). When none
   * is warm but some are being forked, the next one of those (after any waiting execution) rather than a
   * fork of its own that would compete with them; null when nothing is coming within ADOPT_WAIT_MS, and
   * the caller forks. The pool refills in the background as after any other take.
   */
  async adopt (): Promise<Worker | null> {
    this.dropIdle((worker) => !worker.isAlive)
    const warm = this.idle.pop()
    this.refill()
    if (warm !== undefined) return warm
    if (this.starting === 0 || this.closing) return null
    return await new Promise<Worker | null>((resolve) => {
      const adopter = (worker: Worker | null) => { clearTimeout(timer); resolve(worker) }
      const timer = setTimeout(() => {
        this.adopters.splice(this.adopters.indexOf(adopter), 1)
        resolve(null)
      }, ADOPT_WAIT_MS)
      this.adopters.push(adopter)
    })
  }

  /** Single use: the worker is destroyed, never handed to another execution. */
  release (worker: Worker): void {
    // how long executions take tells refused clients when to come back
    if (worker.lastRunMs !== null) this.recentWallMs = this.recentWallMs * 0.9 + worker.lastRunMs * 0.1
    worker.dispose()
    this.busy.delete(worker)
    this.refill()
  }

  stats (): PoolStats {
    const zygotes = this.zygotes.stats()
    return {
      warm: this.idle.filter((worker) => worker.isAlive).length,
      busy: this.busy.size,
      starting: this.starting,
      waiting: this.waiters.length,
      zygotesAlive: zygotes.alive,
      zygotes: zygotes.total,
      spawned: this.spawned,
      acquiredWarm: this.acquiredWarm,
      acquiredCold: this.acquiredCold,
      jailsStarted: zygotes.jailsStarted,
      slots: zygotes.slots,
    }
  }

  /** Stop refilling and dispose of the warm workers (the zygotes are closed by their owner). */
  async close (): Promise<void> {
    this.closing = true
    if (this.retryTimer !== null) clearTimeout(this.retryTimer)
    for (const worker of this.idle.splice(0)) worker.dispose()
    for (const waiter of this.waiters.splice(0)) {
      clearTimeout(waiter.timer)
      waiter.reject(poolUnavailable('the server is shutting down'))
    }
    for (const adopter of this.adopters.splice(0)) adopter(null)
  }

  private total (): number {
    return this.idle.length + this.busy.size + this.starting
  }

  /** The queue ahead divided by the pool's rate, from recent execution times; 1–60 s. */
  private retryAfterSeconds (): number {
    const seconds = ((this.waiters.length + 1) / this.options.max) * (this.recentWallMs / 1000)
    return Math.min(60, Math.max(1, Math.ceil(seconds)))
  }

  private dropIdle (matches: (worker: Worker) => boolean): void {
    for (let index = this.idle.length - 1; index >= 0; index--) {
      const worker = this.idle[index] as Worker
      if (!matches(worker)) continue
      this.idle.splice(index, 1)
      worker.dispose()
    }
    this.refill()
  }

  /** Start forks until `min` warm workers plus one per waiting request exist, within `max`. */
  private refill (): void {
    if (this.closing || this.retryTimer !== null) return
    while (this.total() < this.options.max && this.idle.length + this.starting < this.options.min + this.waiters.length) {
      this.starting++
      this.spawnOne()
    }
  }

  private spawnOne (): void {
    const started = performance.now()
    this.zygotes.spawn().then((worker) => {
      this.starting--
      this.spawned++
      this.options.onSpawn?.(performance.now() - started)
      if (this.closing) { worker.dispose(); return }
      // a worker that dies while warm (its zygote, a kill) is dropped, not handed out
      worker.exited.then(() => this.dropIdle((candidate) => candidate === worker), () => {})
      const waiter = this.waiters.shift()
      const adopter = waiter === undefined ? this.adopters.shift() : undefined
      if (waiter !== undefined) {
        clearTimeout(waiter.timer)
        this.busy.add(worker)
        waiter.resolve(worker)
      } else if (adopter !== undefined) {
        adopter(worker)
      } else {
        this.idle.push(worker)
        if (this.idle.length >= this.options.min) for (const resolve of this.readyWaiters.splice(0)) resolve()
      }
      this.refill()
    }, (error: unknown) => {
      this.starting--
      this.options.log.warn({ err: error }, 'worker spawn failed')
      // a persistent failure (a dead zygote being restarted) is retried after a pause, not in a tight loop
      this.retryTimer ??= setTimeout(() => { this.retryTimer = null; this.refill() }, SPAWN_RETRY_DELAY_MS)
    })
  }
}
