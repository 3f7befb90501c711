import type { IncomingHttpHeaders } from 'node:http'
import type { AuthConfig, AuthMethod } from '../config.ts'
import { errors } from '../errors.ts'
import { createApiKeyCheck } from './api-key.ts'
import type { Identity } from './identity.ts'
import { createJwtVerifier, TokenError } from './librechat-jwt.ts'

/**
 * How a request proved itself; `identity` is set when the credential itself names the user (a JWT), or
 * when another replica forwarded the request for the identity it authenticated (`forwarded`).
 */
export interface Principal {
  method: AuthMethod | 'forwarded'
  identity: Identity | null
}

export type Authenticate = (headers: IncomingHttpHeaders) => Promise<Principal>

/**
 * Accepts what every LibreChat generation sends (spec §2): `X-API-Key` (older versions and API-key
 * deployments), `Authorization: Bearer <JWT>` (current versions), or nothing when AUTH includes none.
 * A credential that is present is always checked, even when `none` would let the request in.
 */
export async function createAuthenticator (auth: AuthConfig): Promise<Authenticate> {
  const isValidKey = createApiKeyCheck(auth.apiKeys)
  const jwt = auth.jwt === null ? null : await createJwtVerifier(auth.jwt)
  const accepts = (method: AuthMethod) => auth.methods.includes(method)
  return async (headers) => {
    const bearer = /^Bearer\s+(\S+)$/i.exec(headers.authorization ?? '')?.[1]
    const apiKey = headers['x-api-key']
    if (bearer !== undefined && jwt !== null) {
      try {
        return { method: 'jwt', identity: await jwt.verify(bearer) }
      } catch (error) {
        throw errors.unauthorized(`The LibreChat token was refused: ${error instanceof TokenError ? error.message : 'not acceptable'}.`)
      }
    }
    if (apiKey !== undefined && accepts('api-key')) {
      if (isValidKey(apiKey)) return { method: 'api-key', identity: null }
      throw errors.unauthorized('The API key in X-API-Key is not valid.')
    }
    if (accepts('none')) return { method: 'none', identity: null }
    throw errors.unauthorized(`Authentication is required: ${[
      ...(accepts('api-key') ? ['an API key in X-API-Key'] : []),
      ...(accepts('jwt') ? ['a LibreChat token in Authorization: Bearer'] : []),
    ].join(' or ')}.`)
  }
}
