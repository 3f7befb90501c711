import assert from 'node:assert/strict'
import { createHash, randomBytes } from 'node:crypto'
import { describe, test } from 'node:test'
import { GetObjectCommand, ListObjectsV2Command } from '@aws-sdk/client-s3'
import { createS3Client } from '../../src/storage/s3-file-store.ts'
import { startS3, s3Env, S3_BUCKET, type RunningS3 } from '../helpers/s3.ts'
import { api, availableDrivers, exec, startServer, suiteContext, uploadFile, type RunningServer } from '../helpers/server.ts'

/**
 * STORAGE=s3 end to end: the real server with its files in a bucket (s3rver on loopback), and what a
 * client sees when that bucket stops answering: a 503 storage_unavailable, never a file stored in part.
 */

const sha256 = (bytes: Uint8Array) => createHash('sha256').update(bytes).digest('hex')

/** Every committed file in the bucket (a `.json`) with the size it declares and the size of its bytes. */
async function bucketFiles (s3: RunningS3): Promise<Array<{ key: string, declaredBytes: number, storedBytes: number | null }>> {
  const client = createS3Client(s3.settings)
  try {
    const listed = await client.send(new ListObjectsV2Command({ Bucket: S3_BUCKET, Prefix: 'warden/files/' }))
    const sizes = new Map((listed.Contents ?? []).map((object) => [object.Key ?? '', object.Size ?? 0]))
    const files = []
    for (const key of sizes.keys()) {
      if (!key.endsWith('.json')) continue
      const metadata = JSON.parse(await (await client.send(new GetObjectCommand({ Bucket: S3_BUCKET, Key: key }))).Body!.transformToString()) as { size: number }
      files.push({ key, declaredBytes: metadata.size, storedBytes: sizes.get(key.replace(/\.json$/, '.data')) ?? null })
    }
    return files
  } finally {
    client.destroy()
  }
}

async function assertNoPartialFile (s3: RunningS3): Promise<void> {
  for (const file of await bucketFiles(s3)) assert.equal(file.storedBytes, file.declaredBytes, `${file.key}: metadata and bytes disagree`)
}

/** A request body that sends `firstBytes`, then waits for `cut` before sending the rest. */
function bodyCutAfter (firstBytes: Uint8Array, restBytes: Uint8Array, cut: Promise<void>): ReadableStream<Uint8Array> {
  let step = 0
  return new ReadableStream({
    async pull (controller) {
      if (step === 0) controller.enqueue(firstBytes)
      else if (step === 1) { await cut; controller.enqueue(restBytes) } else controller.close()
      step++
    },
  })
}

for (const driver of availableDrivers()) {
  describe(`STORAGE=s3 on ${driver}`, () => {
    const t = suiteContext()
    let s3: RunningS3
    let server: RunningServer

    test('start s3rver and a server on its bucket', async () => {
      s3 = await startS3(t)
      server = await startServer(t, { driver, env: s3Env(s3) })
    })

    test('an upload, an execution that reads it and writes an output, and both downloads go through the bucket', async () => {
      const bytes = randomBytes(7 * 1024 * 1024 + 3) // past one multipart part
      const input = await uploadFile(server, 'blob.bin', bytes, 'user-1')
      const ran = await exec(server, {
        lang: 'py',
        code: 'import hashlib; data = open("blob.bin", "rb").read(); print(hashlib.sha256(data).hexdigest()); open("out.bin", "wb").write(data[::-1])',
        files: [{ id: input.fileId, storage_session_id: input.sessionId, name: 'blob.bin' }],
      })
      assert.equal(ran.status, 200, JSON.stringify(ran.body))
      assert.equal(ran.body.stdout, `${sha256(bytes)}\n`)
      const output = (ran.body.files as Array<{ id: string, name: string, storage_session_id: string }>).find((file) => file.name === 'out.bin')
      assert.ok(output, JSON.stringify(ran.body.files))

      const downloaded = await api(server, `/download/${input.sessionId}/${input.fileId}`)
      assert.equal(downloaded.status, 200)
      assert.equal(sha256(new Uint8Array(await downloaded.arrayBuffer())), sha256(bytes))
      const generated = await api(server, `/download/${output.storage_session_id}/${output.id}`)
      assert.equal(generated.status, 200)
      assert.equal(sha256(new Uint8Array(await generated.arrayBuffer())), sha256(Buffer.from(bytes).reverse()))

      const keys = (await bucketFiles(s3)).map((file) => file.key)
      assert.ok(keys.includes(`warden/files/${input.sessionId}/${input.fileId}.json`), keys.join(' '))
      assert.ok(keys.includes(`warden/files/${output.storage_session_id}/${output.id}.json`), keys.join(' '))
      await assertNoPartialFile(s3)
    })

    test('with the bucket away an upload and a download answer 503 storage_unavailable in JSON; both work once it is back', async () => {
      const kept = await uploadFile(server, 'kept.txt', 'kept', 'user-1')
      await s3.stop()
      try {
        const form = new FormData()
        form.append('file', new Blob(['lost']), 'lost.txt')
        const upload = await api(server, '/upload', { method: 'POST', body: form })
        assert.equal(upload.status, 503)
        assert.equal((await upload.json() as { error: string }).error, 'storage_unavailable')
        const download = await api(server, `/download/${kept.sessionId}/${kept.fileId}`)
        assert.equal(download.status, 503)
        const body = await download.json() as { error: string, message: string }
        assert.equal(body.error, 'storage_unavailable')
        assert.match(body.message, /storage/)
      } finally {
        await s3.start()
      }
      const download = await api(server, `/download/${kept.sessionId}/${kept.fileId}`)
      assert.equal(download.status, 200)
      assert.equal(await download.text(), 'kept')
      await uploadFile(server, 'after.txt', 'after', 'user-1')
      await assertNoPartialFile(s3)
    })

    test('a bucket that goes away in the middle of an upload leaves no file, whole or in part', async () => {
      const boundary = 'warden-cut-upload'
      const head = Buffer.from(`--${boundary}\r\ncontent-disposition: form-data; name="file"; filename="big.bin"\r\ncontent-type: application/octet-stream\r\n\r\n`)
      const first = Buffer.concat([head, randomBytes(12 * 1024 * 1024)])
      const rest = Buffer.concat([randomBytes(4 * 1024 * 1024), Buffer.from(`\r\n--${boundary}--\r\n`)])
      let cut!: () => void
      const cutDone = new Promise<void>((resolve) => { cut = resolve })
      const before = (await bucketFiles(s3)).length
      const response = api(server, '/upload', {
        method: 'POST',
        headers: { 'content-type': `multipart/form-data; boundary=${boundary}` },
        body: bodyCutAfter(first, rest, cutDone),
        duplex: 'half',
      } as RequestInit)
      // the first 12 MiB are in flight to S3 (two parts of five) by the time it is cut
      await new Promise((resolve) => setTimeout(resolve, 1_500))
      await s3.stop()
      cut()
      const answer = await response.then(async (res) => ({ status: res.status, body: await res.json() as { error: string } }), (error: unknown) => ({ status: 0, body: { error: String(error) } }))
      await s3.start()
      // the server answers 503 unless it already closed the connection on the failed body; either way no file
      if (answer.status !== 0) assert.deepEqual([answer.status, answer.body.error], [503, 'storage_unavailable'])
      assert.equal((await bucketFiles(s3)).length, before)
      await assertNoPartialFile(s3)
    })
  })
}
