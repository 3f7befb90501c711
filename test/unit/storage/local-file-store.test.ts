import assert from 'node:assert/strict'
import { randomBytes } from 'node:crypto'
import fs from 'node:fs/promises'
import os from 'node:os'
import path from 'node:path'
import { test } from 'node:test'
import type { TestContext } from 'node:test'
import { pino } from 'pino'
import { isWardenError, WARDEN_ERRORS } from '../../../src/errors.ts'
import { FileTooLargeError } from '../../../src/storage/file-store.ts'
import type { NewFile, StorageLog } from '../../../src/storage/file-store.ts'
import { isId, newId } from '../../../src/storage/ids.ts'
import { openLocalFileStore } from '../../../src/storage/local-file-store.ts'

const DAY_MS = 24 * 3_600_000
const owner = { tenant: 'tenant-1', user: 'user-1' }

async function makeDataDir (t: TestContext): Promise<string> {
  const dataDir = await fs.mkdtemp(path.join(os.tmpdir(), 'warden-store-'))
  t.after(() => fs.rm(dataDir, { recursive: true, force: true }))
  return dataDir
}

async function openTempStore (t: TestContext, log?: StorageLog) {
  const dataDir = await makeDataDir(t)
  return { dataDir, store: await openLocalFileStore(dataDir, log) }
}

function newFile (sessionId: string, name = 'data.csv', extra: Partial<NewFile> = {}): NewFile {
  return { storageSessionId: sessionId, name, kind: 'user', resourceId: 'user-1', owner, ...extra }
}

async function * chunksOf (...parts: Array<string | Uint8Array>): AsyncIterable<Uint8Array> {
  for (const part of parts) yield typeof part === 'string' ? Buffer.from(part) : part
}

async function readAll (stream: NodeJS.ReadableStream): Promise<Buffer> {
  const chunks: Buffer[] = []
  for await (const chunk of stream) chunks.push(Buffer.from(chunk))
  return Buffer.concat(chunks)
}

function recordingLog () {
  const entries: Array<{ level: 'info' | 'warn', fields: object, message: string }> = []
  const log: StorageLog = {
    info: (fields, message) => { entries.push({ level: 'info', fields, message }) },
    warn: (fields, message) => { entries.push({ level: 'warn', fields, message }) },
  }
  return { log, entries }
}

async function exists (filePath: string): Promise<boolean> {
  return await fs.access(filePath).then(() => true, () => false)
}

const metaPath = (dataDir: string, sessionId: string, fileId: string) =>
  path.join(dataDir, 'files', sessionId, `${fileId}.json`)
const dataPath = (dataDir: string, sessionId: string, fileId: string) =>
  path.join(dataDir, 'files', sessionId, `${fileId}.data`)

async function age (dataDir: string, sessionId: string, fileId: string, ageMs: number): Promise<void> {
  const then = new Date(Date.now() - ageMs)
  await fs.utimes(metaPath(dataDir, sessionId, fileId), then, then)
}

test('put then get and open return the stored metadata and byte-identical contents', async (t) => {
  const { store } = await openTempStore(t)
  const sessionId = newId()
  const bytes = randomBytes(1024 * 1024 + 17)
  const parts = Array.from({ length: Math.ceil(bytes.length / 65_536) }, (_, i) => bytes.subarray(i * 65_536, (i + 1) * 65_536))

  const stored = await store.put(newFile(sessionId, 'out/data.csv', { version: 3 }), chunksOf(...parts), 10 * 1024 * 1024)

  assert.ok(isId(stored.id))
  assert.equal(stored.storageSessionId, sessionId)
  assert.equal(stored.name, 'out/data.csv')
  assert.equal(stored.size, bytes.length)
  assert.equal(stored.contentType, 'text/csv; charset=utf-8')
  assert.equal(stored.kind, 'user')
  assert.equal(stored.resourceId, 'user-1')
  assert.equal(stored.version, 3)
  assert.deepEqual(stored.owner, owner)
  assert.ok(Math.abs(Date.parse(stored.createdAt) - Date.now()) < 60_000)
  assert.ok(Math.abs(Date.parse(stored.lastUsedAt) - Date.now()) < 60_000)
  assert.deepEqual(await store.get(sessionId, stored.id), stored)

  const opened = await store.open(sessionId, stored.id)
  assert.ok(opened)
  assert.equal(opened.file.id, stored.id)
  assert.ok(bytes.equals(await readAll(opened.stream)))
})

