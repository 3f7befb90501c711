import { createServer, request as httpRequest, type IncomingMessage, type Server } from 'node:http'
import type { Duplex } from 'node:stream'

/** The proxy's response header naming the backend (its index in `backends`) that got the request. */
export const SERVED_BY_HEADER = 'x-test-served-by'
/** Set on the proxy's own 502, when the backend it chose did not answer: the load balancer's answer, not Warden's. */
export const PROXY_ERROR_HEADER = 'x-test-proxy-error'

/** Which backend a proxied request went to (its index in `backends`), with its method and path. */
export interface ProxiedRequest { replica: number, method: string, path: string }

/**
 * A load balancer without affinity, on a free loopback port: request n (an upgrade included) goes to
 * backend n mod N, given by its base URL. The cluster test puts it in front of its replicas; `npm run bench`
 * (bench/cluster.ts) measures through it. `served`, when given, records each request's backend in order.
 */
export async function startRoundRobinProxy (backends: string[], served?: ProxiedRequest[]): Promise<Server> {
  let next = 0
  const pick = (request: IncomingMessage) => {
    const replica = next++ % backends.length
    served?.push({ replica, method: request.method ?? 'GET', path: (request.url ?? '/').split('?')[0] ?? '/' })
    return { replica, target: new URL(backends[replica]!) }
  }
  const server = createServer((request, response) => {
    const { replica, target } = pick(request)
    const outgoing = httpRequest({ hostname: target.hostname, port: target.port, path: request.url, method: request.method, headers: request.headers }, (answer) => {
      response.writeHead(answer.statusCode ?? 502, { ...answer.headers, [SERVED_BY_HEADER]: String(replica) })
      // the head goes at once: a client learns which backend answers before the body, even one cut short
      response.flushHeaders()
      answer.pipe(response)
      // the backend died mid-body: the client's response is cut as the backend's was, never left hanging
      answer.once('close', () => { if (!answer.complete && !response.writableEnded) response.destroy() })
    })
    outgoing.once('error', () => {
      if (response.headersSent) {
        // a response already passed on whole is the client's; its connection may carry its next request
        if (!response.writableEnded) response.destroy()
        return
      }
      // a dead backend: a load balancer's 502, given once the client has sent its whole request (answering
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
    const { target } = pick(request)
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
  // does): with Node's 5 s the proxy could close one the instant the client reused it for a new request,
  // a reset no backend had part in (seen when the test's event loop stalled for a second)
  server.keepAliveTimeout = 0
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
  return server
}

/** The proxy's base URL (http://127.0.0.1:<port>). */
export function proxyUrl (server: Server): string {
  const address = server.address()
  return `http://127.0.0.1:${typeof address === 'object' && address !== null ? address.port : 0}`
}
