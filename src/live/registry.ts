import { randomUUID } from 'node:crypto'
import type { Logger } from 'pino'
import { ownerKey, type Identity } from '../auth/identity.ts'
import type { LiveSettings } from '../config.ts'
import { WARDEN_ERRORS, WardenError } from '../errors.ts'
import type { Run, WorkerJob } from '../pool/run.ts'
import type { Worker } from '../pool/worker.ts'
import type { Flavor } from '../pool/worker-pool.ts'

/** What a live worker is for: a Jupyter kernel, a programmatic tool-calling run paused between rounds, or an Open WebUI user's terminal. */
export type LiveKind = 'kernel' | 'ptc' | 'terminal'
export type LiveEndReason = 'stopped' | 'expired' | 'died' | 'shutdown'

/** Where live workers come from: workers of the flavor asked for, outside the single-use pool's budget. */
export interface LiveWorkerSource { spawn (flavor: Flavor): Promise<Worker> }

/** Caps of one kind of live worker, inside the registry's overall budget. */
export interface KindCaps { max: number, maxPerUser: number }

export interface LiveStats {
  live: number
  max: number
  byKind: Record<string, number>
  created: number
  ended: Record<LiveEndReason, number>
}

const SWEEP_INTERVAL_MS = 1_000

/**
 * A worker that serves more than one request: it belongs to one owner (tenant, user), is reachable only
 * by that owner, runs one job at a time (`keep`), and expires when idle. Its process is the same isolated
 * worker an execution gets: same jail, uid, seccomp, namespaces and cgroup limits.
 */
export class LiveWorker {
  readonly id = randomUUID()
  readonly createdAt = Date.now()
  lastUsedAt = Date.now()
  private current: Run | null = null
  private endReason: LiveEndReason | null = null
  private readonly endListeners: Array<(reason: LiveEndReason) => void> = []

  constructor (readonly owner: Identity, readonly kind: LiveKind, private readonly worker: Worker, readonly idleTimeoutMs: number) {
    const exited = () => {
      const run = this.current
      // the zygote's report of the exit may come before the run has read what the worker wrote before it
      // exited (its output, its done frame): the run reads to its end first, then the worker ends
      if (run !== null && !run.isFinished) {
        run.done.finally(exited).catch(() => {})
        return
      }
      // a single-use worker exits after its run: that is its end, not a death
      this.end(run?.isFinished === true && !this.keeps ? 'stopped' : 'died')
    }
    worker.exited.then(exited, exited)
  }

  private keeps = true

  get isBusy (): boolean { return this.current !== null && !this.current.isFinished }
  get isAlive (): boolean { return this.endReason === null && this.worker.isAlive }
  get ended (): LiveEndReason | null { return this.endReason }
  get workerId (): string { return this.worker.id }

  /**
   * Run a job in this worker; its interpreter state (Python) and /mnt/data stay for the next one, unless
   * `last`: then the worker exits after this run (a tool-calling run lives across requests, but only once).
   */
  start (job: Omit<WorkerJob, 'keep' | 'owner'>, options: { last?: boolean } = {}): Run {
    if (!this.isAlive || !this.keeps) throw new WardenError(WARDEN_ERRORS.liveNotFound, 'This worker has ended.')
    this.keeps = options.last !== true
    // the worker is this live worker's owner's for its whole life: it refuses a job of anyone else
    const run = this.worker.start({ ...job, owner: ownerKey(this.owner), keep: this.keeps })
    this.current = run
    this.touch()
    run.done.finally(() => {
      if (!this.keeps) return this.end('stopped')
      if (this.current === run) this.current = null
      this.touch()
    }).catch(() => {})
    return run
  }

  /** SIGINT to the running code; the worker and its state stay. */
  interrupt (): void { this.worker.interrupt() }

  touch (): void { this.lastUsedAt = Date.now() }

  isIdleExpired (now: number): boolean {
    return !this.isBusy && now - this.lastUsedAt > this.idleTimeoutMs
  }

  /** Ends the worker and everything it runs. */
  end (reason: LiveEndReason): void {
    if (this.endReason !== null) return
    this.endReason = reason
    this.current?.kill(reason)
    this.worker.dispose()
    for (const listener of this.endListeners.splice(0)) listener(reason)
  }

  onEnd (listener: (reason: LiveEndReason) => void): void {
    if (this.endReason !== null) listener(this.endReason)
    else this.endListeners.push(listener)
  }
}

/**
 * The live workers of a server, in their own budget: at most `max` in all and `maxPerUser` per owner,
 * so idle kernels never take the single-use pool's workers. Expired and dead ones are removed by a sweep.
 */
