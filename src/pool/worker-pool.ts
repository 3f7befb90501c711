import type { Logger } from 'pino'
import { WARDEN_ERRORS, WardenError } from '../errors.ts'
import type { Program } from './run.ts'
import type { Worker } from './worker.ts'
import { ZygoteSet } from './zygotes.ts'

export interface WorkerPoolOptions {
  /** warm workers kept ready, of each flavor */
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
  /**
   * a worker for one execution: of `flavor` (data when absent), and prepared for `program` when the
   * provider prepares workers (prepared-workers.ts)
   */
  acquire (flavor?: Flavor, program?: Program, options?: AcquireOptions): Promise<Worker>
  release (worker: Worker): void
  stats (): PoolStats
  ready (): Promise<void>
  close (): Promise<void>
}

export interface AcquireOptions {
  /**
   * Only a worker of the flavor asked for. Without it a light request with no light worker warm takes a
   * warm data worker (a superset: the same jail, with the data stack loaded besides) rather than wait for
   * a fork; the self-test asks for exactly the zygote it checks.
   */
  exactFlavor?: boolean
}

function poolUnavailable (message: string): WardenError {
  return new WardenError(WARDEN_ERRORS.jailUnavailable, message)
}

/** Every worker is busy and the queue is full, or the wait ran out: come back in `retryAfterSeconds`. */
function poolBusy (message: string, retryAfterSeconds: number): WardenError {
  return new WardenError(WARDEN_ERRORS.poolBusy, message, { retryAfterSeconds })
}

interface Waiter { resolve: (worker: Worker) => void, reject: (error: Error) => void, timer: NodeJS.Timeout }

/**
 * What a worker is forked from. `data`: the zygote with the data stack preloaded (numpy, pandas,
 * matplotlib), for Python that uses it and for kernels. `light`: a zygote with nothing preloaded, for
 * everything else (Bash and the compiled languages exec a program of their own; Python that imports only
 * the standard library): forking and tearing down its small address space costs a fraction.
 */
export type Flavor = 'data' | 'light'

/** The warm workers of one flavor, and who waits for one. */
interface Lane {
  flavor: Flavor
  zygotes: ZygoteSet
  idle: Worker[]
  waiters: Waiter[]
  adopters: Array<(worker: Worker | null) => void>
  starting: number
  /** recent acquisitions, decaying (noteDemand) */
  demand: number
}

const SPAWN_RETRY_DELAY_MS = 250
const DEMAND_DECAY = 0.9
/** How long a kernel waits for a worker being forked before it forks its own. */
const ADOPT_WAIT_MS = 1_000

/**
 * Warm single-use workers. A worker serves one execution and is destroyed; the pool refills to `min`
 * per flavor (plus one per waiting request), within `max` workers of all flavors together, in the
 * background, so a refill is never on a request's path while a warm worker is there. A request waiting
 * while the pool is full of another flavor's warm workers has one of them retired to make room. Workers
 * of a zygote that died are dropped at once, not counted as warm until a request finds them dead.
 * Without a `light` zygote set, every flavor is served by `data`.
 */
export class WorkerPool implements WorkerProvider {
  private readonly lanes: Lane[]
  private readonly busy = new Set<Worker>()
  private spawned = 0
  private acquiredWarm = 0
  private acquiredCold = 0
  private recentWallMs = 1_000
  private closing = false
  private retryTimer: NodeJS.Timeout | null = null
  private readyWaiters: Array<() => void> = []

  constructor (zygotes: Partial<Record<Flavor, ZygoteSet>> & { data: ZygoteSet }, private readonly options: WorkerPoolOptions) {
    this.lanes = (['data', 'light'] as const).flatMap((flavor) => {
      const set = zygotes[flavor]
      return set === undefined ? [] : [{ flavor, zygotes: set, idle: [], waiters: [], adopters: [], starting: 0, demand: 0 }]
    })
    for (const lane of this.lanes) {
      lane.zygotes.onLost((zygote) => {
        this.dropIdle((worker) => ZygoteSet.isFrom(worker, zygote))
        // requests waiting for a worker wait for the restarted zygote, within their own timeout
      })
    }
    this.refill()
  }

  /** Resolves when each flavor has its warm workers (`min`, or its share of `max`). */
  async ready (): Promise<void> {
    if (this.isWarm()) return
    await new Promise<void>((resolve) => this.readyWaiters.push(resolve))
  }