test('an empty source is stored as a zero-byte file', async (t) => {
  const { store } = await openTempStore(t)
  const sessionId = newId()
  const stored = await store.put(newFile(sessionId, 'empty.txt'), chunksOf(), 10)
  assert.equal(stored.size, 0)
  const opened = await store.open(sessionId, stored.id)
  assert.equal((await readAll(opened!.stream)).length, 0)
})

test('a declared content type is kept only for an unknown extension', async (t) => {
  const { store } = await openTempStore(t)
  const sessionId = newId()
  const png = await store.put(newFile(sessionId, 'plot.png', { contentType: 'text/html' }), chunksOf('x'), 10)
  const custom = await store.put(newFile(sessionId, 'blob.xyz', { contentType: 'application/x-custom' }), chunksOf('x'), 10)
  assert.equal(png.contentType, 'image/png')
  assert.equal(custom.contentType, 'application/x-custom')
})

test('stored files, their metadata and bytes survive re-opening the store', async (t) => {
  const { dataDir, store } = await openTempStore(t)
  const sessionId = newId()
  const stored = await store.put(newFile(sessionId, 'keep.bin', { kind: 'skill', version: 2 }), chunksOf('hello ', 'world'), 100)

  const reopened = await openLocalFileStore(dataDir)

  assert.deepEqual(await reopened.get(sessionId, stored.id), stored)
  assert.deepEqual((await reopened.list(sessionId)).map((file) => file.id), [stored.id])
  const opened = await reopened.open(sessionId, stored.id)
  assert.equal((await readAll(opened!.stream)).toString(), 'hello world')
})

test('a file is invisible until commit and an aborted writer leaves nothing behind', async (t) => {
  const { dataDir, store } = await openTempStore(t)
  const sessionId = newId()
  const writer = await store.create(newFile(sessionId), 100)
  await writer.write(Buffer.from('partial'))
  assert.equal(writer.bytesWritten, 7)
  assert.deepEqual(await store.list(sessionId), [])
  assert.deepEqual(await store.usage(), { files: 0, bytes: 0 })

  await writer.abort()
  await writer.abort() // idempotent

  assert.deepEqual(await fs.readdir(path.join(dataDir, 'tmp')), [])
  assert.deepEqual(await store.list(sessionId), [])
  assert.equal(await exists(path.join(dataDir, 'files', sessionId)), false)
  await assert.rejects(writer.write(Buffer.from('more')), /closed/)
  await assert.rejects(writer.commit(), /closed/)
})

test('writing past maxBytes rejects with FileTooLargeError and leaves nothing behind', async (t) => {
  const { dataDir, store } = await openTempStore(t)
  const sessionId = newId()
  const writer = await store.create(newFile(sessionId), 10)
  await writer.write(Buffer.from('0123456789')) // exactly the limit is fine

  await assert.rejects(writer.write(Buffer.from('x')), (err: unknown) =>
    err instanceof FileTooLargeError && err.limitBytes === 10 && err.code === 'WARDEN_FILE_TOO_LARGE')

  await assert.rejects(writer.commit(), /closed/) // the writer was aborted
  assert.deepEqual(await fs.readdir(path.join(dataDir, 'tmp')), [])
  assert.deepEqual(await store.list(sessionId), [])
})

