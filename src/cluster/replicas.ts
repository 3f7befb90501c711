import type { Redis } from 'ioredis'
import { nanoid } from 'nanoid'

/**
 * Each replica beats into one sorted set in Redis (member: its id, score: the beat's time on Redis's
 * clock); a beat also drops the members that missed REPLICA_TTL_MS and answers how many are left. A
 * replica that stops (SIGTERM) leaves at once; one that dies without leaving (SIGKILL) is gone from every
 * view within REPLICA_TTL_MS. This is the cluster view /health and /metrics show.
 */
export const HEARTBEAT_MS = 1_000
/** three missed beats */
export const REPLICA_TTL_MS = 3 * HEARTBEAT_MS

const BEAT = `
local time = redis.call('TIME')
local now = tonumber(time[1]) * 1000 + math.floor(tonumber(time[2]) / 1000)
redis.call('ZADD', KEYS[1], now, ARGV[1])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - tonumber(ARGV[2]))
return redis.call('ZCARD', KEYS[1])
`

/** The sorted set of the replicas' beats: member the replica's id, score its last beat (Redis's clock, ms). */
export function replicasKey (prefix: string): string {
  return `${prefix}replicas`
}

type BeatScript = (key: string, replicaId: string, ttlMs: number) => Promise<number>

export interface ClusterView {
  replicaId: string
  /** replicas that beat within REPLICA_TTL_MS, this one included, as of the last beat (0 when it failed) */
  replicasAlive: number
  /** false while Redis does not answer this replica's beats */
  redisReachable: boolean
}

export class ReplicaRegistry {
  readonly replicaId = nanoid()
  #alive = 0
  #reachable = false
  #timer: NodeJS.Timeout | null = null
  readonly #beat: BeatScript

  constructor (private readonly redis: Redis, private readonly prefix: string) {
    if (!('wardenBeat' in redis)) redis.defineCommand('wardenBeat', { numberOfKeys: 1, lua: BEAT })
    this.#beat = (redis as unknown as { wardenBeat: BeatScript }).wardenBeat.bind(redis)
  }

  /** Register now, then beat every HEARTBEAT_MS until `leave`. */
  async join (): Promise<void> {
    await this.beat()
    this.#timer = setInterval(() => { this.beat().catch(() => {}) }, HEARTBEAT_MS)
    this.#timer.unref()
  }

  view (): ClusterView {
    return { replicaId: this.replicaId, replicasAlive: this.#alive, redisReachable: this.#reachable }
  }

  /** Stop beating and leave the set: the others stop counting this replica at once. */
  async leave (): Promise<void> {
    if (this.#timer !== null) clearInterval(this.#timer)
    this.#timer = null
    await this.redis.zrem(this.key, this.replicaId).catch(() => {})
  }

  private async beat (): Promise<void> {
    try {
      this.#alive = await this.#beat(this.key, this.replicaId, REPLICA_TTL_MS)
      this.#reachable = true
    } catch {
      // this replica cannot tell who is alive: it says so rather than repeat an old count
      this.#reachable = false
      this.#alive = 0
    }
  }

  private get key (): string {
    return replicasKey(this.prefix)
  }
}