export class LiveWorkers {
  private readonly workers = new Map<string, LiveWorker>()
  private reserved = 0
  /** reservations by kind and by kind and owner: `kind` and `kind\u0000tenant\u0000user` */
  private readonly reservedBy = new Map<string, number>()
  private created = 0
  private readonly endedCounts: Record<LiveEndReason, number> = { stopped: 0, expired: 0, died: 0, shutdown: 0 }
  private readonly sweeper: NodeJS.Timeout
  private closing = false
  private readonly listeners: Array<(event: 'created' | LiveEndReason, worker: LiveWorker) => void> = []

  constructor (private readonly source: LiveWorkerSource, private readonly settings: LiveSettings, private readonly log: Logger) {
    this.sweeper = setInterval(() => this.sweep(Date.now()), SWEEP_INTERVAL_MS)
    this.sweeper.unref()
  }

  /** Told of every worker created and ended (metrics). */
  onChange (listener: (event: 'created' | LiveEndReason, worker: LiveWorker) => void): void { this.listeners.push(listener) }

  /**
   * A new live worker of `kind` for `owner`, or a `WARDEN_LIVE_CAPACITY` error when the overall budget or
   * a cap of the kind (in all, or per owner) is reached.
   */
  async create (owner: Identity, kind: LiveKind, caps: KindCaps, options: { idleTimeoutMs?: number, flavor?: Flavor } = {}): Promise<LiveWorker> {
    if (this.closing) throw new WardenError(WARDEN_ERRORS.jailUnavailable, 'Warden is shutting down.')
    const keys = [kind, `${kind}\u0000${ownerKey(owner)}`]
    const [ofKind = 0, ofOwner = 0] = keys.map((key) => this.reservedBy.get(key) ?? 0)
    const noun = { kernel: 'kernels', ptc: 'paused tool-calling runs', terminal: 'terminals' }[kind]
    if (this.reserved >= this.settings.max || ofKind >= caps.max) {
      throw new WardenError(WARDEN_ERRORS.liveCapacity, `The server holds as many ${noun} as it may (${Math.min(this.settings.max, caps.max)}).`, { retryAfterSeconds: 10 })
    }
    if (ofOwner >= caps.maxPerUser) {
      throw new WardenError(WARDEN_ERRORS.liveCapacity, `This user already has ${ofOwner} ${noun}; the limit is ${caps.maxPerUser}.`, { retryAfterSeconds: 10 })
    }
    this.reserve(keys, 1)
    let worker: Worker
    try {
      worker = await this.source.spawn(options.flavor ?? 'data')
    } catch (error) {
      this.reserve(keys, -1)
      throw new WardenError(WARDEN_ERRORS.jailUnavailable, 'No worker could be started; see /health.', {}, { cause: error })
    }
    const live = new LiveWorker(owner, kind, worker, options.idleTimeoutMs ?? this.settings.idleTimeoutMs)
    this.workers.set(live.id, live)
    this.created++
    live.onEnd((reason) => {
      this.workers.delete(live.id)
      this.reserve(keys, -1)
      this.endedCounts[reason]++
      this.log.info({ live: live.id, kind, reason, ageMs: Date.now() - live.createdAt }, 'live worker ended')
      for (const listener of this.listeners) listener(reason, live)
    })
    this.log.info({ live: live.id, kind, worker: worker.id }, 'live worker created')
    for (const listener of this.listeners) listener('created', live)
    return live
  }

  /** The live worker with this id if it belongs to `owner`; anyone else gets null, as for an unknown id. */
  get (id: string, owner: Identity): LiveWorker | null {
    const live = this.workers.get(id)
    if (live === undefined || ownerKey(live.owner) !== ownerKey(owner) || !live.isAlive) return null
    return live
  }

  list (owner: Identity, kind?: LiveKind): LiveWorker[] {
    return [...this.workers.values()].filter((live) => ownerKey(live.owner) === ownerKey(owner) && live.isAlive && (kind === undefined || live.kind === kind))
  }

  stats (): LiveStats {
    const byKind: Record<string, number> = {}
    for (const live of this.workers.values()) byKind[live.kind] = (byKind[live.kind] ?? 0) + 1
    return { live: this.workers.size, max: this.settings.max, byKind, created: this.created, ended: { ...this.endedCounts } }
  }

  /** Ends every live worker (shutdown). */
  async close (): Promise<void> {
    this.closing = true
    clearInterval(this.sweeper)
    for (const live of [...this.workers.values()]) live.end('shutdown')
  }

  /** Idle workers past their expiry end; so do any whose process died, once their run read all it wrote. */
  sweep (now: number): void {
    for (const live of [...this.workers.values()]) {
      if (!live.isAlive && !live.isBusy) live.end('died')
      else if (live.isIdleExpired(now)) live.end('expired')
    }
  }

  private reserve (keys: string[], delta: 1 | -1): void {
    this.reserved += delta
    for (const key of keys) {
      const count = (this.reservedBy.get(key) ?? 0) + delta
      if (count <= 0) this.reservedBy.delete(key)
      else this.reservedBy.set(key, count)
    }
  }
}
