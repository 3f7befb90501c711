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
