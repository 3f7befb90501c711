import type { FastifyRequest } from 'fastify'
import { identityFromHints, type Identity } from '../auth/identity.ts'

/**
 * The identity a request acts for: the JWT's, or else the user LibreChat names, first in the `User-Id`
 * header, then in `hints` (body `user_id`, the `?kind=user&id=` query, the upload's `id` field).
 */
export function requestIdentity (request: FastifyRequest, ...hints: unknown[]): Identity {
  return request.principal?.identity ?? identityFromHints(request.headers['user-id'], ...hints)
}

/** LibreChat scopes file routes with `?kind=user&id=<user>` (spec §3.6): the id names the user then. */
export function userFromScope (query: { kind?: string, id?: string }): string | undefined {
  return query.kind === 'user' ? query.id : undefined
}
