import { Redis } from 'ioredis'
import { WARDEN_ERRORS, WardenError } from '../errors.ts'

/**
 * The replicas' shared Redis (REDIS_URL). Tuned to fail fast, never to queue: with Redis away a request
 * gets 503 cluster_unavailable in a moment rather than waiting in ioredis's offline queue (which would hold
 * it until Redis came back, or forever), and the client keeps reconnecting in the background.
 */

const CONNECT_TIMEOUT_MS = 2_000
/** a command Redis does not answer in this long fails: a stopped Redis must not hang a request */
const COMMAND_TIMEOUT_MS = 2_000
const MAX_RECONNECT_DELAY_MS = 1_000

export async function connectRedis (url: string): Promise<Redis> {
  const redis = new Redis(url, {
    lazyConnect: true,
    enableOfflineQueue: false,
    maxRetriesPerRequest: 0,
    connectTimeout: CONNECT_TIMEOUT_MS,
    commandTimeout: COMMAND_TIMEOUT_MS,
    retryStrategy: (attempt) => Math.min(attempt * 100, MAX_RECONNECT_DELAY_MS),
  })
  // a lost connection is reported by the commands that fail on it; the client reconnects by itself
  redis.on('error', () => {})
  try {
    await redis.connect()
  } catch (error) {
    redis.disconnect()
    throw error
  }
  return redis
}

/** One step on Redis: any failure of Redis itself becomes cluster_unavailable (a 503), never a 500. */
export async function redisCall<T> (call: () => Promise<T>): Promise<T> {
  try {
    return await call()
  } catch (error) {
    if (error instanceof WardenError) throw error
    throw new WardenError(WARDEN_ERRORS.clusterUnavailable, 'The cluster\'s shared state (Redis) cannot be reached; retry in a moment.', {}, { cause: error })
  }
}
