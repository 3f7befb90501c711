import assert from 'node:assert/strict'
import { after, test } from 'node:test'
import { GetObjectCommand, HeadObjectCommand, PutObjectCommand } from '@aws-sdk/client-s3'
import { newId } from '../../../src/storage/ids.ts'
import { createS3Client, openS3FileStore, RECORD_USE_AFTER_MS } from '../../../src/storage/s3-file-store.ts'
import { S3_BUCKET, startS3 } from '../../helpers/s3.ts'

/**
 * What only the S3 store does (the contract both stores keep is file-stores.test.ts): a read rewrites the
 * metadata object only when the use it records is old. s3rver writes an object in place, so a download
 * racing another download's rewrite read half a metadata object: seen in test/e2e/cluster-faults.test.ts
 * as a stored file answered 404, and as 503 storage_unavailable while S3 was up.
 */

const cleanups: Array<() => Promise<void>> = []
after(async () => { for (const cleanup of cleanups) await cleanup() })

test('a download, an input read or a probe within RECORD_USE_AFTER_MS of the recorded use leaves the metadata object as it is; one after it records the use', async () => {
  assert.equal(RECORD_USE_AFTER_MS, 60_000, 'the default: a minute')
  const s3 = await startS3({ after: (fn) => { cleanups.push(fn) } })
  const prefix = `t-${newId()}/`
  const store = await openS3FileStore({ ...s3.settings, prefix })
  const client = createS3Client(s3.settings)
  cleanups.push(async () => { client.destroy() })
  const sessionId = newId()
  const stored = await store.put({ storageSessionId: sessionId, name: 'a.txt', kind: 'user', owner: { tenant: 't', user: 'u' } }, (async function * () { yield Buffer.from('bytes') })(), 100)
  const key = `${prefix}files/${sessionId}/${stored.id}.json`
  const metadataTag = async () => (await client.send(new HeadObjectCommand({ Bucket: S3_BUCKET, Key: key }))).ETag
  const written = await metadataTag()
  for (let use = 0; use < 3; use++) {
    const opened = await store.open(sessionId, stored.id)
    opened?.stream.resume()
    assert.equal(opened?.file.lastUsedAt, stored.lastUsedAt)
    await store.touch(sessionId, stored.id)
  }
  assert.equal(await metadataTag(), written, 'no rewrite')
  // the use recorded two minutes ago, as if the file had rested since
  const metadata = JSON.parse(await (await client.send(new GetObjectCommand({ Bucket: S3_BUCKET, Key: key }))).Body!.transformToString()) as Record<string, unknown>
  const rested = new Date(Date.now() - 2 * RECORD_USE_AFTER_MS).toISOString()
  await client.send(new PutObjectCommand({ Bucket: S3_BUCKET, Key: key, Body: JSON.stringify({ ...metadata, lastUsedAt: rested }) }))
  assert.equal((await store.get(sessionId, stored.id))?.lastUsedAt, rested)
  const opened = await store.open(sessionId, stored.id)
  opened?.stream.resume()
  assert.ok(opened !== null && opened.file.lastUsedAt > stored.lastUsedAt, 'the use is recorded')
  assert.equal((await store.get(sessionId, stored.id))?.lastUsedAt, opened.file.lastUsedAt)
})
