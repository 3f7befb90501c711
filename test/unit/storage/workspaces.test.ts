import assert from 'node:assert/strict'
import { mkdtemp, readdir, rm, writeFile } from 'node:fs/promises'
import os from 'node:os'
import path from 'node:path'
import { test } from 'node:test'
import { newId } from '../../../src/storage/ids.ts'
import { fileTable, WorkspaceStore } from '../../../src/storage/workspaces.ts'

const alice = { tenant: 't', user: 'alice' }
const bob = { tenant: 't', user: 'bob' }
const LIMITS = { maxFiles: 3, maxBytes: 100 }
const ref = (size = 10) => ({ storageSessionId: newId(), fileId: newId(), size })

async function openTemp (t: { after: (fn: () => Promise<void>) => void }) {
  const dir = await mkdtemp(path.join(os.tmpdir(), 'warden-workspaces-'))
  t.after(async () => { await rm(dir, { recursive: true, force: true }) })
  return { dir, store: await WorkspaceStore.open(dir) }
}

test('a workspace is created by its first change, read back by its owner only, and survives reopening', async (t) => {
  const { dir, store } = await openTemp(t)
  const id = newId()
  const a = ref()
  assert.deepEqual(await store.apply(id, 'runtime', alice, { put: { 'a.txt': a }, remove: [] }, LIMITS), [])
  assert.deepEqual((await store.get(id, alice))?.files, fileTable([['a.txt', a]]))
  assert.equal(await store.get(id, bob), null, 'another owner sees nothing')
  const reopened = await WorkspaceStore.open(dir)
  assert.deepEqual((await reopened.get(id, alice))?.files, fileTable([['a.txt', a]]))
})

test('a file named like an object built-in (__proto__, constructor) is an ordinary file: kept, read back, removed', async (t) => {
  const { dir, store } = await openTemp(t)
  const id = newId()
  const [proto, ctor] = [ref(), ref()]
  assert.deepEqual(await store.apply(id, 'runtime', alice, { put: fileTable([['__proto__', proto], ['constructor', ctor]]), remove: [] }, LIMITS), [])
  const reopened = await WorkspaceStore.open(dir)
  assert.deepEqual(Object.entries((await reopened.get(id, alice))?.files ?? {}), [['__proto__', proto], ['constructor', ctor]])
  await store.apply(id, 'runtime', alice, { put: fileTable(), remove: ['__proto__'] }, LIMITS)
  assert.deepEqual(Object.keys((await store.get(id, alice))?.files ?? {}), ['constructor'])
})

test('changes apply as deltas: removals, replacements, and files beyond the limits are named, not kept', async (t) => {
  const { store } = await openTemp(t)
  const id = newId()
  await store.apply(id, 'session', alice, { put: { a: ref(), b: ref() }, remove: [] }, LIMITS)
  const dropped = await store.apply(id, 'session', alice, { put: { c: ref(), d: ref(), e: ref() }, remove: ['a'] }, LIMITS)
  assert.deepEqual(dropped, ['e'], 'a fourth file does not fit')
  assert.deepEqual(Object.keys((await store.get(id, alice))?.files ?? {}).sort(), ['b', 'c', 'd'])
  assert.deepEqual(await store.apply(id, 'session', alice, { put: { b: ref(85) }, remove: [] }, LIMITS), ['b'], 'nor do bytes over 100; the old b goes too')
  assert.deepEqual(Object.keys((await store.get(id, alice))?.files ?? {}).sort(), ['c', 'd'])
})

test('concurrent changes to one workspace are applied one after the other: none is lost', async (t) => {
  const { store } = await openTemp(t)
  const id = newId()
  const limits = { maxFiles: 100, maxBytes: 10_000 }
  await Promise.all(Array.from({ length: 20 }, (_, index) => store.apply(id, 'runtime', alice, { put: { [`f${index}`]: ref() }, remove: [] }, limits)))
  assert.equal(Object.keys((await store.get(id, alice))?.files ?? {}).length, 20)
})

test('the sweep removes workspaces unused for longer than the TTL; a corrupt manifest is treated as absent', async (t) => {
  const { dir, store } = await openTemp(t)
  const old = newId()
  const fresh = newId()
  await store.apply(old, 'runtime', alice, { put: { a: ref() }, remove: [] }, LIMITS)
  await store.apply(fresh, 'runtime', alice, { put: { a: ref() }, remove: [] }, LIMITS)
  assert.equal(await store.sweep(60_000, Date.now() + 120_000), 2)
  const corrupt = newId()
  await writeFile(path.join(dir, 'workspaces', `${corrupt}.json`), '{"id": "tru')
  assert.equal(await store.get(corrupt, alice), null)
  assert.deepEqual((await readdir(path.join(dir, 'workspaces'))).filter((name) => name.endsWith('.tmp')), [])
})

test('listOwned gives an owner\'s runtime workspaces, least recently used first', async (t) => {
  const { store } = await openTemp(t)
  const [first, second] = [newId(), newId()]
  await store.apply(first, 'runtime', alice, { put: {}, remove: [] }, LIMITS)
  await new Promise((resolve) => setTimeout(resolve, 5))
  await store.apply(second, 'runtime', alice, { put: {}, remove: [] }, LIMITS)
  await store.apply(newId(), 'runtime', bob, { put: {}, remove: [] }, LIMITS)
  assert.deepEqual((await store.listOwned(alice, 'runtime')).map((workspace) => workspace.id), [first, second])
})