test('put of an over-limit source rejects with FileTooLargeError and stores nothing', async (t) => {
  const { dataDir, store } = await openTempStore(t)
  const sessionId = newId()
  await store.put(newFile(sessionId, 'ok.txt'), chunksOf('fits'), 4)

  await assert.rejects(store.put(newFile(sessionId, 'big.txt'), chunksOf('abc', 'def'), 4), FileTooLargeError)

  assert.deepEqual((await store.list(sessionId)).map((file) => file.name), ['ok.txt'])
  assert.deepEqual(await fs.readdir(path.join(dataDir, 'tmp')), [])
  assert.deepEqual(await store.usage(), { files: 1, bytes: 4 })
})

test('put whose source fails midway rejects with the source error and stores nothing', async (t) => {
  const { dataDir, store } = await openTempStore(t)
  const sessionId = newId()
  async function * failing (): AsyncIterable<Uint8Array> {
    yield Buffer.from('first chunk')
    throw new Error('client went away')
  }
  await assert.rejects(store.put(newFile(sessionId), failing(), 100), /client went away/)
  assert.deepEqual(await fs.readdir(path.join(dataDir, 'tmp')), [])
  assert.deepEqual(await store.list(sessionId), [])
})

test('writes issued without awaiting are stored in call order', async (t) => {
  const { store } = await openTempStore(t)
  const sessionId = newId()
  const writer = await store.create(newFile(sessionId, 'order.txt'), 100)
  const pending = ['a', 'b', 'c', 'd'].map((part) => writer.write(Buffer.from(part.repeat(5))))
  const stored = await writer.commit()
  await Promise.all(pending)
  const opened = await store.open(sessionId, stored.id)
  assert.equal((await readAll(opened!.stream)).toString(), 'aaaaabbbbbcccccddddd')
})

test('create rejects a bad session id or file name with a coded error (never an HTTP one) and writes nothing', async (t) => {
  const { dataDir, store } = await openTempStore(t)
  await assert.rejects(store.create(newFile('../escape'), 10), (err: unknown) => isWardenError(err, WARDEN_ERRORS.invalidId))
  await assert.rejects(store.create(newFile(newId(), '../../etc/passwd'), 10), (err: unknown) =>
    isWardenError(err, WARDEN_ERRORS.invalidFileName))
  assert.equal(await exists(path.join(dataDir, 'escape')), false)
  assert.deepEqual(await fs.readdir(path.join(dataDir, 'tmp')), [])
  assert.deepEqual(await fs.readdir(path.join(dataDir, 'files')), [])
})

test('opening the store deletes temp files, .data without .json and .json without .data', async (t) => {
  const { dataDir, store } = await openTempStore(t)
  const sessionId = newId()
  const kept = await store.put(newFile(sessionId, 'kept.txt'), chunksOf('kept'), 100)
  const orphanId = newId()
  const lonelyMetaId = newId()
  await fs.writeFile(dataPath(dataDir, sessionId, orphanId), 'half a file')
  await fs.copyFile(metaPath(dataDir, sessionId, kept.id), metaPath(dataDir, sessionId, lonelyMetaId))
  await fs.writeFile(path.join(dataDir, 'tmp', newId()), 'in flight when the server died')
  assert.deepEqual((await store.list(sessionId)).map((file) => file.id), [kept.id]) // never listed
  const { log, entries } = recordingLog()

  const reopened = await openLocalFileStore(dataDir, log)

  assert.deepEqual(await fs.readdir(path.join(dataDir, 'tmp')), [])
  assert.equal(await exists(dataPath(dataDir, sessionId, orphanId)), false)
  assert.equal(await exists(metaPath(dataDir, sessionId, lonelyMetaId)), false)
  assert.deepEqual((await reopened.list(sessionId)).map((file) => file.id), [kept.id])
  assert.deepEqual(await reopened.usage(), { files: 1, bytes: 4 })
  assert.deepEqual(entries.map((entry) => entry.fields), [{ tmpFiles: 1, orphans: 2 }])
})

