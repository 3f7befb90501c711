import { Agent } from 'node:http'
import { Agent as HttpsAgent } from 'node:https'
import { PassThrough, type Readable } from 'node:stream'
import {
  DeleteObjectCommand, GetObjectCommand, HeadBucketCommand, ListObjectsV2Command, PutObjectCommand, S3Client,
  type ListObjectsV2CommandOutput,
} from '@aws-sdk/client-s3'
import { Upload } from '@aws-sdk/lib-storage'
import { z } from 'zod'
import { WARDEN_ERRORS, WardenError } from '../errors.ts'
import { FileTooLargeError } from './file-store.ts'
import type { FileStore, FileWriter, NewFile, StorageLog, StoredFile } from './file-store.ts'
import { isId } from './ids.ts'
import { byCreation, MetadataSchema, parseMetadata, pendingMetadata, putThrough, toStoredFile, type Metadata } from './metadata.ts'

/**
 * Stored files in an S3-compatible bucket (AWS S3, MinIO, R2, Ceph RGW, Garage), shared by every replica:
 *   <prefix>files/<storageSessionId>/<fileId>.data  the bytes (a multipart upload past one part)
 *   <prefix>files/<storageSessionId>/<fileId>.json  the metadata and lastUsedAt; rewritten by a use
 * As on disk, a file exists for readers once its `.json` exists, and that is written only after the bytes
 * are complete: an upload cut short (S3 down, the replica killed) leaves at worst an incomplete multipart
 * upload or a `.data` without `.json`, never a file that downloads truncated. The metadata stays beside the
 * bytes, not in Redis: losing Redis must not lose a file.
 */
export interface S3Settings {
  endpoint?: string
  region: string
  bucket: string
  accessKeyId?: string
  secretAccessKey?: string
  forcePathStyle: boolean
  /** keys start with this (`warden/`): one bucket can hold several deployments, and a lifecycle rule a prefix */
  prefix: string
}

const DATA = '.data'
const META = '.json'
/** S3's smallest part; the uploader buffers at most QUEUE_SIZE parts per file, so memory stays bounded */
const PART_BYTES = 5 * 1024 * 1024
const QUEUE_SIZE = 2
/** a request to an S3 that does not answer fails in this long rather than hanging the request */
const CONNECT_TIMEOUT_MS = 3_000
const REQUEST_TIMEOUT_MS = 60_000

/**
 * A use (a download, an execution's input, a freshness probe) rewrites the metadata object only when the
 * use it records is older than this. A PUT per read would turn a hot file's reads into as many writes (S3
 * bills a PUT as about twelve GETs), and S3 servers that write an object in place (s3rver does) let a read
 * racing that rewrite see half a metadata object: a file that exists answered 404 or 503. Retention
 * (FILE_TTL, 24 h) and LibreChat's freshness check (23 h) need no finer time than this.
 */
export const RECORD_USE_AFTER_MS = 60_000

const StoredMetadataSchema = MetadataSchema.extend({ lastUsedAt: z.iso.datetime() })
const silentLog: StorageLog = { info () {}, warn () {} }

export function createS3Client (settings: S3Settings): S3Client {
  const agentOptions = { keepAlive: true, maxSockets: 64 }
  return new S3Client({
    ...(settings.endpoint === undefined ? {} : { endpoint: settings.endpoint }),
    region: settings.region,
    forcePathStyle: settings.forcePathStyle,
    ...(settings.accessKeyId !== undefined && settings.secretAccessKey !== undefined
      ? { credentials: { accessKeyId: settings.accessKeyId, secretAccessKey: settings.secretAccessKey } }
      : {}),
    // one retry: an S3 that is down answers 503 storage_unavailable in seconds, not after a backoff series
    maxAttempts: 2,
    // checksums only where S3 requires them: several S3-compatible servers refuse the aws-chunked encoding
    // that the SDK's default (a CRC on every upload) sends
    requestChecksumCalculation: 'WHEN_REQUIRED',
    responseChecksumValidation: 'WHEN_REQUIRED',
    requestHandler: {
      connectionTimeout: CONNECT_TIMEOUT_MS,
      requestTimeout: REQUEST_TIMEOUT_MS,
      httpAgent: new Agent(agentOptions),
      httpsAgent: new HttpsAgent(agentOptions),
    },
  })
}

/** Open the store on `settings.bucket`; fails with storage_unavailable when the bucket cannot be reached. */
export async function openS3FileStore (settings: S3Settings, log: StorageLog = silentLog, client = createS3Client(settings), recordUseAfterMs = RECORD_USE_AFTER_MS): Promise<FileStore> {
  await s3Call(() => client.send(new HeadBucketCommand({ Bucket: settings.bucket })))
  return new S3FileStore(client, settings, log, recordUseAfterMs)
}

