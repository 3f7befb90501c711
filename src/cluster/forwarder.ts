import { request as httpRequest, type IncomingMessage } from 'node:http'
import { request as httpsRequest } from 'node:https'
import type { FastifyReply, FastifyRequest } from 'fastify'
import type { Logger } from 'pino'
import type { Identity } from '../auth/identity.ts'
import { FORWARD_PREFIX, signForward } from './forwarded.ts'
import type { LiveRoutes, RouteOwner, RoutedKind } from './live-routes.ts'
import { redisCall } from './redis.ts'

/** Counted on /metrics and /health: requests sent on to their owner, and requests for things no replica holds. */
export interface ForwardObserver {
  forwarded (kind: RoutedKind): void
  missed (kind: RoutedKind): void
}

export interface ForwardStats { forwarded: number, routingMisses: number }

/** Headers of the owner's answer the client gets; hop-by-hop ones and the owner's own framing stay behind. */
const ANSWER_HEADERS = ['content-type', 'retry-after']
/** Headers a WebSocket upgrade needs at the owner; the client's credentials (cookies, tokens) never go. */
const UPGRADE_HEADERS = ['sec-websocket-key', 'sec-websocket-version', 'sec-websocket-protocol', 'sec-websocket-extensions']

/**
 * Sends a request for a live thing another replica holds to that replica (LiveRoutes says which), as a
 * signed forward (cluster/forwarded.ts) acting for the identity this replica authenticated. `forward`
 * answers false where this replica must answer itself: the thing is here, no replica holds it, or its
 * holder does not answer (it died; its routes are about to expire). The caller then gives the contract's
 * answer for an unknown id, which is what a client of a dead kernel or an expired run gets.
 */
export class Forwarder {
  #forwarded = 0
  #misses = 0

  constructor (private readonly routes: LiveRoutes, private readonly secret: string, private readonly observer: ForwardObserver, private readonly log: Logger) {}

  stats (): ForwardStats {
    return { forwarded: this.#forwarded, routingMisses: this.#misses }
  }

  async forward (kind: RoutedKind, id: string, request: FastifyRequest, reply: FastifyReply, identity: Identity, body?: unknown): Promise<boolean> {
    const owner = await redisCall(async () => await this.routes.owner(kind, id))
    if (owner !== null && owner.replicaId === this.routes.replicaId) return false
    const sent = owner !== null && (request.ws
      ? await this.upgrade(owner, request, reply, identity)
      : await this.send(owner, request, reply, identity, body))
    if (sent) {
      this.#forwarded++
      this.observer.forwarded(kind)
    } else {
      this.#misses++
      this.observer.missed(kind)
    }
    return sent
  }

  private async send (owner: RouteOwner, request: FastifyRequest, reply: FastifyReply, identity: Identity, body: unknown): Promise<boolean> {
    const path = forwardPath(request)
    const payload = body === undefined || request.method === 'GET' || request.method === 'DELETE' ? undefined : JSON.stringify(body)
    const aborted = new AbortController()
    // the client went away: so does the forward, and the owner sees its request end as this one did
    const abandon = () => { if (!reply.raw.writableEnded) aborted.abort() }
    reply.raw.once('close', abandon)
    try {
      const answer = await fetch(new URL(path, owner.url), {
        method: request.method,
        headers: { ...signForward(this.secret, request.method, path, identity), ...(payload === undefined ? {} : { 'content-type': 'application/json' }) },
        body: payload,
        signal: aborted.signal,
      })
      const bytes = Buffer.from(await answer.arrayBuffer())
      for (const name of ANSWER_HEADERS) {
        const value = answer.headers.get(name)
        if (value !== null) reply.header(name, value)
      }
      await reply.code(answer.status).send(bytes)
      return true
    } catch (error) {
      if (aborted.signal.aborted) return true
      this.log.warn({ owner: owner.replicaId, err: error }, 'the owner of a live thing did not answer a forward')
      return false
    } finally {
      reply.raw.off('close', abandon)
    }
  }

  /** A WebSocket (a kernel's channels): the upgrade goes to the owner, then bytes flow both ways unread. */
  private async upgrade (owner: RouteOwner, request: FastifyRequest, reply: FastifyReply, identity: Identity): Promise<boolean> {
    const path = forwardPath(request)
    const target = new URL(owner.url)
    const headers: Record<string, string> = { connection: 'Upgrade', upgrade: 'websocket', ...signForward(this.secret, 'GET', path, identity) }
    for (const name of UPGRADE_HEADERS) {
      const value = request.headers[name]
      if (typeof value === 'string') headers[name] = value
    }
    const client = request.raw.socket
    return await new Promise<boolean>((resolve) => {
      const outgoing = (target.protocol === 'https:' ? httpsRequest : httpRequest)({ hostname: target.hostname, port: target.port, path, method: 'GET', headers })
      outgoing.once('upgrade', (answer: IncomingMessage, upstream, head: Buffer) => {
        reply.hijack()
        client.write(`HTTP/1.1 101 Switching Protocols\r\n${rawHeaderLines(answer)}\r\n`)
        if (head.length > 0) client.write(head)
        const close = () => { upstream.destroy(); client.destroy() }
        upstream.once('error', close).once('close', close)
        client.once('error', close).once('close', close)
        upstream.pipe(client)
        client.pipe(upstream)
        resolve(true)
      })
      // the owner refused the upgrade (a stranger's kernel: 404): the client gets that answer
      outgoing.once('response', (answer: IncomingMessage) => {
        const chunks: Buffer[] = []
        answer.on('data', (chunk: Buffer) => chunks.push(chunk))
        answer.once('end', () => {
          const type = answer.headers['content-type']
          if (type !== undefined) reply.header('content-type', type)
          reply.code(answer.statusCode ?? 502).send(Buffer.concat(chunks))
          resolve(true)
        })
        answer.once('error', () => resolve(false))
      })
      outgoing.once('error', (error) => {
        this.log.warn({ owner: owner.replicaId, err: error }, 'the owner of a live thing did not answer a forward')
        resolve(false)
      })
      outgoing.end()
    })
  }
}

/** The public path under the internal prefix, without a token in its query: credentials never travel. */
function forwardPath (request: FastifyRequest): string {
  const url = new URL(request.url, 'http://forward')
  url.searchParams.delete('token')
  return `${FORWARD_PREFIX}${url.pathname}${url.search}`
}

function rawHeaderLines (answer: IncomingMessage): string {
  let lines = ''
  for (let index = 0; index + 1 < answer.rawHeaders.length; index += 2) lines += `${answer.rawHeaders[index]}: ${answer.rawHeaders[index + 1]}\r\n`
  return lines
}