test('a corrupt or tampered .json is treated as absent and logged as a warning', async (t) => {
  const { log, entries } = recordingLog()
  const { dataDir, store } = await openTempStore(t, log)
  const sessionId = newId()
  const good = await store.put(newFile(sessionId, 'good.txt'), chunksOf('good'), 100)
  const broken = await store.put(newFile(sessionId, 'broken.txt'), chunksOf('broken'), 100)
  const tampered = await store.put(newFile(sessionId, 'tampered.txt'), chunksOf('tampered'), 100)
  await fs.writeFile(metaPath(dataDir, sessionId, broken.id), '{"id": "trunc')
  const onDisk = JSON.parse(await fs.readFile(metaPath(dataDir, sessionId, tampered.id), 'utf8'))
  await fs.writeFile(metaPath(dataDir, sessionId, tampered.id), JSON.stringify({ ...onDisk, name: '../../etc/passwd' }))

  assert.equal(await store.get(sessionId, broken.id), null)
  assert.equal(await store.open(sessionId, broken.id), null)
  assert.equal(await store.get(sessionId, tampered.id), null)
  assert.deepEqual((await store.list(sessionId)).map((file) => file.id), [good.id])
  assert.ok(entries.some((entry) => entry.level === 'warn' &&
    JSON.stringify(entry.fields) === JSON.stringify({ sessionId, fileId: broken.id })))
  assert.ok(entries.every((entry) => !JSON.stringify(entry).includes('passwd')), 'file names are not logged')
})

test('metadata that belongs to another id is ignored', async (t) => {
  const { dataDir, store } = await openTempStore(t)
  const sessionId = newId()
  const stored = await store.put(newFile(sessionId), chunksOf('x'), 100)
  const copyId = newId()
  await fs.copyFile(metaPath(dataDir, sessionId, stored.id), metaPath(dataDir, sessionId, copyId))
  await fs.copyFile(dataPath(dataDir, sessionId, stored.id), dataPath(dataDir, sessionId, copyId))
  assert.equal(await store.get(sessionId, copyId), null)
})

test('touch and open move lastUsedAt to now; get does not', async (t) => {
  const { dataDir, store } = await openTempStore(t)
  const sessionId = newId()
  const stored = await store.put(newFile(sessionId), chunksOf('x'), 100)
  await age(dataDir, sessionId, stored.id, 2 * DAY_MS)
  const aged = await store.get(sessionId, stored.id)
  assert.ok(Date.now() - Date.parse(aged!.lastUsedAt) > 1.9 * DAY_MS)
  assert.equal((await store.get(sessionId, stored.id))!.lastUsedAt, aged!.lastUsedAt)

  await store.touch(sessionId, stored.id)
  const touched = await store.get(sessionId, stored.id)
  assert.ok(Date.now() - Date.parse(touched!.lastUsedAt) < 60_000)

  await age(dataDir, sessionId, stored.id, 2 * DAY_MS)
  const opened = await store.open(sessionId, stored.id)
  opened!.stream.resume()
  assert.ok(Date.now() - Date.parse(opened!.file.lastUsedAt) < 60_000)
  assert.equal((await store.get(sessionId, stored.id))!.lastUsedAt, opened!.file.lastUsedAt)
  await store.touch(sessionId, newId()) // unknown file: no error
})

test('sweep removes only files unused for longer than the ttl, then empty session directories', async (t) => {
  const { dataDir, store } = await openTempStore(t)
  const sessionA = newId()
  const sessionB = newId()
  const oldA = await store.put(newFile(sessionA, 'old.txt'), chunksOf('old'), 100)
  const freshA = await store.put(newFile(sessionA, 'fresh.txt'), chunksOf('fresh'), 100)
  const oldB = await store.put(newFile(sessionB, 'old.txt'), chunksOf('old'), 100)
  await age(dataDir, sessionA, oldA.id, DAY_MS + 60_000)
  await age(dataDir, sessionB, oldB.id, 3 * DAY_MS)
  await age(dataDir, sessionA, freshA.id, DAY_MS - 60_000)

  assert.equal(await store.sweep(DAY_MS), 2)

  assert.equal(await store.get(sessionA, oldA.id), null)
  assert.equal(await exists(dataPath(dataDir, sessionA, oldA.id)), false)
  assert.ok(await store.get(sessionA, freshA.id))
  assert.equal(await exists(path.join(dataDir, 'files', sessionB)), false)
  assert.ok(await exists(path.join(dataDir, 'files', sessionA)))
  assert.equal(await store.sweep(DAY_MS), 0)
})