class S3FileStore implements FileStore {
  constructor (private readonly client: S3Client, private readonly settings: S3Settings, private readonly log: StorageLog, private readonly recordUseAfterMs: number) {}

  async create (file: NewFile, maxBytes: number): Promise<FileWriter> {
    const base = pendingMetadata(file, maxBytes)
    return new S3FileWriter(this.client, this.settings.bucket, this.#key(base.sessionId, base.id, DATA), maxBytes, async (size) => {
      // one instant for both: the answer must be what a later get reads back
      const createdMs = Date.now()
      const metadata: Metadata = { ...base, size, createdAt: new Date(createdMs).toISOString() }
      try {
        await this.#writeMetadata(metadata, createdMs)
      } catch (err) {
        await this.#remove(this.#key(base.sessionId, base.id, DATA)).catch(() => {})
        throw err
      }
      return toStoredFile(metadata, createdMs)
    })
  }

  async put (file: NewFile, source: AsyncIterable<Uint8Array>, maxBytes: number): Promise<StoredFile> {
    return await putThrough(await this.create(file, maxBytes), source)
  }

  async get (storageSessionId: string, fileId: string): Promise<StoredFile | null> {
    if (!isId(storageSessionId) || !isId(fileId)) return null
    return (await this.#read(storageSessionId, fileId))?.file ?? null
  }

  async open (storageSessionId: string, fileId: string): Promise<{ file: StoredFile, stream: NodeJS.ReadableStream } | null> {
    const read = await this.#readFull(storageSessionId, fileId)
    if (read === null) return null
    const body = await s3Call(() => this.client.send(new GetObjectCommand({ Bucket: this.settings.bucket, Key: this.#key(storageSessionId, fileId, DATA) })), true)
    if (body === null) {
      this.log.warn({ storageSessionId, fileId }, 'stored file has metadata but no data')
      return null
    }
    const stream = body.Body as Readable
    // the bytes must be the whole file the metadata describes: a shorter object is never served as it
    if (body.ContentLength !== read.metadata.size) {
      stream.destroy()
      this.log.warn({ storageSessionId, fileId }, 'stored file\'s data does not match its metadata')
      return null
    }
    try {
      return { file: await this.#recordUse(read), stream }
    } catch (err) {
      stream.destroy()
      throw err
    }
  }

  async touch (storageSessionId: string, fileId: string): Promise<void> {
    const read = await this.#readFull(storageSessionId, fileId)
    if (read !== null) await this.#recordUse(read)
  }

  /** The file as of this use: its metadata rewritten only where the recorded use is RECORD_USE_AFTER_MS old. */
  async #recordUse (read: { file: StoredFile, metadata: Metadata }): Promise<StoredFile> {
    const usedAt = Date.now()
    if (usedAt - Date.parse(read.file.lastUsedAt) < this.recordUseAfterMs) return read.file
    await this.#writeMetadata(read.metadata, usedAt)
    return toStoredFile(read.metadata, usedAt)
  }

  async list (storageSessionId: string): Promise<StoredFile[]> {
    if (!isId(storageSessionId)) return []
    const files: StoredFile[] = []
    for await (const object of this.#objects(`${this.settings.prefix}files/${storageSessionId}/`)) {
      const fileId = idOf(object.name, META)
      const read = fileId === null ? null : await this.#read(storageSessionId, fileId)
      if (read !== null) files.push(read.file)
    }
    return files.sort(byCreation)
  }

  async delete (storageSessionId: string, fileId: string): Promise<boolean> {
    if (!isId(storageSessionId) || !isId(fileId)) return false
    if (await this.#read(storageSessionId, fileId) === null) return false
    // metadata first: the file disappears for readers at once; a failure in between leaves an orphan `.data`
    await this.#remove(this.#key(storageSessionId, fileId, META))
    await this.#remove(this.#key(storageSessionId, fileId, DATA))
    return true
  }

  async sweep (ttlMs: number, now: number = Date.now()): Promise<number> {
    // the metadata object's LastModified is its last use (a use rewrites it), so a sweep reads only listings
    const isExpired = (modifiedMs: number) => now - modifiedMs > ttlMs
    let removed = 0
    for (const session of await this.#sessions()) {
      for (const [fileId, parts] of session.files) {
        if (parts.meta !== undefined) {
          if (isExpired(parts.meta) && await this.delete(session.id, fileId)) removed++
        } else if (parts.data !== undefined && isExpired(parts.data)) {
          // bytes whose metadata was never written: an upload cut short between the two
          await this.#remove(this.#key(session.id, fileId, DATA))
        }
      }
    }
    return removed
  }

  async usage (): Promise<{ files: number, bytes: number }> {
    let files = 0
    let bytes = 0
    for (const session of await this.#sessions()) {
      for (const parts of session.files.values()) {
        if (parts.meta === undefined || parts.data === undefined) continue
        files++
        bytes += parts.dataBytes
      }
    }
    return { files, bytes }
  }

  /** Every session's files as listed: the LastModified of each part, and the size of the bytes. */
  async #sessions (): Promise<Array<{ id: string, files: Map<string, { meta?: number, data?: number, dataBytes: number }> }>> {
    const sessions = new Map<string, Map<string, { meta?: number, data?: number, dataBytes: number }>>()
    for await (const object of this.#objects(`${this.settings.prefix}files/`)) {
      const [sessionId, name] = object.name.split('/')
      if (sessionId === undefined || name === undefined || !isId(sessionId)) continue
      const metaId = idOf(name, META)
      const dataId = idOf(name, DATA)
      const fileId = metaId ?? dataId
      if (fileId === null) continue
      const files = sessions.get(sessionId) ?? new Map()
      sessions.set(sessionId, files)
      const parts = files.get(fileId) ?? { dataBytes: 0 }
      files.set(fileId, parts)
      if (metaId !== null) parts.meta = object.modifiedMs
      else {
        parts.data = object.modifiedMs
        parts.dataBytes = object.size
      }
    }
    return [...sessions].map(([id, files]) => ({ id, files }))
  }

  /** Objects under `prefix`, their names relative to it. */
  async * #objects (prefix: string): AsyncGenerator<{ name: string, size: number, modifiedMs: number }> {
    let token: string | undefined
    do {
      const page: ListObjectsV2CommandOutput = await s3Call(() => this.client.send(new ListObjectsV2Command({ Bucket: this.settings.bucket, Prefix: prefix, ContinuationToken: token })))
      for (const object of page.Contents ?? []) {
        if (object.Key === undefined) continue
        yield { name: object.Key.slice(prefix.length), size: object.Size ?? 0, modifiedMs: object.LastModified?.getTime() ?? 0 }
      }
      token = page.IsTruncated === true ? page.NextContinuationToken : undefined
    } while (token !== undefined)
  }

  async #read (storageSessionId: string, fileId: string): Promise<{ file: StoredFile, metadata: Metadata } | null> {
    const text = await s3Call(async () => {
      const object = await this.client.send(new GetObjectCommand({ Bucket: this.settings.bucket, Key: this.#key(storageSessionId, fileId, META) }))
      return await object.Body?.transformToString('utf8') ?? ''
    }, true)
    if (text === null) return null
    const metadata = parseMetadata(text, storageSessionId, fileId)
    const lastUsed = parseLastUsed(text)
    if (metadata === null || lastUsed === null) {
      this.log.warn({ sessionId: storageSessionId, fileId }, 'ignoring a stored file with unreadable metadata')
      return null
    }
    return { metadata, file: toStoredFile(metadata, lastUsed) }
  }

  async #readFull (storageSessionId: string, fileId: string): Promise<{ file: StoredFile, metadata: Metadata } | null> {
    if (!isId(storageSessionId) || !isId(fileId)) return null
    return await this.#read(storageSessionId, fileId)
  }

  async #writeMetadata (metadata: Metadata, lastUsedMs: number): Promise<void> {
    const body = JSON.stringify({ ...metadata, lastUsedAt: new Date(lastUsedMs).toISOString() })
    await s3Call(() => this.client.send(new PutObjectCommand({
      Bucket: this.settings.bucket, Key: this.#key(metadata.sessionId, metadata.id, META), Body: body, ContentType: 'application/json',
    })))
  }

  async #remove (key: string): Promise<void> {
    await s3Call(() => this.client.send(new DeleteObjectCommand({ Bucket: this.settings.bucket, Key: key })))
  }

  /** Only ever called with ids that passed `isId`. */
  #key (storageSessionId: string, fileId: string, suffix: string): string {
    return `${this.settings.prefix}files/${storageSessionId}/${fileId}${suffix}`
  }
}

/**
 * Streams into one object through lib-storage's multipart upload, started at once: a write resolves once
 * its chunk is taken (backpressure), and the uploader holds at most QUEUE_SIZE parts of PART_BYTES.
 */
class S3FileWriter implements FileWriter {
  #bytesWritten = 0
  #isOpen = true
  #queue: Promise<unknown> = Promise.resolve()
  readonly #body = new PassThrough({ highWaterMark: PART_BYTES })
  readonly #upload: Upload
  readonly #done: Promise<unknown>
  #failure: unknown = null

  constructor (client: S3Client, bucket: string, key: string, private readonly maxBytes: number, private readonly install: (size: number) => Promise<StoredFile>) {
    this.#upload = new Upload({ client, params: { Bucket: bucket, Key: key, Body: this.#body }, partSize: PART_BYTES, queueSize: QUEUE_SIZE, leavePartsOnError: false })
    this.#done = this.#upload.done()
    this.#done.catch((error: unknown) => { this.#failure = error; this.#body.destroy() })
  }

  get bytesWritten (): number {
    return this.#bytesWritten
  }

  write (chunk: Uint8Array): Promise<void> {
    return this.#serially(async () => {
      if (!this.#isOpen) throw new Error('The file writer is already closed.')
      if (!(chunk instanceof Uint8Array)) {
        await this.#discard()
        throw new TypeError('A file chunk must be a Uint8Array.')
      }
      if (this.#bytesWritten + chunk.byteLength > this.maxBytes) {
        await this.#discard()
        throw new FileTooLargeError(this.maxBytes)
      }
      if (this.#failure !== null) {
        await this.#discard()
        throw toStorageError(this.#failure)
      }
      this.#bytesWritten += chunk.byteLength
      if (!this.#body.write(chunk)) await this.#drained()
    })
  }

  commit (): Promise<StoredFile> {
    return this.#serially(async () => {
      if (!this.#isOpen) throw new Error('The file writer is already closed.')
      this.#isOpen = false
      this.#body.end()
      try {
        await this.#done
      } catch (error) {
        throw toStorageError(error)
      }
      return await this.install(this.#bytesWritten)
    })
  }

  abort (): Promise<void> {
    return this.#serially(async () => {
      if (this.#isOpen) await this.#discard()
    })
  }

  /** Resolves when the uploader took the buffered bytes; rejects as soon as the upload failed. */
  async #drained (): Promise<void> {
    await new Promise<void>((resolve, reject) => {
      const onDrain = () => { this.#body.off('close', onClose); resolve() }
      const onClose = () => { this.#body.off('drain', onDrain); reject(toStorageError(this.#failure ?? new Error('the upload stopped'))) }
      this.#body.once('drain', onDrain)
      this.#body.once('close', onClose)
    })
  }

  async #discard (): Promise<void> {
    this.#isOpen = false
    // an incomplete multipart upload is never an object: aborting it also frees its parts
    await this.#upload.abort().catch(() => {})
    this.#body.destroy()
    await this.#done.catch(() => {})
  }

  #serially<T> (step: () => Promise<T>): Promise<T> {
    const run = this.#queue.then(step)
    this.#queue = run.catch(() => {})
    return run
  }
}

