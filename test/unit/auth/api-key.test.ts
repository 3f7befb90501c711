import assert from 'node:assert/strict'
import crypto from 'node:crypto'
import { syncBuiltinESMExports } from 'node:module'
import { test } from 'node:test'
import { createApiKeyCheck } from '../../../src/auth/api-key.ts'

test('the configured key is accepted', () => {
  assert.equal(createApiKeyCheck(['s3cret-key'])('s3cret-key'), true)
})

test('a wrong key, a prefix, an extension and a different case are refused', () => {
  const check = createApiKeyCheck(['s3cret-key'])
  for (const presented of ['wrong', 's3cret', 's3cret-key!', 's3cret-keys', 'S3CRET-KEY', ' s3cret-key', 's3cret-key\n', 's3cret-ke\u0443']) {
    assert.equal(check(presented), false, JSON.stringify(presented))
  }
})

test('an empty presented key is refused, even when an empty key is configured', () => {
  assert.equal(createApiKeyCheck(['key'])(''), false)
  assert.equal(createApiKeyCheck([''])(''), false)
})

test('non-string values are refused', () => {
  const check = createApiKeyCheck(['key'])
  for (const presented of [undefined, null, 0, 1, true, ['key'], { toString: () => 'key' }, Buffer.from('key'), Object('key')]) {
    assert.equal(check(presented), false, String(presented))
  }
})

test('with several keys each one is accepted and anything else refused', () => {
  const keys = ['alpha-1', 'beta-22', 'gamma-333', 'δέλτα-🔑']
  const check = createApiKeyCheck(keys)
  for (const key of keys) assert.equal(check(key), true, key)
  for (const presented of ['alpha-2', 'beta-2', 'alpha-1,beta-22', 'δέλτα-', 'gamma-333 ']) assert.equal(check(presented), false, presented)
})

test('with no keys configured every key is refused', () => {
  const check = createApiKeyCheck([])
  assert.equal(check('anything'), false)
  assert.equal(check(''), false)
})

// Constant time: the comparison count and sizes must not depend on which key matches or on lengths.
test('every check compares equal-length digests against every configured key, whatever matches', (t) => {
  const keys = ['short', 'a-much-longer-key-of-sixty-four-characters-for-the-length-check', 'third']
  const check = createApiKeyCheck(keys)
  const spy = t.mock.method(crypto, 'timingSafeEqual')
  syncBuiltinESMExports()
  t.after(() => { spy.mock.restore(); syncBuiltinESMExports() })
  for (const presented of ['short', 'third', 'no', 'x'.repeat(10_000)]) {
    spy.mock.resetCalls()
    check(presented)
    assert.equal(spy.mock.callCount(), keys.length, presented.slice(0, 20))
    for (const call of spy.mock.calls) {
      const [a, b] = call.arguments as unknown as [Buffer, Buffer]
      assert.equal(a.length, 32)
      assert.equal(b.length, 32)
    }
  }
})
