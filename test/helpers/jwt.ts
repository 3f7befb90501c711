import { randomUUID } from 'node:crypto'
import { exportSPKI, generateKeyPair, SignJWT, type CryptoKey } from 'jose'

/**
 * LibreChat's per-user Code API tokens (spec §2.2, `mintCodeApiToken`), minted the way LibreChat mints
 * them: EdDSA over Ed25519 by default or RS256, `kid` lc-codeapi-2026-05, `iss` librechat, `aud` codeapi,
 * `sub` the user, `tenant_id`, `role`, `principal_source`, a `jti`, and at most 300 s between `iat` and
 * `exp`. Options bend one claim at a time, so a test can show which rule refused a token.
 */

export type SigningAlgorithm = 'EdDSA' | 'RS256'

/** LibreChat's default `kid` (spec §2.2). */
export const LIBRECHAT_KID = 'lc-codeapi-2026-05'

export interface SigningKey {
  algorithm: SigningAlgorithm
  privateKey: CryptoKey
  /** the public key as SPKI PEM: what Warden's JWT_PUBLIC_KEYS takes */
  publicPem: string
}

/** A fresh key pair as LibreChat's operator would generate it (Ed25519, or RSA 2048 for RS256). */
export async function createSigningKey (algorithm: SigningAlgorithm = 'EdDSA'): Promise<SigningKey> {
  const { privateKey, publicKey } = algorithm === 'EdDSA'
    ? await generateKeyPair('EdDSA', { crv: 'Ed25519', extractable: true })
    : await generateKeyPair('RS256', { modulusLength: 2048, extractable: true })
  return { algorithm, privateKey, publicPem: await exportSPKI(publicKey) }
}

export interface TokenOptions {
  /** the LibreChat user id (`sub`) */
  userId: string
  /** LibreChat's default is `legacy` */
  tenantId?: string
  issuer?: string
  audience?: string
  /** seconds relative to now; `issuedAtS` defaults to 0 (now) */
  issuedAtS?: number
  /** seconds relative to now; defaults to `issuedAtS` */
  notBeforeS?: number
  /** seconds relative to now; defaults to `issuedAtS` + 300, LibreChat's longest lifetime */
  expiresS?: number
  kid?: string
  /** extra or replaced claims */
  claims?: Record<string, unknown>
}

/** `Authorization: Bearer …` for a token. */
export function bearer (token: string): { Authorization: string } {
  return { Authorization: `Bearer ${token}` }
}

/** A token signed with `key`, as LibreChat's `mintCodeApiToken` builds it. */
export async function mintToken (key: SigningKey, options: TokenOptions): Promise<string> {
  const now = Math.floor(Date.now() / 1000)
  const issuedAt = now + (options.issuedAtS ?? 0)
  const notBefore = now + (options.notBeforeS ?? options.issuedAtS ?? 0)
  const expires = now + (options.expiresS ?? (options.issuedAtS ?? 0) + 300)
  return await new SignJWT({
    tenant_id: options.tenantId ?? 'legacy',
    role: 'USER',
    principal_source: 'librechat_jwt',
    ...options.claims,
  })
    .setProtectedHeader({ alg: key.algorithm, kid: options.kid ?? LIBRECHAT_KID, typ: 'JWT' })
    .setIssuer(options.issuer ?? 'librechat')
    .setAudience(options.audience ?? 'codeapi')
    .setSubject(options.userId)
    .setIssuedAt(issuedAt)
    .setNotBefore(notBefore)
    .setExpirationTime(expires)
    .setJti(randomUUID())
    .sign(key.privateKey)
}

function base64url (value: unknown): string {
  return Buffer.from(JSON.stringify(value)).toString('base64url')
}

/**
 * An unsigned token (`alg: none`, empty signature: `header.payload.`) with otherwise valid claims:
 * the classic forgery a verifier must refuse.
 */
export function unsignedToken (options: Pick<TokenOptions, 'userId' | 'tenantId'>): string {
  const now = Math.floor(Date.now() / 1000)
  const header = { alg: 'none', typ: 'JWT', kid: LIBRECHAT_KID }
  const payload = {
    iss: 'librechat',
    aud: 'codeapi',
    sub: options.userId,
    iat: now,
    nbf: now,
    exp: now + 300,
    jti: randomUUID(),
    tenant_id: options.tenantId ?? 'legacy',
    role: 'USER',
    principal_source: 'librechat_jwt',
  }
  return `${base64url(header)}.${base64url(payload)}.`
}

/** Not a JWT at all. */
export const GARBAGE_TOKEN = 'not-a-jwt.%%%.garbage'

export type BadTokenKind =
  | 'expired'
  | 'not yet valid'
  | 'wrong audience'
  | 'wrong issuer'
  | 'lives too long'
  | 'signed by another key'
  | 'alg none'
  | 'garbage'

/**
 * A token Warden must refuse, for each way a token can be wrong. `key` is the key Warden trusts; the
 * claims are valid except for the one the kind names, and the clock errors are well past the 30 s skew.
 */
export async function badToken (kind: BadTokenKind, key: SigningKey, userId: string): Promise<string> {
  switch (kind) {
    case 'expired':
      return await mintToken(key, { userId, issuedAtS: -250, expiresS: -120 })
    case 'not yet valid':
      return await mintToken(key, { userId, issuedAtS: 0, notBeforeS: 120, expiresS: 240 })
    case 'wrong audience':
      return await mintToken(key, { userId, audience: 'some-other-api' })
    case 'wrong issuer':
      return await mintToken(key, { userId, issuer: 'not-librechat' })
    case 'lives too long':
      return await mintToken(key, { userId, expiresS: 3600 })
    case 'signed by another key':
      return await mintToken(await createSigningKey(key.algorithm), { userId })
    case 'alg none':
      return unsignedToken({ userId })
    case 'garbage':
      return GARBAGE_TOKEN
  }
}
