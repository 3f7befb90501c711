import genericPool, { type Pool } from 'generic-pool'
import type { Logger } from 'pino'
import type { Worker } from './worker.ts'
import type { Zygote } from './zygote.ts'

export interface WorkerPoolOptions {
  /** warm workers kept ready (generic-pool's min) */
  min: number
  /** workers alive at once, busy or warm (generic-pool's max) */
  max: number
  zygotes: number
  /** how long a request may wait for a worker before it is refused */
  acquireTimeoutMs: number
  /** requests allowed to wait for a worker; more are refused at once */
  maxQueue: number
  startZygote: (index: number) => Promise<Zygote>
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
  /** worker slots of all zygotes by state (free, spawning, ready, running, draining, cleaning, dead) */
  slots: Record<string, number>
}

/** What the server needs from a source of workers: the warm pool, or the cold baseline (cold-workers.ts). */
export interface WorkerProvider {
  acquire (): Promise<Worker>
  release (worker: Worker): Promise<void>
  stats (): PoolStats
  ready (): Promise<void>
  close (): Promise<void>
}

export class PoolUnavailableError extends Error {
  override name = 'PoolUnavailableError'
}

/** Every worker is busy and the queue is full, or the wait ran out: come back in `retryAfterSeconds`. */
export class PoolBusyError extends Error {
  override name = 'PoolBusyError'
  constructor (message: string, readonly retryAfterSeconds: number) {
    super(message)
  }
}

const RESTART_BACKOFF_MS = [1_000, 2_000, 5_000, 10_000, 30_000]
const SPAWN_RETRY_DELAY_MS = 250
const SLOT_WAIT_MS = 10_000

/**
 * A generic-pool of single-use warm workers over a few zygotes. A worker is destroyed after its one
 * execution (never returned), and generic-pool refills to `min` in the background, so refills are never
 * on a request's path while a warm worker is there. Dead zygotes are restarted with backoff.
 */
export class WorkerPool implements WorkerProvider {
  private readonly zygotes: Array<Zygote | null>
  private readonly pool: Pool<Worker>
  private closing = false
  private spawned = 0
  private acquiredWarm = 0
  private acquiredCold = 0
  private jailsStarted: number
  private recentWallMs = 1_000

  private constructor (private readonly options: WorkerPoolOptions, zygotes: Zygote[]) {
    this.jailsStarted = zygotes.length
    this.zygotes = zygotes
    zygotes.forEach((zygote, index) => this.supervise(zygote, index))
    this.pool = genericPool.createPool<Worker>({
      create: () => this.spawnWorker(),
      destroy: async (worker) => { worker.dispose() },
      validate: async (worker) => worker.isAlive,
    }, {
      min: options.min,
      max: options.max,
      testOnBorrow: true,
      acquireTimeoutMillis: options.acquireTimeoutMs,
      autostart: true,
    })
    this.pool.on('factoryCreateError', (error) => options.log.warn({ err: error }, 'worker spawn failed'))
  }

  static async start (options: WorkerPoolOptions): Promise<WorkerPool> {
    const zygotes = await Promise.all(Array.from({ length: options.zygotes }, (_, index) => options.startZygote(index)))
    return new WorkerPool(options, zygotes)
  }

  /** Resolves when `min` warm workers are ready (or at once when min is 0). */
  async ready (): Promise<void> {
    await this.pool.ready()
  }

  async acquire (): Promise<Worker> {
    if (!this.zygotes.some((zygote) => zygote?.isAlive === true)) {
      throw new PoolUnavailableError('no jail is running; see /health')
    }
    // MAX_QUEUE counts requests that wait for a busy pool; those waiting for a worker being forked now
    // (generic-pool counts them as waiting too) are not queued behind anyone
    const starting = this.pool.size - this.pool.available - this.pool.borrowed
    if (this.pool.pending - starting >= this.options.maxQueue && this.pool.available === 0 && this.pool.size >= this.options.max) {
      throw new PoolBusyError(`All ${this.options.max} workers are busy and ${this.options.maxQueue} requests are already waiting.`, this.retryAfterSeconds())
    }
    const hadWarm = this.pool.available > 0
    try {
      const worker = await this.pool.acquire()
      if (hadWarm) this.acquiredWarm++
      else this.acquiredCold++
      return worker
    } catch (error) {
      if (!this.zygotes.some((zygote) => zygote?.isAlive === true)) throw new PoolUnavailableError('no jail is running; see /health')
      throw new PoolBusyError(`No worker became free within ${Math.round(this.options.acquireTimeoutMs / 1000)} s.`, this.retryAfterSeconds())
    }
  }