  async acquire (flavor: Flavor = 'data', _program?: Program, options: AcquireOptions = {}): Promise<Worker> {
    const lane = this.lane(flavor)
    if (!lane.zygotes.hasLiveZygote && !lane.zygotes.isRecovering) throw poolUnavailable('no jail is running; see /health')
    this.noteDemand(lane)
    this.dropIdle((worker) => !worker.isAlive)
    // a light request while the warm workers are still the data lane's (the load just turned) takes one
    // of those rather than wait for a light fork. (That turn is not what makes print(1)'s slow 1% at c=1:
    // there the light lane itself runs dry, its forks slower than the requests; README "Performance".)
    const warm = lane.idle.pop() ?? (options.exactFlavor === true ? undefined : this.standIn(lane))
    if (warm !== undefined) {
      this.acquiredWarm++
      this.busy.add(warm)
      this.refill()
      return warm
    }
    // MAX_QUEUE counts requests that wait for a busy pool; those waiting for a worker being forked now
    // are not queued behind anyone
    const queuedBeyondStarting = this.waiting() - this.starting()
    if (this.total() >= this.options.max && queuedBeyondStarting >= this.options.maxQueue) {
      throw poolBusy(`All ${this.options.max} workers are busy and ${this.options.maxQueue} requests are already waiting.`, this.retryAfterSeconds())
    }
    const worker = await new Promise<Worker>((resolve, reject) => {
      const timer = setTimeout(() => {
        const index = lane.waiters.indexOf(waiter)
        if (index >= 0) lane.waiters.splice(index, 1)
        reject(lane.zygotes.hasLiveZygote
          ? poolBusy(`No worker became free within ${Math.round(this.options.acquireTimeoutMs / 1000)} s.`, this.retryAfterSeconds())
          : poolUnavailable('no jail is running; see /health'))
      }, this.options.acquireTimeoutMs)
      const waiter: Waiter = { resolve, reject, timer }
      lane.waiters.push(waiter)
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
  async adopt (flavor: Flavor = 'data'): Promise<Worker | null> {
    const lane = this.lane(flavor)
    this.noteDemand(lane)
    this.dropIdle((worker) => !worker.isAlive)
    const warm = lane.idle.pop()
    this.refill()
    if (warm !== undefined) return warm
    if (lane.starting === 0 || this.closing) return null
    return await new Promise<Worker | null>((resolve) => {
      const adopter = (worker: Worker | null) => { clearTimeout(timer); resolve(worker) }
      const timer = setTimeout(() => {
        lane.adopters.splice(lane.adopters.indexOf(adopter), 1)
        resolve(null)
      }, ADOPT_WAIT_MS)
      lane.adopters.push(adopter)
    })
  }

  /** A fresh fork of `flavor`'s zygote, outside the pool (a live worker when none is warm). */
  async spawn (flavor: Flavor = 'data'): Promise<Worker> {
    return await this.lane(flavor).zygotes.spawn()
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
    const slots: Record<string, number> = {}
    let zygotesAlive = 0
    let zygotes = 0
    let jailsStarted = 0
    for (const lane of this.lanes) {
      const set = lane.zygotes.stats()
      zygotesAlive += set.alive
      zygotes += set.total
      jailsStarted += set.jailsStarted
      for (const [state, count] of Object.entries(set.slots)) slots[state] = (slots[state] ?? 0) + count
    }
    return {
      warm: this.lanes.reduce((sum, lane) => sum + lane.idle.filter((worker) => worker.isAlive).length, 0),
      busy: this.busy.size,
      starting: this.starting(),
      waiting: this.waiting(),
      zygotesAlive,
      zygotes,
      spawned: this.spawned,
      acquiredWarm: this.acquiredWarm,
      acquiredCold: this.acquiredCold,
      jailsStarted,
      slots,
    }
  }

  /** Stop refilling and dispose of the warm workers (the zygotes are closed by their owner). */
  async close (): Promise<void> {
    this.closing = true
    if (this.retryTimer !== null) clearTimeout(this.retryTimer)
    for (const lane of this.lanes) {
      for (const worker of lane.idle.splice(0)) worker.dispose()
      for (const waiter of lane.waiters.splice(0)) {
        clearTimeout(waiter.timer)
        waiter.reject(poolUnavailable('the server is shutting down'))
      }
      for (const adopter of lane.adopters.splice(0)) adopter(null)
    }
  }

  /** A warm worker of another lane that can serve `lane`'s programs: the data lane's, for the light lane. */
  private standIn (lane: Lane): Worker | undefined {
    const data = this.lane('data')
    return lane.flavor === 'light' && data !== lane ? data.idle.pop() : undefined
  }

  /** The lane serving `flavor`: its own, or the data lane when there is no light zygote. */
  private lane (flavor: Flavor): Lane {
    return this.lanes.find((lane) => lane.flavor === flavor) ?? this.lanes[0] as Lane
  }

  private total (): number {
    return this.lanes.reduce((sum, lane) => sum + lane.idle.length + lane.starting, this.busy.size)
  }

  private starting (): number { return this.lanes.reduce((sum, lane) => sum + lane.starting, 0) }
  private waiting (): number { return this.lanes.reduce((sum, lane) => sum + lane.waiters.length, 0) }

  private isWarm (): boolean {
    const idle = this.lanes.reduce((sum, lane) => sum + lane.idle.length, 0)
    const wanted = this.lanes.reduce((sum, lane) => sum + this.warmTarget(lane), 0)
    return idle >= Math.min(this.options.max, wanted)
  }

  /** The queue ahead divided by the pool's rate, from recent execution times; 1–60 s. */
  private retryAfterSeconds (): number {
    const seconds = ((this.waiting() + 1) / this.options.max) * (this.recentWallMs / 1000)
    return Math.min(60, Math.max(1, Math.ceil(seconds)))
  }

  private dropIdle (matches: (worker: Worker) => boolean): void {
    for (const lane of this.lanes) {
      for (let index = lane.idle.length - 1; index >= 0; index--) {
        const worker = lane.idle[index] as Worker
        if (!matches(worker)) continue
        lane.idle.splice(index, 1)
        worker.dispose()
      }
    }
    this.refill()
  }

  /**
   * Start forks: first one per waiting request (retiring another lane's warm worker when the pool is
   * full, since a waiting request outranks a warm worker nobody asked for), then warm workers up to each
   * lane's target (`warmTarget`) within `max`, for the lane in most demand first, retiring warm workers
   * of a lane over its own target when the pool is full. Targets follow demand: under a steady load of one
   * flavor the other lane's falls to nothing, so it does not take the room back after each execution only
   * to have its worker retired again; when the load turns, the warm workers turn with it.
   */
  private refill (): void {
    if (this.closing || this.retryTimer !== null) return
    for (const lane of this.lanes) {
      while (lane.waiters.length > lane.starting) {
        if (this.total() >= this.options.max && !this.retireIdleBesides(lane)) break
        this.startSpawn(lane)
      }
    }
    for (const lane of [...this.lanes].sort((a, b) => b.demand - a.demand)) {
      const target = this.warmTarget(lane)
      while (lane.idle.length + lane.starting - lane.waiters.length < target) {
        if (this.total() >= this.options.max && !this.retireIdleBesides(lane, true)) break
        this.startSpawn(lane)
      }
    }
  }

  /** Warm workers a lane keeps: `min`, at most its share of `max` by recent demand (equal shares at first). */
  private warmTarget (lane: Lane): number {
    const demand = this.lanes.reduce((sum, other) => sum + other.demand, 0)
    const share = demand === 0 ? 1 / this.lanes.length : lane.demand / demand
    return Math.min(this.options.min, Math.round(this.options.max * share))
  }

  /** Each lane's share of recent acquisitions, decaying: what `refill` orders the lanes by. */
  private noteDemand (lane: Lane): void {
    for (const other of this.lanes) other.demand *= DEMAND_DECAY
    lane.demand += 1
  }

  private startSpawn (lane: Lane): void {
    lane.starting++
    this.spawnOne(lane)
  }

  /**
   * Dispose of a warm worker of another lane (the one with the most) to make room; false if none is warm.
   * `overTarget`: only from a lane holding more warm workers than its share (demand moved away from it).
   */
  private retireIdleBesides (needy: Lane, overTarget = false): boolean {
    const donor = this.lanes
      .filter((lane) => lane !== needy && lane.idle.length > (overTarget ? this.warmTarget(lane) : 0))
      .sort((a, b) => b.idle.length - a.idle.length)[0]
    const worker = donor?.idle.shift()
    if (worker === undefined) return false
    worker.dispose()
    return true
  }

  private spawnOne (lane: Lane): void {
    const started = performance.now()
    lane.zygotes.spawn().then((worker) => {
      lane.starting--
      this.spawned++
      this.options.onSpawn?.(performance.now() - started)
      if (this.closing) { worker.dispose(); return }
      // a worker that dies while warm (its zygote, a kill) is dropped, not handed out
      worker.exited.then(() => this.dropIdle((candidate) => candidate === worker), () => {})
      const waiter = lane.waiters.shift()
      const adopter = waiter === undefined ? lane.adopters.shift() : undefined
      if (waiter !== undefined) {
        clearTimeout(waiter.timer)
        this.busy.add(worker)
        waiter.resolve(worker)
      } else if (adopter !== undefined) {
        adopter(worker)
      } else {
        lane.idle.push(worker)
        if (this.isWarm()) for (const resolve of this.readyWaiters.splice(0)) resolve()
      }
      this.refill()
    }, (error: unknown) => {
      lane.starting--
      this.options.log.warn({ err: error, flavor: lane.flavor }, 'worker spawn failed')
      // a persistent failure (a dead zygote being restarted) is retried after a pause, not in a tight loop
      this.retryTimer ??= setTimeout(() => { this.retryTimer = null; this.refill() }, SPAWN_RETRY_DELAY_MS)
    })
  }
}
