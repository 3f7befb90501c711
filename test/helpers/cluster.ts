import { createServer, request as httpRequest, type IncomingMessage, type Server } from 'node:http'
import type { Duplex } from 'node:stream'
import type { TestContext } from 'node:test'
import { startRedis, type RunningRedis } from './redis.ts'
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
  served: Array<{ replica: number, method: string, path: string }>
}

/** The proxy's response header naming the replica (its index in `replicas`) that got the request. */
export const SERVED_BY_HEADER = 'x-test-served-by'
/** Set on the proxy's own 502, when the replica it chose did not answer: the load balancer's answer, not Warden's. */
export const PROXY_ERROR_HEADER = 'x-test-proxy-error'

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
  const proxy = await startRoundRobinProxy(replicas, served)
  t.after(async () => { await new Promise((resolve) => proxy.close(resolve)) })
  const address = proxy.address()
  const baseUrl = `http://127.0.0.1:${typeof address === 'object' && address !== null ? address.port : 0}`
  const first = replicas[0]!
  return { redis, s3, replicas, prefix, served, proxy: { ...first, baseUrl, apiUrl: `${baseUrl}/v1` } }
}

/** A load balancer without affinity: request n goes to replica n mod N, an upgrade included. */
async function startRoundRobinProxy (replicas: RunningServer[], served: RunningCluster['served']): Promise<Server> {
  let next = 0
  const pick = (request: IncomingMessage) => {
    const replica = next++ % replicas.length
    served.push({ replica, method: request.method ?? 'GET', path: (request.url ?? '/').split('?')[0] ?? '/' })
    return replica
  }
  const server = createServer((request, response) => {
    const replica = pick(request)
    const target = new URL(replicas[replica]!.baseUrl)
    const outgoing = httpRequest({ hostname: target.hostname, port: target.port, path: request.url, method: request.method, headers: request.headers }, (answer) => {
      response.writeHead(answer.statusCode ?? 502, { ...answer.headers, [SERVED_BY_HEADER]: String(replica) })
      // the head goes at once: a client learns which replica answers before the body, even one cut short
      response.flushHeaders()
      answer.pipe(response)
      // the replica died mid-body: the client's response is cut as the replica's was, never left hanging
      answer.once('close', () => { if (!answer.complete && !response.writableEnded) response.destroy() })
    })
    outgoing.once('error', () => {
      if (response.headersSent) {
        // a response already passed on whole is the client's; its connection may carry its next request
        if (!response.writableEnded) response.destroy()
        return
      }
      // a dead replica: a load balancer's 502, given once the client has sent its whole request (answering
      // earlier makes the client's upload fail with a reset instead of reading this answer)
      const answer = () => {
        if (response.headersSent || response.destroyed) return
        response.writeHead(502, { 'content-type': 'text/plain', [SERVED_BY_HEADER]: String(replica), [PROXY_ERROR_HEADER]: 'upstream' }).end('bad gateway: the replica did not answer')
      }
      request.unpipe(outgoing)
      if (request.readableEnded) answer()
      else request.once('end', answer).resume()
    })
    request.pipe(outgoing)
  })
  server.on('upgrade', (request: IncomingMessage, client: Duplex, head: Buffer) => {
    const target = new URL(replicas[pick(request)]!.baseUrl)
    const outgoing = httpRequest({ hostname: target.hostname, port: target.port, path: request.url, method: 'GET', headers: request.headers })
    outgoing.once('upgrade', (answer, upstream, upstreamHead) => {
      let lines = `HTTP/1.1 101 ${answer.statusMessage ?? 'Switching Protocols'}\r\n`
      for (let index = 0; index + 1 < answer.rawHeaders.length; index += 2) lines += `${answer.rawHeaders[index]}: ${answer.rawHeaders[index + 1]}\r\n`
      client.write(`${lines}\r\n`)
      if (upstreamHead.length > 0) client.write(upstreamHead)
      if (head.length > 0) upstream.write(head)
      const close = () => { upstream.destroy(); client.destroy() }
      upstream.once('error', close).once('close', close)
      client.once('error', close).once('close', close)
      upstream.pipe(client)
      client.pipe(upstream)
    })
    outgoing.once('response', (answer) => {
      client.write(`HTTP/1.1 ${answer.statusCode ?? 502} ${answer.statusMessage ?? ''}\r\nconnection: close\r\n\r\n`)
      client.end()
    })
    outgoing.once('error', () => client.destroy())
    outgoing.end()
  })
  // idle client connections stay open until the client closes them (as a load balancer's long idle timeout
  // does): with Node's 5 s the proxy could close one the instant the test's client reused it for a new
  // request, a reset no replica had part in (seen when the test's event loop stalled for a second)
  server.keepAliveTimeout = 0
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
  return server
}
