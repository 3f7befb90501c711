import assert from 'node:assert/strict'
import { Readable } from 'node:stream'
import { test } from 'node:test'
import { isWardenError, WARDEN_ERRORS } from '../../../src/errors.ts'
import { toWorkerInputs, type InputReads } from '../../../src/exec/inputs.ts'
import { newId } from '../../../src/storage/ids.ts'
import { MemoryFileStore } from '../../helpers/memory-store.ts'

/**
 * A worker reads its inputs from the store while its job is sent; when the store fails then, the run only
 * sees its job cut short. The failure is kept for the execution's answer: an S3 gone mid-stream was
 * answered 503 jail_unavailable ("the sandbox stopped") in test/e2e/cluster-faults.test.ts.
 */

async function drain (source: AsyncIterable<Uint8Array>): Promise<number> {
  let bytes = 0
  for await (const chunk of source) bytes += chunk.byteLength
  return bytes
}

async function storedInput (store: MemoryFileStore) {
  const file = await store.put({ storageSessionId: newId(), name: 'in.bin', kind: 'user', owner: { tenant: 't', user: 'u' } }, Readable.from([Buffer.from('12345')]), 100)
  return { ref: { id: file.id, storageSessionId: file.storageSessionId, name: 'in.bin' }, file }
}

test('an input read whole leaves no failure', async () => {
  const store = new MemoryFileStore()
  const reads: InputReads = { failure: null }
  const [input] = toWorkerInputs([await storedInput(store)], store, reads)
  assert.equal(await drain(input!.read()), 5)
  assert.equal(reads.failure, null)
})

test('the store failing mid-stream is kept as storage_unavailable; a file deleted since it was resolved as input not found', async () => {
  const store = new MemoryFileStore()
  const resolved = await storedInput(store)
  const reads: InputReads = { failure: null }
  store.open = async () => ({
    file: resolved.file,
    stream: new Readable({ read () { this.destroy(Object.assign(new Error('aborted'), { code: 'ECONNRESET' })) } }),
  })
  const [cut] = toWorkerInputs([resolved], store, reads)
  await assert.rejects(drain(cut!.read()))
  assert.ok(isWardenError(reads.failure, WARDEN_ERRORS.storageUnavailable), String(reads.failure))

  const gone: InputReads = { failure: null }
  store.open = async () => null
  const [deleted] = toWorkerInputs([resolved], store, gone)
  await assert.rejects(drain(deleted!.read()))
  assert.ok(isWardenError(gone.failure, WARDEN_ERRORS.inputNotFound), String(gone.failure))
})
