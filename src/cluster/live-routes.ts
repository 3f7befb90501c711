import { createHash } from 'node:crypto'
import type { Redis } from 'ioredis'
import { HEARTBEAT_MS, REPLICA_TTL_MS } from './replicas.ts'

/**
 * The routing table for live things: which replica holds a Jupyter kernel or a paused tool-calling run.
 * One key per live thing, `<prefix>route:<kind>:<id>` -> `<replicaId> <advertised url>`, written with a
 * time limit of REPLICA_TTL_MS and written again on every heartbeat while the thing lives here. So a
 * replica that stops draining removes its routes, and one that dies without draining has its routes gone
 * from Redis within REPLICA_TTL_MS (three missed beats), exactly when it leaves the replicas' view.
 * A continuation token is a capability: only its SHA-256 is a key, so Redis never holds one.
 */
export type RoutedKind = 'kernel' | 'ptc'

export interface RouteOwner {
  replicaId: string
  url: string
}

/** Compare-and-delete: a replica removes only its own route (a token's hash never moves, but be exact). */
const REMOVE = "if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end return 0"

export class LiveRoutes {
  readonly #held = new Map<string, RoutedKind>()
  #timer: NodeJS.Timeout | null = null
  #url = ''

  constructor (private readonly redis: Redis, private readonly prefix: string, readonly replicaId: string) {}

  /** Start advertising `url` and refreshing this replica's routes every heartbeat. */
  start (url: string): void {
    this.#url = url
    this.#timer = setInterval(() => { this.refresh().catch(() => {}) }, HEARTBEAT_MS)
    this.#timer.unref()
  }

  get isStarted (): boolean {
    return this.#url !== ''
  }

  get held (): number {
    return this.#held.size
  }

  /** This replica holds `id` now; settles once Redis has the route. Redis away: the next heartbeat writes it. */
  async add (kind: RoutedKind, id: string): Promise<void> {
    const key = this.key(kind, id)
    this.#held.set(key, kind)
    if (this.isStarted) await this.redis.set(key, this.value, 'PX', REPLICA_TTL_MS).catch(() => {})
  }

  remove (kind: RoutedKind, id: string): void {
    const key = this.key(kind, id)
    if (!this.#held.delete(key)) return
    this.redis.eval(REMOVE, 1, key, this.value).catch(() => {}) // Redis away: the route runs out by itself
  }

  /** Who holds `id`: null where no replica does (never held, ended, or its replica is gone). */
  async owner (kind: RoutedKind, id: string): Promise<RouteOwner | null> {
    const value = await this.redis.get(this.key(kind, id))
    if (value === null) return null
    const space = value.indexOf(' ')
    return space < 0 ? null : { replicaId: value.slice(0, space), url: value.slice(space + 1) }
  }

  /** Draining is over: stop refreshing and remove every route this replica wrote. */
  async clear (): Promise<void> {
    if (this.#timer !== null) clearInterval(this.#timer)
    this.#timer = null
    const keys = [...this.#held.keys()]
    this.#held.clear()
    if (keys.length > 0) await this.redis.del(...keys).catch(() => {})
  }

  private async refresh (): Promise<void> {
    if (this.#held.size === 0) return
    const batch = this.redis.pipeline()
    for (const key of this.#held.keys()) batch.set(key, this.value, 'PX', REPLICA_TTL_MS)
    await batch.exec()
  }

  private get value (): string {
    return `${this.replicaId} ${this.#url}`
  }

  private key (kind: RoutedKind, id: string): string {
    const name = kind === 'ptc' ? createHash('sha256').update(id).digest('hex') : id
    return `${this.prefix}route:${kind}:${name}`
  }
}
