import { createPublicKey, type KeyObject } from 'node:crypto'
import { readdir, readFile, stat } from 'node:fs/promises'
import path from 'node:path'
import { createRemoteJWKSet, decodeProtectedHeader, errors as joseErrors, jwtVerify, type JWTPayload, type JWTVerifyGetKey } from 'jose'
import type { AuthConfig } from '../config.ts'
import { DEFAULT_TENANT, isUserId, type Identity } from './identity.ts'

type JwtConfig = NonNullable<AuthConfig['jwt']>

export class TokenError extends Error {
  override name = 'TokenError'
}

export interface JwtVerifier {
  /** The identity a valid LibreChat token names; throws TokenError with the reason otherwise. */
  verify (token: string): Promise<Identity>
  readonly keyCount: number
}

/** LibreChat signs with Ed25519 (EdDSA, its default) or RSA (RS256): spec §2.2. */
const ALGORITHM_FOR_KEY: Record<string, string> = { ed25519: 'EdDSA', rsa: 'RS256' }

/**
 * Verifies the short-lived per-user tokens LibreChat mints for the Code Interpreter API: a known key,
 * `iss` and `aud` as configured, `exp` and `nbf` present and current (within the clock skew), and a
 * lifetime of at most `maxLifetimeS`. `alg: none` and any algorithm other than the key's are refused.
 */
export async function createJwtVerifier (config: JwtConfig): Promise<JwtVerifier> {
  const keys = config.publicKeys === null ? [] : await loadPublicKeys(config.publicKeys)
  const remote = config.jwksUrl === null ? null : createRemoteJWKSet(new URL(config.jwksUrl))
  if (keys.length === 0 && remote === null) throw new Error('JWT_PUBLIC_KEYS holds no public key')
  const options = {
    issuer: config.issuer,
    audience: config.audience,
    clockTolerance: config.clockSkewS,
    requiredClaims: ['exp', 'nbf', 'sub'],
  }
  const attemptsFor = (algorithm: string): Array<(token: string) => Promise<JWTPayload>> => [
    // only keys of the token's own algorithm: an Ed25519 key says nothing about an RS256 token
    ...keys.filter((key) => key.algorithm === algorithm).map(({ key }) => async (token: string) =>
      (await jwtVerify(token, key, { ...options, algorithms: [algorithm] })).payload),
    ...(remote === null ? [] : [async (token: string) => (await jwtVerify(token, remote as JWTVerifyGetKey, { ...options, algorithms: ['EdDSA', 'RS256'] })).payload]),
  ]
  return {
    keyCount: keys.length,
    verify: async (token) => {
      let algorithm: unknown
      try {
        algorithm = decodeProtectedHeader(token).alg
      } catch {
        throw new TokenError('the token is malformed')
      }
      if (algorithm !== 'EdDSA' && algorithm !== 'RS256') throw new TokenError(`the token's algorithm ${String(algorithm)} is not allowed (EdDSA or RS256)`)
      const attempts = attemptsFor(algorithm)
      if (attempts.length === 0) throw new TokenError(`no ${algorithm} key is configured`)
      let lastError: unknown = null
      for (const attempt of attempts) {
        try {
          return identityOf(await attempt(token), config)
        } catch (error) {
          lastError = error
          // a signature made by another key: try the next; any other failure is final
          if (!(error instanceof joseErrors.JWSSignatureVerificationFailed)) break
        }
      }
      throw new TokenError(describe(lastError))
    },
  }
}

/**
 * The identity a verified token names. A claim that would widen the token is refused, never read
 * generously: an `iat` in the future would stretch the lifetime cap, and a `sub` that is not a user id
 * would act for the whole tenant (both found by an outside attack run).
 */
function identityOf (payload: JWTPayload, config: JwtConfig): Identity {
  const nowS = Math.floor(Date.now() / 1000)
  if (typeof payload.iat === 'number' && payload.iat > nowS + config.clockSkewS) {
    throw new TokenError('the token was issued in the future')
  }
  // the lifetime runs from the later of iat and nbf: the token is usable from then until exp
  const usableFrom = Math.max(typeof payload.iat === 'number' ? payload.iat : -Infinity, payload.nbf as number)
  if ((payload.exp as number) - usableFrom > config.maxLifetimeS) {
    throw new TokenError(`the token lives longer than ${config.maxLifetimeS} s`)
  }
  if (typeof payload.sub !== 'string' || !isUserId(payload.sub)) {
    throw new TokenError('the token\'s sub claim does not name a user')
  }
  const tenant = typeof payload.tenant_id === 'string' && payload.tenant_id !== '' ? payload.tenant_id : DEFAULT_TENANT
  return { tenant, user: payload.sub }
}

function describe (error: unknown): string {
  if (error instanceof TokenError) return error.message
  if (error instanceof joseErrors.JWTExpired) return 'the token has expired'
  if (error instanceof joseErrors.JWTClaimValidationFailed) return `the token's ${error.claim} claim is not acceptable`
  if (error instanceof joseErrors.JWSSignatureVerificationFailed) return 'the token is not signed by a known key'
  if (error instanceof joseErrors.JOSEAlgNotAllowed) return 'the token\'s algorithm is not allowed'
  return 'the token is malformed or not acceptable'
}

interface PublicKey { key: KeyObject, algorithm: string }

/** PEM text (one or more keys), a PEM file, or a directory of PEM files. */
export async function loadPublicKeys (source: string): Promise<PublicKey[]> {
  const texts = source.includes('-----BEGIN')
    ? [source]
    : (await stat(source)).isDirectory()
        ? await Promise.all((await readdir(source)).filter((name) => !name.startsWith('.')).sort().map((name) => readFile(path.join(source, name), 'utf8')))
        : [await readFile(source, 'utf8')]
  const pems = texts.flatMap((text) => text.match(/-----BEGIN [A-Z ]+-----[\s\S]+?-----END [A-Z ]+-----/g) ?? [])
  return pems.map((pem) => {
    const key = createPublicKey(pem)
    const algorithm = ALGORITHM_FOR_KEY[key.asymmetricKeyType ?? '']
    if (algorithm === undefined) throw new Error(`unsupported JWT public key type ${key.asymmetricKeyType}; use Ed25519 or RSA`)
    return { key, algorithm }
  })
}