function parseLastUsed (text: string): number | null {
  try {
    const parsed = StoredMetadataSchema.pick({ lastUsedAt: true }).safeParse(JSON.parse(text))
    return parsed.success ? Date.parse(parsed.data.lastUsedAt) : null
  } catch {
    return null
  }
}

/** `<id><suffix>` -> id, or null for anything else in a session's prefix. */
function idOf (name: string, suffix: string): string | null {
  if (!name.endsWith(suffix)) return null
  const id = name.slice(0, -suffix.length)
  return isId(id) ? id : null
}

/**
 * One S3 request; `absentIsNull`: a missing key answers null. Every other failure (no answer, a refusal, a
 * 5xx) is a storage_unavailable error: the request gets a 503 that says so, never a 500 or a hang.
 */
async function s3Call<T> (call: () => Promise<T>): Promise<T>
async function s3Call<T> (call: () => Promise<T>, absentIsNull: true): Promise<T | null>
async function s3Call<T> (call: () => Promise<T>, absentIsNull = false): Promise<T | null> {
  try {
    return await call()
  } catch (error) {
    if (absentIsNull && isAbsent(error)) return null
    throw toStorageError(error)
  }
}

function isAbsent (error: unknown): boolean {
  const status = (error as { $metadata?: { httpStatusCode?: number } }).$metadata?.httpStatusCode
  const name = (error as { name?: string }).name
  return status === 404 || name === 'NoSuchKey' || name === 'NotFound'
}

function toStorageError (error: unknown): unknown {
  if (error instanceof WardenError) return error
  return new WardenError(WARDEN_ERRORS.storageUnavailable, 'The file storage (S3) cannot be reached; retry in a moment.', {}, { cause: error })
}