  /** The queue ahead divided by the pool's rate, from recent execution times; 1–60 s. */
  private retryAfterSeconds (): number {
    const seconds = ((this.pool.pending + 1) / this.options.max) * (this.recentWallMs / 1000)
    return Math.min(60, Math.max(1, Math.ceil(seconds)))
  }

  /** Single use: the worker is destroyed, never handed to another execution. */
  async release (worker: Worker): Promise<void> {
    // how long executions take tells refused clients when to come back
    if (worker.runMs !== null) this.recentWallMs = this.recentWallMs * 0.9 + worker.runMs * 0.1
    await this.pool.destroy(worker)
  }

  stats (): PoolStats {
    return {
      warm: this.pool.available,
      busy: this.pool.borrowed,
      starting: this.pool.size - this.pool.available - this.pool.borrowed,
      waiting: this.pool.pending,
      zygotesAlive: this.zygotes.filter((zygote) => zygote?.isAlive === true).length,
      zygotes: this.zygotes.length,
      spawned: this.spawned,
      acquiredWarm: this.acquiredWarm,
      acquiredCold: this.acquiredCold,
      jailsStarted: this.jailsStarted,
      slots: this.slotStates(),
    }
  }

  private slotStates (): Record<string, number> {
    const total: Record<string, number> = {}
    for (const zygote of this.zygotes) {
      for (const [state, count] of Object.entries(zygote?.slotStates() ?? {})) total[state] = (total[state] ?? 0) + count
    }
    return total
  }

  /** Stop the zygotes (a run still going fails: the server waits for runs before it closes the pool). */
  async close (): Promise<void> {
    this.closing = true
    await Promise.all(this.zygotes.map((zygote) => zygote?.close()))
    await this.pool.drain()
    await this.pool.clear()
  }

  private async spawnWorker (): Promise<Worker> {
    try {
      const zygote = await this.zygoteWithFreeSlot()
      const started = performance.now()
      const worker = await zygote.spawnWorker()
      this.options.onSpawn?.(performance.now() - started)
      this.spawned++
      return worker
    } catch (error) {
      // generic-pool retries a failed create at once; without a pause a persistent failure would spin
      // in microtasks and starve the very event loop that could repair it
      await new Promise((resolve) => setTimeout(resolve, SPAWN_RETRY_DELAY_MS))
      throw error
    }
  }

  /**
   * A zygote that can fork now. Slots of finished workers become free a few ms after the run (once
   * the worker's pid namespace is gone); when none is free yet, wait for one rather than fail.
   */
  private async zygoteWithFreeSlot (): Promise<Zygote> {
    const deadline = Date.now() + SLOT_WAIT_MS
    for (;;) {
      const alive = this.zygotes.filter((zygote): zygote is Zygote => zygote?.isAlive === true)
      if (alive.length === 0) throw new Error('no zygote is running')
      const best = alive.filter((zygote) => zygote.freeSlots > 0).sort((a, b) => b.freeSlots - a.freeSlots)[0]
      if (best !== undefined) return best
      const remainingMs = deadline - Date.now()
      if (remainingMs <= 0) throw new Error('no worker slot became free in time')
      let timer: NodeJS.Timeout | undefined
      await Promise.race([
        Promise.any(alive.map((zygote) => zygote.waitForFreeSlot())),
        new Promise((resolve) => { timer = setTimeout(resolve, remainingMs) }),
      ]).catch(() => {})
      clearTimeout(timer)
    }
  }

  private supervise (zygote: Zygote, index: number, attempt = 0): void {
    zygote.exited.then(async () => {
      if (this.closing) return
      this.zygotes[index] = null
      const delayMs = RESTART_BACKOFF_MS[Math.min(attempt, RESTART_BACKOFF_MS.length - 1)] ?? 30_000
      this.options.log.error({ zygote: zygote.name, restartInMs: delayMs }, 'zygote exited; restarting')
      await new Promise((resolve) => setTimeout(resolve, delayMs).unref())
      if (this.closing) return
      try {
        this.jailsStarted++
        const next = await this.options.startZygote(index)
        if (this.closing) { await next.close(); return }
        this.zygotes[index] = next
        this.supervise(next, index, 0)
      } catch (error) {
        this.options.log.error({ err: error, zygote: zygote.name }, 'zygote restart failed')
        this.supervise(zygote, index, attempt + 1)
      }
    }, () => {})
  }
}
