import assert from 'node:assert/strict'
import { randomUUID } from 'node:crypto'
import { test } from 'node:test'
import { SignJWT } from 'jose'
import { createJwtVerifier, TokenError } from '../../src/auth/librechat-jwt.ts'
import { createSigningKey, mintToken, type SigningKey } from '../helpers/jwt.ts'

/**
 * Issue 9, findings 5 and 6. An `iat` in the future stretched the 300 s lifetime cap (iat = now + 1 year,
 * nbf = now, exp = now + 1 year was accepted), and a token whose `sub` was null (or not a string) acted
 * for the whole tenant: it read, listed and deleted every user's files. A token is refused, never widened.
 */

const CONFIG = { publicKeys: '', jwksUrl: null, issuer: 'librechat', audience: 'codeapi', maxLifetimeS: 300, clockSkewS: 30 }
const YEAR_S = 365 * 24 * 3600

async function verifierFor (key: SigningKey) {
  return await createJwtVerifier({ ...CONFIG, publicKeys: key.publicPem })
}

/** A LibreChat-shaped token whose claims are exactly `claims` (relative times already resolved). */
async function tokenWith (key: SigningKey, claims: Record<string, unknown>): Promise<string> {
  const now = Math.floor(Date.now() / 1000)
  return await new SignJWT({ iss: 'librechat', aud: 'codeapi', iat: now, nbf: now, exp: now + 300, jti: randomUUID(), tenant_id: 'legacy', ...claims })
    .setProtectedHeader({ alg: key.algorithm, typ: 'JWT' })
    .sign(key.privateKey)
}

test('a token issued a year in the future with nbf now and exp in a year is refused', async () => {
  const key = await createSigningKey()
  const verifier = await verifierFor(key)
  const token = await mintToken(key, { userId: 'user-1', issuedAtS: YEAR_S, notBeforeS: 0, expiresS: YEAR_S })
  await assert.rejects(verifier.verify(token), (error: unknown) => error instanceof TokenError && /issued in the future|lives longer/.test(error.message))
})

test('an iat in the future within the clock skew is accepted', async () => {
  const key = await createSigningKey()
  const verifier = await verifierFor(key)
  const token = await mintToken(key, { userId: 'user-1', issuedAtS: 20, notBeforeS: 0, expiresS: 250 })
  assert.deepEqual(await verifier.verify(token), { tenant: 'legacy', user: 'user-1' })
})

test('the lifetime counts from the later of iat and nbf: an old iat with exp far after nbf is refused', async () => {
  const key = await createSigningKey()
  const verifier = await verifierFor(key)
  const now = Math.floor(Date.now() / 1000)
  const token = await tokenWith(key, { sub: 'user-1', iat: now - 100, nbf: now - 10, exp: now + 295 })
  await assert.rejects(verifier.verify(token), /lives longer than 300 s/)
})

for (const sub of [null, 42, true, '', ['user-1'], { id: 'user-1' }, '*']) {
  test(`a token with sub ${JSON.stringify(sub)} is refused, not read as the whole tenant`, async () => {
    const key = await createSigningKey()
    const verifier = await verifierFor(key)
    const token = await tokenWith(key, { sub })
    await assert.rejects(verifier.verify(token), (error: unknown) => error instanceof TokenError && /sub/.test(error.message))
  })
}

test('a token without sub is refused', async () => {
  const key = await createSigningKey()
  const verifier = await verifierFor(key)
  await assert.rejects(verifier.verify(await tokenWith(key, {})), TokenError)
})
