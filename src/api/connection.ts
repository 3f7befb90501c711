import type { FastifyRequest } from 'fastify'

/**
 * Which answers close their connection instead of keeping it for the client's next request.
 *
 * LibreChat's server calls Warden through axios with a timeout (uploads, freshness probes, downloads;
 * spec §2.2 and §11), and axios's redirect layer, follow-redirects 1.x, leaves `socket.destroy` on the
 * socket's 'timeout' event when such a request ends (follow-redirects issue #278). Node 19+ keeps that
 * socket in the shared `http.globalAgent` with a 5 s idle timeout, and the agents SDK's node-fetch takes
 * it for the next execution: a run that prints nothing for 5 s is then cut by the client itself, which
 * LibreChat shows as "Code execution is temporarily unavailable. Please retry." (found by
 * `npm run test:host`: a C++ compile under emulation). Closing the connection after every answer to such
 * a call keeps the marked socket out of the pool; the next request pays one TCP handshake for it.
 */

/** The file routes only LibreChat's server calls, all through axios with a timeout. */
const AXIOS_ROUTES = new Set(['/upload', '/upload/batch', '/download/:session_id/:file_id', '/sessions/:session_id/objects/:file_id'])
/** What axios sends as `Accept` unless told otherwise: any other route LibreChat's server reaches with it. */
const AXIOS_ACCEPT = 'application/json, text/plain, */*'

export function closesConnection (request: FastifyRequest): boolean {
  // only once the whole request was read: an answer given earlier (a refused upload) that closed the
  // connection would reach the client as a reset while it is still sending, not as the answer
  if (!request.raw.complete) return false
  const route = (request.routeOptions.url ?? '').replace(/^\/v1(?=\/)/, '')
  return AXIOS_ROUTES.has(route) || request.headers.accept === AXIOS_ACCEPT
}

/**
 * An answer given before its request was read (a JSON body over `MAX_BODY_MB`, refused by Fastify's
 * parser, which marks it `Connection: close` because the client may send more) must not close the
 * connection at once: the client is still sending, the kernel answers its next bytes with a reset, and
 * that reset reaches the client before the answer (undici: `fetch failed`, EPIPE; 13 of 20 bodies of
 * 2 MiB against MAX_BODY_MB=1 on the 2-core VM). So the connection stays, and the rest of the body is
 * read and dropped, at most `maxBytes` of it (the largest body any route accepts); a client that sends
 * more, or declares more, is cut off. True when it drains (the caller then drops `Connection: close`).
 */
export function drainUnreadBody (request: FastifyRequest, maxBytes: number): boolean {
  const raw = request.raw
  if (raw.complete) return false
  const declaredBytes = Number(raw.headers['content-length'])
  if (Number.isFinite(declaredBytes) && declaredBytes > maxBytes) return false
  let drainedBytes = 0
  raw.on('data', (chunk: Buffer) => {
    drainedBytes += chunk.length
    if (drainedBytes > maxBytes) raw.socket.destroy()
  })
  raw.resume()
  return true
}
