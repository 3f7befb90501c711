import type { TestContext } from 'node:test'
import { startRedis, type RunningRedis } from './redis.ts'
import { proxyUrl, startRoundRobinProxy, type ProxiedRequest } from './round-robin-proxy.ts'
import { startS3, s3Env, type RunningS3 } from './s3.ts'
import { startServer, type Driver, type RunningServer } from './server.ts'

/**
 * A cluster on loopback, as a deployment runs one: one Redis, one S3 bucket (s3rver), N real replicas
 * sharing both (and one API key and CLUSTER_SECRET), and a round-robin proxy in front that sends each
 * request (and each WebSocket upgrade) to the next replica, with no affinity at all. `proxy` looks like a
 * server to the clients' helpers (LibreChat's, Jupyter's); `served` records which replica got each request.
 */
export interface RunningCluster {
  redis: RunningRedis
  s3: RunningS3
  replicas: RunningServer[]
  proxy: RunningServer
  /** the replicas' REDIS_PREFIX: their keys in Redis start with it */
  prefix: string
  /** the replica index each proxied request went to, in order, with its method and path */
  served: ProxiedRequest[]
}

export { PROXY_ERROR_HEADER, SERVED_BY_HEADER } from './round-robin-proxy.ts'

export const CLUSTER_TEST_SECRET = 'cluster-test-secret-0123456789abcdefghij'

export async function startCluster (t: TestContext, options: { driver: Driver, replicas: number, env?: Record<string, string> }): Promise<RunningCluster> {
  const hooks = t as unknown as { after (fn: () => Promise<void>): void }
  const redis = await startRedis(hooks)
  const s3 = await startS3(hooks)
  const prefix = `c${Date.now()}:`
  const env = { ...s3Env(s3), REDIS_URL: redis.url, REDIS_PREFIX: prefix, CLUSTER_SECRET: CLUSTER_TEST_SECRET, ...options.env }
  const apiKey = `cluster-${Math.random().toString(36).slice(2)}`
  const replicas = await Promise.all(Array.from({ length: options.replicas }, async () => await startServer(t, { driver: options.driver, env, apiKey })))
  const served: RunningCluster['served'] = []
  const proxy = await startRoundRobinProxy(replicas.map((replica) => replica.baseUrl), served)
  t.after(async () => { await new Promise((resolve) => proxy.close(resolve)) })
  const baseUrl = proxyUrl(proxy)
  const first = replicas[0]!
  return { redis, s3, replicas, prefix, served, proxy: { ...first, baseUrl, apiUrl: `${baseUrl}/v1` } }
}