test('sweep measures age against the given now', async (t) => {
  const { store } = await openTempStore(t)
  const sessionId = newId()
  const stored = await store.put(newFile(sessionId), chunksOf('x'), 100)
  assert.equal(await store.sweep(DAY_MS, Date.now() + DAY_MS - 60_000), 0)
  assert.equal(await store.sweep(DAY_MS, Date.now() + DAY_MS + 60_000), 1)
  assert.equal(await store.get(sessionId, stored.id), null)
})

test('sweep leaves a fresh uncommitted write alone and a committed writer still succeeds after it', async (t) => {
  const { store } = await openTempStore(t)
  const sessionId = newId()
  const writer = await store.create(newFile(sessionId), 100)
  await writer.write(Buffer.from('in progress'))
  assert.equal(await store.sweep(DAY_MS), 0)
  const stored = await writer.commit()
  assert.equal((await store.get(sessionId, stored.id))?.size, 11)
})

test('invalid ids never reach the filesystem', async (t) => {
  const { dataDir, store } = await openTempStore(t)
  const sessionId = newId()
  const stored = await store.put(newFile(sessionId), chunksOf('x'), 100)
  // targets that `files/<sessionId>/<fileId>.json` reaches with `..` in either id
  const secret = path.join(dataDir, 'secret.json')
  const secretData = path.join(dataDir, 'secret.data')
  await fs.writeFile(secret, JSON.stringify({ ...stored, id: 'secret' }))
  await fs.writeFile(secretData, 'secret')
  const old = new Date(Date.now() - DAY_MS)
  await fs.utimes(secret, old, old)
  const secretMtimeMs = (await fs.stat(secret)).mtimeMs
  const attempts: Array<[string, string]> = [
    ['..', 'secret'], [sessionId, '../../secret'], ['../files/..', 'secret'], ['', ''], ['.', '.'],
    [`${sessionId}/..`, stored.id], [sessionId, `${stored.id}\0`], ['../../../../../etc', 'passwd'],
  ]

  for (const [badSession, badFile] of attempts) {
    assert.equal(await store.get(badSession, badFile), null)
    assert.equal(await store.open(badSession, badFile), null)
    await store.touch(badSession, badFile)
    assert.equal(await store.delete(badSession, badFile), false)
  }
  for (const badSession of ['..', '../files/..', '', '.', `${sessionId}/..`, `${sessionId}/`]) {
    assert.deepEqual(await store.list(badSession), [])
  }

  assert.ok(await exists(secret))
  assert.ok(await exists(secretData))
  assert.equal((await fs.stat(secret)).mtimeMs, secretMtimeMs)
  assert.ok(await store.get(sessionId, stored.id))
})

test('list returns only that session\'s files, oldest first', async (t) => {
  const { store } = await openTempStore(t)
  const sessionA = newId()
  const sessionB = newId()
  const first = await store.put(newFile(sessionA, 'first.txt'), chunksOf('1'), 100)
  await new Promise((resolve) => setTimeout(resolve, 5))
  const second = await store.put(newFile(sessionA, 'dir/second.txt'), chunksOf('2'), 100)
  await store.put(newFile(sessionB, 'other.txt'), chunksOf('3'), 100)

  assert.deepEqual((await store.list(sessionA)).map((file) => file.id), [first.id, second.id])
  assert.equal((await store.list(sessionB)).length, 1)
  assert.deepEqual(await store.list(newId()), [])
})

