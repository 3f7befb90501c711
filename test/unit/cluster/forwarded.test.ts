import assert from 'node:assert/strict'
import type { IncomingMessage } from 'node:http'
import { test } from 'node:test'
import { FORWARD_PREFIX, forwardedIdentity, signForward, verifyingRewrite } from '../../../src/cluster/forwarded.ts'

const SECRET = 'unit-test-cluster-secret-0123456789abcdef'
const ALICE = { tenant: 'default', user: 'alice' }
const PATH = `${FORWARD_PREFIX}/v1/exec/programmatic`

function raw (url: string, headers: Record<string, string>, method = 'POST'): IncomingMessage {
  return { url, method, headers } as unknown as IncomingMessage
}

test('a forward signed with the secret is served at its public path for the identity it carries', () => {
  const request = raw(PATH, signForward(SECRET, 'POST', PATH, ALICE))
  assert.equal(verifyingRewrite(SECRET)(request), '/v1/exec/programmatic')
  assert.deepEqual(forwardedIdentity(request), ALICE)
})

test('a forward with another secret, another method, path or identity, an old time or no signature is routed nowhere', () => {
  const rewrite = verifyingRewrite(SECRET)
  const signed = signForward(SECRET, 'POST', PATH, ALICE)
  const bob = Buffer.from(JSON.stringify({ tenant: 'default', user: 'bob' })).toString('base64url')
  const cases: Array<[string, IncomingMessage]> = [
    ['another secret', raw(PATH, signForward(`${SECRET}x`, 'POST', PATH, ALICE))],
    ['another method', raw(PATH, signed, 'DELETE')],
    ['another path', raw(`${FORWARD_PREFIX}/v1/exec`, signed)],
    ['another identity', raw(PATH, { ...signed, 'x-warden-forwarded-identity': bob })],
    ['an old time', raw(PATH, signForward(SECRET, 'POST', PATH, ALICE, Date.now() - 60_000))],
    ['no signature', raw(PATH, { 'x-warden-forwarded-identity': signed['x-warden-forwarded-identity']!, 'x-warden-forwarded-at': signed['x-warden-forwarded-at']! })],
    ['a short signature', raw(PATH, { ...signed, 'x-warden-forwarded-signature': 'ab' })],
  ]
  for (const [name, request] of cases) {
    assert.equal(rewrite(request), '/_cluster/refused', name)
    assert.equal(forwardedIdentity(request), null, name)
  }
})

test('signed headers on a public path carry nothing: the path is untouched and no identity is trusted', () => {
  const request = raw('/v1/exec/programmatic', signForward(SECRET, 'POST', '/v1/exec/programmatic', ALICE))
  assert.equal(verifyingRewrite(SECRET)(request), '/v1/exec/programmatic')
  assert.equal(forwardedIdentity(request), null)
})
