import assert from 'node:assert/strict'
import { test } from 'node:test'
import { ID_PATTERN, isId, newId } from '../../../src/storage/ids.ts'

test('newId returns a 21-character id from the URL-safe alphabet', () => {
  for (let i = 0; i < 200; i++) {
    const id = newId()
    assert.equal(id.length, 21)
    assert.match(id, ID_PATTERN)
    assert.ok(isId(id))
  }
})

test('newId does not repeat in 10 000 draws', () => {
  const ids = new Set(Array.from({ length: 10_000 }, () => newId()))
  assert.equal(ids.size, 10_000)
})

test('isId accepts exactly 21 characters of A-Z a-z 0-9 _ -', () => {
  assert.ok(isId('abcdefghijklmnopqrstu'))
  assert.ok(isId('ABC_def-123_XYZ-09az_'))
  assert.ok(isId('---------------------'))
})

test('isId rejects other lengths, path characters and non-strings', () => {
  for (const value of [
    '', 'abcdefghijklmnopqrst', 'abcdefghijklmnopqrstuv', '../../../../etc/passw', 'abcdefghij/lmnopqrstu',
    'abcdefghij.lmnopqrstu', 'abcdefghij\0lmnopqrstu', 'abcdefghij+lmnopqrstu', 'abcdefghijklmnopqrst\n',
    'abcdefghijklmnopqrsté', undefined, null, 21, {}, ['abcdefghijklmnopqrstu'],
  ]) {
    assert.equal(isId(value), false, `accepted ${JSON.stringify(value)}`)
  }
})
