import type { Redis } from 'ioredis'
import { nanoid } from 'nanoid'
import { WARDEN_ERRORS, WardenError } from '../errors.ts'
import type { FileOwner } from '../storage/file-store.ts'
import { isId } from '../storage/ids.ts'
import {
  applyDelta, fileTable, isNoChange, parseManifest,
  type Workspace, type WorkspaceDelta, type WorkspaceKind, type WorkspaceLimits, type Workspaces,
} from '../storage/workspaces.ts'
import { redisCall } from './redis.ts'

/**
 * Workspace manifests in Redis, so a runtime session continues on whichever replica the next call lands
 * on. The bytes stay stored files (in the shared bucket); Redis holds only the manifests:
 *   <prefix>ws:<id>                        the manifest (JSON)
 *   <prefix>ws-used                        sorted set: id -> last use (epoch ms), for LRU and the sweep
 *   <prefix>ws-owner:<tenant>\0<user>:<kind>  set of the owner's ids
 * A change is read-modify-write under a lock in Redis (SET NX with a token and a time limit), so two
 * replicas applying runs of one session never lose one's delta; in one replica changes queue in memory
 * first, so a replica never contends with itself.
 */

/** a lock whose holder died frees itself after this long; a change holds it for a few round trips */
const LOCK_MS = 10_000
/** how long a change waits for another replica's change of the same workspace */
const LOCK_WAIT_MS = 10_000
const LOCK_RETRY_MS = 15

const RELEASE = "if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end return 0"

export class SharedWorkspaceStore implements Workspaces {
  private readonly queues = new Map<string, Promise<unknown>>()

  constructor (private readonly redis: Redis, private readonly prefix: string) {}

  async get (id: string, owner: FileOwner): Promise<Workspace | null> {
    await this.queues.get(id)
    const workspace = await this.read(id)
    return workspace !== null && sameOwner(workspace.owner, owner) ? workspace : null
  }

  async apply (id: string, kind: WorkspaceKind, owner: FileOwner, delta: WorkspaceDelta, limits: WorkspaceLimits): Promise<string[]> {
    return await this.exclusive(id, async () => {
      const now = Date.now()
      const current = await this.read(id)
      if (current !== null && !sameOwner(current.owner, owner)) throw new Error('a workspace id collided across owners')
      if (current !== null && isNoChange(current, delta)) {
        await redisCall(() => this.redis.zadd(this.key('ws-used'), now, id))
        return []
      }
      const { files, dropped } = applyDelta(current?.files ?? fileTable(), delta, limits)
      const manifest = { id, kind, owner, files, createdAt: current?.createdAt ?? new Date(now).toISOString() }
      await redisCall(() => this.redis.multi()
        .set(this.key(`ws:${id}`), JSON.stringify(manifest))
        .zadd(this.key('ws-used'), now, id)
        .sadd(this.ownerKey(owner, kind), id)
        .exec())
      return dropped
    })
  }

  async delete (id: string): Promise<void> {
    await this.exclusive(id, async () => {
      const current = await this.read(id)
      const removal = this.redis.multi().del(this.key(`ws:${id}`)).zrem(this.key('ws-used'), id)
      if (current !== null) removal.srem(this.ownerKey(current.owner, current.kind), id)
      await redisCall(() => removal.exec())
    })
  }

  async listOwned (owner: FileOwner, kind: WorkspaceKind): Promise<Workspace[]> {
    const ids = await redisCall(() => this.redis.smembers(this.ownerKey(owner, kind)))
    const workspaces = await Promise.all(ids.map(async (id) => await this.read(id)))
    return workspaces.filter((workspace): workspace is Workspace => workspace !== null && workspace.kind === kind && sameOwner(workspace.owner, owner))
      .sort((a, b) => a.lastUsedAt.localeCompare(b.lastUsedAt))
  }

  async sweep (ttlMs: number, now = Date.now()): Promise<number> {
    const expired = await redisCall(() => this.redis.zrangebyscore(this.key('ws-used'), '-inf', `(${now - ttlMs}`))
    for (const id of expired) await this.delete(id)
    return expired.length
  }

  private async read (id: string): Promise<Workspace | null> {
    if (!isId(id)) return null
    const [text, usedMs] = await redisCall(() => Promise.all([this.redis.get(this.key(`ws:${id}`)), this.redis.zscore(this.key('ws-used'), id)]))
    return text === null || usedMs === null ? null : parseManifest(text, id, Number(usedMs))
  }

  /** Changes to one workspace, one at a time: queued in this replica, then under the lock in Redis. */
  private async exclusive<T> (id: string, change: () => Promise<T>): Promise<T> {
    const locked = async () => await this.underLock(id, change)
    const previous = this.queues.get(id) ?? Promise.resolve()
    const next = previous.then(locked, locked)
    const settled = next.catch(() => {})
    this.queues.set(id, settled)
    settled.then(() => { if (this.queues.get(id) === settled) this.queues.delete(id) }, () => {})
    return await next
  }

  private async underLock<T> (id: string, change: () => Promise<T>): Promise<T> {
    const lock = this.key(`ws-lock:${id}`)
    const token = nanoid()
    const deadline = Date.now() + LOCK_WAIT_MS
    while (await redisCall(() => this.redis.set(lock, token, 'PX', LOCK_MS, 'NX')) !== 'OK') {
      if (Date.now() > deadline) {
        throw new WardenError(WARDEN_ERRORS.clusterUnavailable, 'Another replica holds this session\'s files too long; retry in a moment.')
      }
      await new Promise((resolve) => setTimeout(resolve, LOCK_RETRY_MS))
    }
    try {
      return await change()
    } finally {
      await this.redis.eval(RELEASE, 1, lock, token).catch(() => {}) // Redis away: the lock runs out by itself
    }
  }

  private key (name: string): string {
    return `${this.prefix}${name}`
  }

  private ownerKey (owner: FileOwner, kind: WorkspaceKind): string {
    return this.key(`ws-owner:${owner.tenant}\u0000${owner.user}:${kind}`)
  }
}

function sameOwner (a: FileOwner, b: FileOwner): boolean {
  return a.tenant === b.tenant && a.user === b.user
}