test('delete removes both parts of one file and reports whether it existed', async (t) => {
  const { dataDir, store } = await openTempStore(t)
  const sessionId = newId()
  const doomed = await store.put(newFile(sessionId, 'doomed.txt'), chunksOf('bye'), 100)
  const kept = await store.put(newFile(sessionId, 'kept.txt'), chunksOf('stay'), 100)

  assert.equal(await store.delete(sessionId, doomed.id), true)
  assert.equal(await store.delete(sessionId, doomed.id), false)

  assert.equal(await store.get(sessionId, doomed.id), null)
  assert.equal(await store.open(sessionId, doomed.id), null)
  assert.equal(await exists(dataPath(dataDir, sessionId, doomed.id)), false)
  assert.equal(await exists(metaPath(dataDir, sessionId, doomed.id)), false)
  assert.ok(await store.get(sessionId, kept.id))
})

test('usage counts committed files and the bytes of their contents', async (t) => {
  const { store } = await openTempStore(t)
  assert.deepEqual(await store.usage(), { files: 0, bytes: 0 })
  await store.put(newFile(newId(), 'a.txt'), chunksOf('12345'), 100)
  await store.put(newFile(newId(), 'b.bin'), chunksOf(randomBytes(1000)), 2000)
  const pending = await store.create(newFile(newId()), 100)
  await pending.write(Buffer.from('not yet'))
  assert.deepEqual(await store.usage(), { files: 2, bytes: 1005 })
  await pending.abort()
})

test('concurrent writers in one session each get their own file', async (t) => {
  const { store } = await openTempStore(t)
  const sessionId = newId()
  const contents = Array.from({ length: 20 }, (_, i) => `file number ${i}\n`.repeat(100 + i))

  const stored = await Promise.all(contents.map((text, i) =>
    store.put(newFile(sessionId, `f${i}.txt`), chunksOf(text.slice(0, 50), text.slice(50)), 10_000)))

  assert.equal(new Set(stored.map((file) => file.id)).size, 20)
  assert.equal((await store.list(sessionId)).length, 20)
  for (const [i, file] of stored.entries()) {
    const opened = await store.open(sessionId, file.id)
    assert.equal((await readAll(opened!.stream)).toString(), contents[i])
  }
})

test('files and directories are private to the server user', async (t) => {
  const { dataDir, store } = await openTempStore(t)
  const sessionId = newId()
  const stored = await store.put(newFile(sessionId), chunksOf('x'), 100)
  assert.equal((await fs.stat(path.join(dataDir, 'files', sessionId))).mode & 0o077, 0)
  assert.equal((await fs.stat(dataPath(dataDir, sessionId, stored.id))).mode & 0o077, 0)
  assert.equal((await fs.stat(metaPath(dataDir, sessionId, stored.id))).mode & 0o077, 0)
})

test('a pino logger is accepted as the store log', async (t) => {
  const dataDir = await makeDataDir(t)
  const store = await openLocalFileStore(dataDir, pino({ level: 'silent' }))
  assert.deepEqual(await store.usage(), { files: 0, bytes: 0 })
})

test('metadata in the format earlier releases wrote (the storage session as "sessionId") is read: an upgrade loses nothing', async (t) => {
  const { dataDir, store } = await openTempStore(t)
  const sessionId = newId()
  const fileId = newId()
  await fs.mkdir(path.join(dataDir, 'files', sessionId), { recursive: true })
  await fs.writeFile(path.join(dataDir, 'files', sessionId, `${fileId}.data`), 'old bytes')
  await fs.writeFile(metaPath(dataDir, sessionId, fileId), JSON.stringify({
    id: fileId, sessionId, name: 'old.txt', size: 9, contentType: 'text/plain', kind: 'user', resourceId: 'user-1', owner, createdAt: '2026-11-20T10:00:00.000Z',
  }))
  const file = await store.get(sessionId, fileId)
  assert.equal(file?.storageSessionId, sessionId)
  assert.equal(file?.name, 'old.txt')
  const opened = await store.open(sessionId, fileId)
  let text = ''
  for await (const chunk of opened?.stream ?? []) text += String(chunk)
  assert.equal(text, 'old bytes')
})
