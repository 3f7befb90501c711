import { Readable } from 'node:stream'
import { WARDEN_ERRORS, WardenError } from '../../src/errors.ts'
import { contentTypeFor } from '../../src/storage/content-type.ts'
import { FILE_KINDS, FileTooLargeError, type FileStore, type FileWriter, type NewFile, type StoredFile } from '../../src/storage/file-store.ts'
import { validateFileName } from '../../src/storage/file-names.ts'
import { isId, newId } from '../../src/storage/ids.ts'

/**
 * A FileStore in memory for in-process route tests: the same contract as the disk store (validation,
 * nothing visible before commit, retention by last use), none of the disk.
 */
export class MemoryFileStore implements FileStore {
  readonly files = new Map<string, { file: StoredFile, bytes: Buffer }>()

  async create (file: NewFile, maxBytes: number): Promise<FileWriter> {
    if (!isId(file.storageSessionId)) throw new WardenError(WARDEN_ERRORS.invalidId, 'The session id is not a 21-character id.')
    const check = validateFileName(file.name)
    if (!check.ok) throw new WardenError(WARDEN_ERRORS.invalidFileName, check.reason)
    if (!FILE_KINDS.includes(file.kind)) throw new WardenError(WARDEN_ERRORS.invalidFileKind, `Unknown file kind: ${String(file.kind)}.`)
    const chunks: Buffer[] = []
    let bytesWritten = 0
    let state: 'open' | 'committed' | 'aborted' = 'open'
    const now = new Date().toISOString()
    const writer: FileWriter = {
      get bytesWritten () { return bytesWritten },
      write: async (chunk) => {
        if (state !== 'open') throw new Error('the writer is closed')
        if (bytesWritten + chunk.length > maxBytes) {
          state = 'aborted'
          throw new FileTooLargeError(maxBytes)
        }
        chunks.push(Buffer.from(chunk))
        bytesWritten += chunk.length
      },
      commit: async () => {
        if (state !== 'open') throw new Error('the writer is closed')
        state = 'committed'
        const stored: StoredFile = {
          id: newId(),
          storageSessionId: file.storageSessionId,
          name: check.name,
          size: bytesWritten,
          contentType: contentTypeFor(check.name, file.contentType),
          kind: file.kind,
          ...(file.resourceId !== undefined && { resourceId: file.resourceId }),
          ...(file.version !== undefined && { version: file.version }),
          ...(file.readOnly === true && { readOnly: true }),
          owner: { ...file.owner },
          createdAt: now,
          lastUsedAt: now,
        }
        this.files.set(key(stored.storageSessionId, stored.id), { file: stored, bytes: Buffer.concat(chunks) })
        return stored
      },
      abort: async () => { if (state === 'open') state = 'aborted' },
    }
    return writer
  }

  async put (file: NewFile, source: AsyncIterable<Uint8Array>, maxBytes: number): Promise<StoredFile> {
    const writer = await this.create(file, maxBytes)
    try {
      for await (const chunk of source) await writer.write(chunk)
      return await writer.commit()
    } catch (error) {
      await writer.abort()
      throw error
    }
  }

  async get (storageSessionId: string, fileId: string): Promise<StoredFile | null> {
    return this.files.get(key(storageSessionId, fileId))?.file ?? null
  }

  async open (storageSessionId: string, fileId: string): Promise<{ file: StoredFile, stream: NodeJS.ReadableStream } | null> {
    const entry = this.files.get(key(storageSessionId, fileId))
    if (entry === undefined) return null
    entry.file = { ...entry.file, lastUsedAt: new Date().toISOString() }
    return { file: entry.file, stream: Readable.from([entry.bytes]) }
  }

  async touch (storageSessionId: string, fileId: string): Promise<void> {
    const entry = this.files.get(key(storageSessionId, fileId))
    if (entry !== undefined) entry.file = { ...entry.file, lastUsedAt: new Date().toISOString() }
  }

  async list (storageSessionId: string): Promise<StoredFile[]> {
    return [...this.files.values()].map((entry) => entry.file).filter((file) => file.storageSessionId === storageSessionId)
  }

  async delete (storageSessionId: string, fileId: string): Promise<boolean> {
    return this.files.delete(key(storageSessionId, fileId))
  }

  async sweep (ttlMs: number, now = Date.now()): Promise<number> {
    let removed = 0
    for (const [id, entry] of this.files) {
      if (now - Date.parse(entry.file.lastUsedAt) > ttlMs) {
        this.files.delete(id)
        removed++
      }
    }
    return removed
  }

  async usage (): Promise<{ files: number, bytes: number }> {
    return { files: this.files.size, bytes: [...this.files.values()].reduce((sum, entry) => sum + entry.bytes.length, 0) }
  }
}

function key (storageSessionId: string, fileId: string): string {
  return `${storageSessionId}/${fileId}`
}
