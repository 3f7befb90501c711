import type { Redis } from 'ioredis'
import { nanoid } from 'nanoid'
import type { Identity } from '../auth/identity.ts'
import type { Admission } from '../exec/admission.ts'
import { WARDEN_ERRORS, WardenError } from '../errors.ts'
import { redisCall } from './redis.ts'
import { REPLICA_TTL_MS, replicasKey } from './replicas.ts'

/**
 * MAX_CONCURRENT_PER_USER across every replica: one sorted set per user in Redis, a member per running
 * execution (a lease, `<replicaId> <nanoid>`), scored by when the lease runs out. Counting in and out is
 * one script, so two replicas admitting the same user at once cannot both take the last place. A replica
 * killed without counting its executions out must not hold the user's places until its leases run out
 * (the longest execution plus a minute): counting in also drops the leases of replicas that left the
 * replicas' view (no beat within REPLICA_TTL_MS, cluster/replicas.ts), so they come back within seconds,
 * when the replica's routes go. The lease's time limit stays as the last resort. Redis's clock is the one
 * that decides, so replicas' clocks need not agree.
 */
const ENTER = `
local time = redis.call('TIME')
local now = tonumber(time[1]) * 1000 + math.floor(tonumber(time[2]) / 1000)
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
for _, lease in ipairs(redis.call('ZRANGE', KEYS[1], 0, -1)) do
  local replica = string.match(lease, '^(%S+) ')
  if replica ~= ARGV[4] then
    local beat = replica and redis.call('ZSCORE', KEYS[2], replica)
    if not beat or tonumber(beat) < now - tonumber(ARGV[5]) then redis.call('ZREM', KEYS[1], lease) end
  end
end
local count = redis.call('ZCARD', KEYS[1])
if count >= tonumber(ARGV[1]) then return -count end
redis.call('ZADD', KEYS[1], now + tonumber(ARGV[2]), ARGV[3])
redis.call('PEXPIRE', KEYS[1], ARGV[2])
return count + 1
`

type EnterScript = (key: string, replicasKey: string, limit: number, leaseMs: number, lease: string, replicaId: string, replicaTtlMs: number) => Promise<number>

export class SharedUserConcurrency implements Admission {
  readonly #enter: EnterScript

  /** `replicaId`: this replica's id in the replicas' view (ReplicaRegistry), which its leases carry */
  constructor (private readonly redis: Redis, private readonly prefix: string, private readonly limit: number, private readonly leaseMs: number, private readonly replicaId: string) {
    if (!('wardenEnter' in redis)) redis.defineCommand('wardenEnter', { numberOfKeys: 2, lua: ENTER })
    const command = (redis as unknown as { wardenEnter: EnterScript }).wardenEnter.bind(redis)
    this.#enter = command
  }

  async enter (identity: Identity): Promise<() => void> {
    if (this.limit === 0 || identity.user === null) return () => {}
    const key = `${this.prefix}busy:${identity.tenant}\u0000${identity.user}`
    const lease = `${this.replicaId} ${nanoid()}`
    const answer = await redisCall(() => this.#enter(key, replicasKey(this.prefix), this.limit, this.leaseMs, lease, this.replicaId, REPLICA_TTL_MS))
    if (answer < 0) {
      throw new WardenError(WARDEN_ERRORS.userBusy, `This user already has ${-answer} executions running (the limit is ${this.limit}).`,
        { retryAfterSeconds: 1 })
    }
    let left = false
    return () => {
      if (left) return
      left = true
      // Redis away: the lease runs out by itself
      this.redis.zrem(key, lease).catch(() => {})
    }
  }
}
