import { createServer, request as httpRequest, type IncomingMessage, type Server } from 'node:http'
import type { Duplex } from 'node:stream'

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
    return new URL(backends[replica]!)
  }
  const server = createServer((request, response) => {
    const target = pick(request)
    const outgoing = httpRequest({ hostname: target.hostname, port: target.port, path: request.url, method: request.method, headers: request.headers }, (answer) => {
      response.writeHead(answer.statusCode ?? 502, answer.headers)
      answer.pipe(response)
    })
    outgoing.once('error', () => { if (!response.headersSent) response.writeHead(502).end(); else response.destroy() })
    request.pipe(outgoing)
  })
  server.on('upgrade', (request: IncomingMessage, client: Duplex, head: Buffer) => {
    const target = pick(request)
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
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
  return server
}

/** The proxy's base URL (http://127.0.0.1:<port>). */
export function proxyUrl (server: Server): string {
  const address = server.address()
  return `http://127.0.0.1:${typeof address === 'object' && address !== null ? address.port : 0}`
}
