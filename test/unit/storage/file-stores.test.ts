import assert from 'node:assert/strict'
import { createHash, randomBytes } from 'node:crypto'
import fs from 'node:fs/promises'
import os from 'node:os'
import path from 'node:path'
import { after, describe, test } from 'node:test'
import { isWardenError, WARDEN_ERRORS } from '../../../src/errors.ts'
import { FileTooLargeError, type FileStore, type NewFile } from '../../../src/storage/file-store.ts'
import { isId, newId } from '../../../src/storage/ids.ts'
import { openLocalFileStore } from '../../../src/storage/local-file-store.ts'
import { openS3FileStore } from '../../../src/storage/s3-file-store.ts'
import { startS3, type RunningS3 } from '../../helpers/s3.ts'

/**
 * One suite, every backend: what the API and the execution pipeline rely on from a FileStore holds for
 * local disk (the default) and for an S3 bucket (s3rver on loopback) alike. Backend-specific layout and
 * crash recovery are tested beside each backend (local-file-store.test.ts, s3 faults in test/e2e/cluster-faults).
 */

const DAY_MS = 24 * 3_600_000
const owner = { tenant: 'tenant-1', user: 'user-1' }

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

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms))

interface Backend { name: string, open (t: { after (fn: () => unknown): void }): Promise<FileStore> }

let s3: RunningS3 | null = null
const cleanups: Array<() => unknown> = []
after(async () => { for (const cleanup of cleanups) await cleanup() })
const backends: Backend[] = [
  {
    name: 'local',
    open: async (t) => {
      const dataDir = await fs.mkdtemp(path.join(os.tmpdir(), 'warden-store-'))
      t.after(() => fs.rm(dataDir, { recursive: true, force: true }))
      return await openLocalFileStore(dataDir)
    },
  },
  {
    name: 's3',
    open: async (t) => {
      s3 ??= await startS3({ after: (fn) => { cleanups.push(fn) } })
      // a prefix per test: tests share the bucket, never each other's files. Every use is recorded here, as
      // on disk; by default a use younger than a minute is not (s3-file-store.test.ts)
      return await openS3FileStore({ ...s3.settings, prefix: `t-${newId()}/` }, undefined, undefined, 0)
    },
  },
]

