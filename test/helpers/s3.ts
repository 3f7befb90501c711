import { mkdtemp, rm } from 'node:fs/promises'
import os from 'node:os'
import path from 'node:path'
import { CreateBucketCommand } from '@aws-sdk/client-s3'
import S3rver from 's3rver'
import { createS3Client, type S3Settings } from '../../src/storage/s3-file-store.ts'

export const S3_BUCKET = 'warden-test'

/** The environment a Warden server needs to use the bucket of `s3` (STORAGE=s3). */
export function s3Env (s3: RunningS3): Record<string, string> {
  return {
    STORAGE: 's3',
    S3_ENDPOINT: s3.endpoint,
    S3_REGION: 'us-east-1',
    S3_BUCKET,
    S3_ACCESS_KEY_ID: 'S3RVER',
    S3_SECRET_ACCESS_KEY: 'S3RVER',
    S3_FORCE_PATH_STYLE: 'true',
  }
}

export interface RunningS3 {
  endpoint: string
  settings: S3Settings
  directory: string
  /** stop answering (the port closes); `start` brings the same bucket back on the same port */
  stop (): Promise<void>
  start (): Promise<void>
}

/**
 * s3rver (an S3 implementation on the file system) on a free loopback port with one bucket, closed in
 * `t.after`. Multipart uploads, listings and deletes are S3's; nothing is mocked in Warden's client.
 */
export async function startS3 (t: { after (fn: () => Promise<void>): void }, prefix = 'warden/'): Promise<RunningS3> {
  const directory = await mkdtemp(path.join(os.tmpdir(), 'warden-s3-'))
  let port = 0
  let server: S3rver | null = null
  const start = async () => {
    const instance = new S3rver({ port, address: '127.0.0.1', directory, silent: true })
    ;({ port } = await instance.run())
    server = instance
  }
  const stop = async () => {
    const running = server
    server = null
    // S3 gone at once, as when its host dies: the connections in flight are cut, not waited for
    running?.httpServer?.closeAllConnections()
    await running?.close()
  }
  await start()
  const endpoint = `http://127.0.0.1:${port}`
  const settings: S3Settings = { endpoint, region: 'us-east-1', bucket: S3_BUCKET, accessKeyId: 'S3RVER', secretAccessKey: 'S3RVER', forcePathStyle: true, prefix }
  const client = createS3Client(settings)
  await client.send(new CreateBucketCommand({ Bucket: S3_BUCKET }))
  client.destroy()
  t.after(async () => {
    await stop()
    await rm(directory, { recursive: true, force: true })
  })
  return { endpoint, settings, directory, stop, start }
}
