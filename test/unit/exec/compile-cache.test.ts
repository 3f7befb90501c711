import assert from 'node:assert/strict'
import { test } from 'node:test'
import { CompileCache, compileKey } from '../../../src/exec/compile-cache.ts'
import { programFor, resolveLanguage } from '../../../src/exec/languages/index.ts'

const LIMITS = { memoryBytes: 512 * 1024 * 1024, cpus: 1, compileTimeoutMs: 15_000 }
const HELLO = '#include <stdio.h>\nint main(void) { puts("hi"); }\n'
const c = resolveLanguage('c')
if (c === null) throw new Error('no C descriptor')
const program = programFor(c, { code: HELLO, limits: LIMITS })
const alice = { tenant: 'legacy', user: 'alice' }

const artifact = (bytes: number, fill = 1) => [{ name: 'main', bytes: Buffer.alloc(bytes, fill) }]

test('the key names the owner, the source and the build: any of them changed is another key', () => {
  const key = compileKey(alice, 'c', program, HELLO, 0)
  assert.match(key ?? '', /^[0-9a-f]{64}$/)
  assert.equal(compileKey({ ...alice }, 'c', program, HELLO, 0), key)
  const others = [
    compileKey({ tenant: 'legacy', user: 'bob' }, 'c', program, HELLO, 0),
    compileKey({ tenant: 'other', user: 'alice' }, 'c', program, HELLO, 0),
    compileKey({ tenant: 'legacy', user: null }, 'c', program, HELLO, 0),
    compileKey(alice, 'c', program, HELLO + ' ', 0),
    compileKey(alice, 'c', program.runner === 'steps' ? { ...program, steps: [{ ...program.steps[0]!, argv: [...program.steps[0]!.argv, '-O3'] }, program.steps[1]!] } : program, HELLO, 0),
    compileKey(alice, 'c', program.runner === 'steps' ? { ...program, env: { CFLAGS: 'x' } } : program, HELLO, 0),
  ]
  for (const other of others) assert.notEqual(other, key)
  assert.equal(new Set(others).size, others.length)
})

test('no key for files in /mnt/data, time macros, includes the source folder cannot satisfy, or interpreted code', () => {
  assert.equal(compileKey(alice, 'c', program, HELLO, 1), null)
  for (const code of ['puts(__DATE__);', '#include "/mnt/data/a.h"', '#include <../../mnt/data/a.h>', '#include HEADER', 'const X: &str = include_str!("/proc/uptime");', '  include "/mnt/data/x.f90"']) {
    assert.equal(compileKey(alice, 'c', program, code, 0), null, code)
  }
  const bash = resolveLanguage('bash')
  assert.ok(bash !== null)
  assert.equal(compileKey(alice, 'bash', programFor(bash, { code: 'echo', limits: LIMITS }), 'echo', 0), null)
})

test('a lookup finds what was stored under its key, as a copy the caller cannot change', () => {
  const cache = new CompileCache(1024 * 1024)
  const stored = artifact(100)
  cache.store('k', stored)
  stored[0]!.bytes.fill(9)
  const found = cache.lookup('k')
  assert.deepEqual(found?.map((a) => [a.name, a.bytes.length, a.bytes[0]]), [['main', 100, 1]])
  assert.equal(cache.lookup('other'), null)
  assert.deepEqual(cache.stats(), { hits: 1, misses: 1, stores: 1, evictions: 0, entries: 1, bytes: 104 })
})

test('an entry whose bytes no longer match their digest is dropped, not served', () => {
  const cache = new CompileCache(1024 * 1024)
  cache.store('k', artifact(100))
  const found = cache.lookup('k')
  assert.ok(found !== null)
  found[0]!.bytes[0] = 7
  assert.equal(cache.lookup('k'), null)
  assert.equal(cache.stats().entries, 0)
})

test('the size is bounded: least recently used entries go first, and an oversized one is never kept', () => {
  const cache = new CompileCache(4000)
  cache.store('a', artifact(900))
  cache.store('b', artifact(900))
  cache.store('c', artifact(900))
  assert.ok(cache.lookup('a') !== null) // a is now the most recently used
  cache.store('d', artifact(900))
  cache.store('e', artifact(900))
  assert.equal(cache.lookup('b'), null)
  assert.ok(cache.lookup('a') !== null)
  assert.ok(cache.stats().bytes <= 4000)
  assert.equal(cache.stats().evictions, 1)
  cache.store('huge', artifact(1001))
  assert.equal(cache.lookup('huge'), null)
  const off = new CompileCache(0)
  off.store('a', artifact(1))
  assert.equal(off.enabled, false)
  assert.equal(off.lookup('a'), null)
})