for (const backend of backends) {
  describe(`FileStore on ${backend.name}`, () => {
    test('put then get and open return the stored metadata and byte-identical contents (past one S3 part)', async (t) => {
      const store = await backend.open(t)
      const sessionId = newId()
      const bytes = randomBytes(6 * 1024 * 1024 + 17)
      const parts = Array.from({ length: Math.ceil(bytes.length / 65_536) }, (_, i) => bytes.subarray(i * 65_536, (i + 1) * 65_536))
      const stored = await store.put(newFile(sessionId, 'out/data.csv', { version: 3 }), chunksOf(...parts), 10 * 1024 * 1024)
      assert.ok(isId(stored.id))
      assert.equal(stored.storageSessionId, sessionId)
      assert.equal(stored.name, 'out/data.csv')
      assert.equal(stored.size, bytes.length)
      assert.equal(stored.contentType, 'text/csv; charset=utf-8')
      assert.equal(stored.version, 3)
      assert.deepEqual(stored.owner, owner)
      assert.deepEqual(await store.get(sessionId, stored.id), stored)
      const opened = await store.open(sessionId, stored.id)
      assert.ok(opened)
      assert.equal(opened.file.id, stored.id)
      assert.equal(createHash('sha256').update(await readAll(opened.stream)).digest('hex'), createHash('sha256').update(bytes).digest('hex'))
    })

    test('an empty source is stored as a zero-byte file', async (t) => {
      const store = await backend.open(t)
      const sessionId = newId()
      const stored = await store.put(newFile(sessionId, 'empty.txt'), chunksOf(), 10)
      assert.equal(stored.size, 0)
      const opened = await store.open(sessionId, stored.id)
      assert.equal((await readAll(opened!.stream)).length, 0)
    })

    test('a file is invisible until commit and an aborted writer leaves nothing behind', async (t) => {
      const store = await backend.open(t)
      const sessionId = newId()
      const writer = await store.create(newFile(sessionId), 100)
      await writer.write(Buffer.from('half'))
      assert.deepEqual(await store.list(sessionId), [])
      await writer.abort()
      await writer.abort()
      assert.deepEqual(await store.list(sessionId), [])
      assert.deepEqual(await store.usage(), { files: 0, bytes: 0 })
      const committed = await store.create(newFile(sessionId), 100)
      await committed.write(Buffer.from('whole'))
      const file = await committed.commit()
      assert.deepEqual((await store.list(sessionId)).map((listed) => listed.id), [file.id])
    })

    test('writing past maxBytes rejects with FileTooLargeError and leaves nothing behind', async (t) => {
      const store = await backend.open(t)
      const sessionId = newId()
      const writer = await store.create(newFile(sessionId), 8)
      await writer.write(Buffer.from('12345'))
      await assert.rejects(writer.write(Buffer.from('6789')), (error) => error instanceof FileTooLargeError && error.limitBytes === 8)
      await assert.rejects(writer.commit(), /already closed/)
      assert.deepEqual(await store.list(sessionId), [])
      await assert.rejects(store.put(newFile(sessionId), chunksOf('123', '456789'), 8), FileTooLargeError)
      assert.deepEqual(await store.usage(), { files: 0, bytes: 0 })
    })

    test('put whose source fails midway rejects with the source error and stores nothing', async (t) => {
      const store = await backend.open(t)
      const sessionId = newId()
      async function * failing () { yield Buffer.from('some bytes'); throw new Error('client went away') }
      await assert.rejects(store.put(newFile(sessionId), failing(), 100), /client went away/)
      assert.deepEqual(await store.list(sessionId), [])
    })

    test('writes issued without awaiting are stored in call order', async (t) => {
      const store = await backend.open(t)
      const writer = await store.create(newFile(newId()), 100)
      const writes = ['a', 'b', 'c', 'd'].map((part) => writer.write(Buffer.from(part)))
      await Promise.all(writes)
      const file = await writer.commit()
      assert.equal((await readAll((await store.open(file.storageSessionId, file.id))!.stream)).toString(), 'abcd')
    })

    test('create rejects a bad session id, file name or kind with a coded error (never an HTTP one)', async (t) => {
      const store = await backend.open(t)
      await assert.rejects(store.create(newFile('not-an-id'), 10), (error) => isWardenError(error, WARDEN_ERRORS.invalidId))
      await assert.rejects(store.create(newFile(newId(), '../escape'), 10), (error) => isWardenError(error, WARDEN_ERRORS.invalidFileName))
      await assert.rejects(store.create(newFile(newId(), 'a.txt', { kind: 'nope' as 'user' }), 10), (error) => isWardenError(error, WARDEN_ERRORS.invalidFileKind))
    })

    test('unknown and malformed ids are absent: get, open, touch, list and delete', async (t) => {
      const store = await backend.open(t)
      for (const [sessionId, fileId] of [[newId(), newId()], ['../x', newId()], [newId(), '../../etc']] as const) {
        assert.equal(await store.get(sessionId, fileId), null)
        assert.equal(await store.open(sessionId, fileId), null)
        await store.touch(sessionId, fileId)
        assert.equal(await store.delete(sessionId, fileId), false)
      }
      assert.deepEqual(await store.list('../x'), [])
    })

    test('touch and open move lastUsedAt forward; get does not', async (t) => {
      const store = await backend.open(t)
      const stored = await store.put(newFile(newId()), chunksOf('x'), 10)
      await sleep(30)
      assert.equal((await store.get(stored.storageSessionId, stored.id))?.lastUsedAt, stored.lastUsedAt)
      await store.touch(stored.storageSessionId, stored.id)
      const touched = await store.get(stored.storageSessionId, stored.id)
      assert.ok(touched !== null && touched.lastUsedAt > stored.lastUsedAt, 'touch moved it')
      await sleep(30)
      const opened = await store.open(stored.storageSessionId, stored.id)
      opened?.stream.resume()
      assert.ok(opened !== null && opened.file.lastUsedAt > touched.lastUsedAt, 'open moved it')
      assert.equal((await store.get(stored.storageSessionId, stored.id))?.lastUsedAt, opened.file.lastUsedAt)
    })

    test('list is oldest first, per session; delete removes one file', async (t) => {
      const store = await backend.open(t)
      const sessionId = newId()
      const first = await store.put(newFile(sessionId, 'a.txt'), chunksOf('a'), 10)
      await sleep(5)
      const second = await store.put(newFile(sessionId, 'b/c.txt'), chunksOf('bc'), 10)
      await store.put(newFile(newId(), 'other.txt'), chunksOf('o'), 10)
      assert.deepEqual((await store.list(sessionId)).map((file) => file.name), ['a.txt', 'b/c.txt'])
      assert.equal(await store.delete(sessionId, first.id), true)
      assert.equal(await store.delete(sessionId, first.id), false)
      assert.deepEqual((await store.list(sessionId)).map((file) => file.id), [second.id])
      assert.deepEqual(await store.usage(), { files: 2, bytes: 3 })
    })

    test('sweep measures age against the given now and removes only expired files', async (t) => {
      const store = await backend.open(t)
      const stored = await store.put(newFile(newId()), chunksOf('x'), 10)
      assert.equal(await store.sweep(DAY_MS, Date.now() + DAY_MS - 60_000), 0)
      assert.ok(await store.get(stored.storageSessionId, stored.id))
      assert.equal(await store.sweep(DAY_MS, Date.now() + DAY_MS + 60_000), 1)
      assert.equal(await store.get(stored.storageSessionId, stored.id), null)
      assert.equal(await store.sweep(DAY_MS, Date.now() + DAY_MS + 60_000), 0)
    })

    test('sweep leaves a fresh uncommitted write alone and the writer still commits after it', async (t) => {
      const store = await backend.open(t)
      const writer = await store.create(newFile(newId()), 100)
      await writer.write(Buffer.from('in flight'))
      assert.equal(await store.sweep(DAY_MS), 0)
      const file = await writer.commit()
      assert.equal((await readAll((await store.open(file.storageSessionId, file.id))!.stream)).toString(), 'in flight')
    })
  })
}
