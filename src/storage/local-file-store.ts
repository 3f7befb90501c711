import fs from 'node:fs/promises'
import type { FileHandle } from 'node:fs/promises'
import path from 'node:path'
import { syncDir, writeDurably } from './durable-fs.ts'
import { FileTooLargeError } from './file-store.ts'
import type { FileStore, FileWriter, NewFile, StorageLog, StoredFile } from './file-store.ts'
import { isId, newId } from './ids.ts'
import { byCreation, parseMetadata, pendingMetadata, putThrough, toStoredFile, type Metadata } from './metadata.ts'

/**
 * Layout under DATA_DIR (one Warden process per directory):
 *   files/<storageSessionId>/<fileId>.data  the bytes
 *   files/<storageSessionId>/<fileId>.json  the metadata; its mtime is lastUsedAt, so a use is a utimes
 *   tmp/<random>                     files being written; emptied on every start
 * A file exists for readers once its `.json` exists. Both parts are written to tmp/, fsynced and
 * renamed into place (bytes first, metadata last, the directory fsynced after each), so a crash
 * leaves at worst a `.data` without `.json`, which the next start deletes (DESIGN.md "Sessions and
 * files": nothing acknowledged is lost, nothing half-written is visible).
 */
export interface LocalFileStore extends FileStore {
  readonly dataDir: string
}

const DIR_MODE = 0o700
const FILE_MODE = 0o600
const DATA = '.data'
const META = '.json'

const silentLog: StorageLog = { info () {}, warn () {} }

/**
 * Open (creating if needed) the store under `dataDir` and recover from a crash: empties `tmp/` and
 * deletes every `.data` without `.json` and every `.json` without `.data`. Only one process may use
 * a `dataDir`, since recovery removes whatever another process is writing.
 */
export async function openLocalFileStore (dataDir: string, log: StorageLog = silentLog): Promise<LocalFileStore> {
  const root = path.resolve(dataDir)
  await fs.mkdir(path.join(root, 'files'), { recursive: true, mode: DIR_MODE })
  await fs.mkdir(path.join(root, 'tmp'), { recursive: true, mode: DIR_MODE })
  const store = new DiskFileStore(root, log)
  await store.recover()
  return store
}

class DiskFileStore implements LocalFileStore {
  readonly #filesDir: string
  readonly #tmpDir: string

  constructor (readonly dataDir: string, private readonly log: StorageLog) {
    this.#filesDir = path.join(dataDir, 'files')
    this.#tmpDir = path.join(dataDir, 'tmp')
  }

  async create (file: NewFile, maxBytes: number): Promise<FileWriter> {
    const base = pendingMetadata(file, maxBytes)
    const tmpPath = path.join(this.#tmpDir, newId())
    const handle = await fs.open(tmpPath, 'wx', FILE_MODE)
    return new DiskFileWriter(handle, tmpPath, maxBytes, (size) =>
      this.#install(tmpPath, { ...base, size, createdAt: new Date().toISOString() }))
  }

  async put (file: NewFile, source: AsyncIterable<Uint8Array>, maxBytes: number): Promise<StoredFile> {
    return await putThrough(await this.create(file, maxBytes), source)
  }

  async get (storageSessionId: string, fileId: string): Promise<StoredFile | null> {
    if (!isId(storageSessionId) || !isId(fileId)) return null
    return await this.#read(storageSessionId, fileId)
  }

  async open (storageSessionId: string, fileId: string): Promise<{ file: StoredFile, stream: NodeJS.ReadableStream } | null> {
    const file = await this.get(storageSessionId, fileId)
    if (file === null) return null
    let handle: FileHandle
    try {
      handle = await fs.open(this.#path(storageSessionId, fileId, DATA), 'r')
    } catch (err) {
      if (!isAbsent(err)) throw err
      this.log.warn({ storageSessionId, fileId }, 'stored file has metadata but no data')
      return null
    }
    const usedAt = new Date()
    try {
      await this.#touchAt(storageSessionId, fileId, usedAt)
    } catch (err) {
      await handle.close()
      throw err
    }
    return { file: { ...file, lastUsedAt: usedAt.toISOString() }, stream: handle.createReadStream() }
  }

  async touch (storageSessionId: string, fileId: string): Promise<void> {
    if (!isId(storageSessionId) || !isId(fileId)) return
    await this.#touchAt(storageSessionId, fileId, new Date())
  }

  async list (storageSessionId: string): Promise<StoredFile[]> {
    if (!isId(storageSessionId)) return []
    const files: StoredFile[] = []
    for (const entry of await readdirOrEmpty(path.join(this.#filesDir, storageSessionId))) {
      const fileId = idOf(entry, META)
      const file = fileId === null ? null : await this.#read(storageSessionId, fileId)
      if (file !== null) files.push(file)
    }
    return files.sort(byCreation)
  }

  async delete (storageSessionId: string, fileId: string): Promise<boolean> {
    if (!isId(storageSessionId) || !isId(fileId)) return false
    try {
      // metadata first: the file disappears for readers at once; a crash leaves an orphan `.data`
      await fs.unlink(this.#path(storageSessionId, fileId, META))
    } catch (err) {
      if (isAbsent(err)) return false
      throw err
    }
    await fs.rm(this.#path(storageSessionId, fileId, DATA), { force: true })
    return true
  }

  async sweep (ttlMs: number, now: number = Date.now()): Promise<number> {
    const isExpired = (mtimeMs: number) => now - mtimeMs > ttlMs
    let removed = 0
    for await (const session of await fs.opendir(this.#filesDir)) {
      if (!session.isDirectory() || !isId(session.name)) continue
      const dir = path.join(this.#filesDir, session.name)
      const entries = await readdirOrEmpty(dir)
      const names = new Set(entries)
      const present = new Set(entries)
      for (const entry of entries) {
        const fileId = idOf(entry, META)
        if (fileId !== null) {
          if (isExpired(await mtimeMsOf(path.join(dir, entry))) && await this.delete(session.name, fileId)) {
            removed++
            present.delete(entry)
            present.delete(fileId + DATA)
          }
          continue
        }
        // a `.data` alone is a commit in progress (renamed, metadata next) unless it is this old
        const dataId = idOf(entry, DATA)
        if (dataId !== null && !names.has(dataId + META) && isExpired(await mtimeMsOf(path.join(dir, entry)))) {
          await fs.rm(path.join(dir, entry), { force: true })
          present.delete(entry)
        }
      }
      if (present.size === 0) await removeEmptyDir(dir)
    }
    // a writer nobody committed or aborted (a caller's bug) must not hold disk forever
    for (const entry of await readdirOrEmpty(this.#tmpDir)) {
      const tmpPath = path.join(this.#tmpDir, entry)
      if (isExpired(await mtimeMsOf(tmpPath))) await fs.rm(tmpPath, { recursive: true, force: true })
    }
    return removed
  }

  async usage (): Promise<{ files: number, bytes: number }> {
    let files = 0
    let bytes = 0
    for await (const session of await fs.opendir(this.#filesDir)) {
      if (!session.isDirectory() || !isId(session.name)) continue
      const dir = path.join(this.#filesDir, session.name)
      const entries = new Set(await readdirOrEmpty(dir))
      for (const entry of entries) {
        const fileId = idOf(entry, DATA)
        if (fileId === null || !entries.has(fileId + META)) continue
        const size = await sizeOf(path.join(dir, entry))
        if (size === null) continue
        files++
        bytes += size
      }
    }
    return { files, bytes }
  }

  /** Undo what a crash left: see `openLocalFileStore`. */
  async recover (): Promise<void> {
    const tmpFiles = await fs.readdir(this.#tmpDir)
    for (const entry of tmpFiles) await fs.rm(path.join(this.#tmpDir, entry), { recursive: true, force: true })
    let orphans = 0
    for await (const session of await fs.opendir(this.#filesDir)) {
      if (!session.isDirectory() || !isId(session.name)) continue
      const dir = path.join(this.#filesDir, session.name)
      const entries = new Set(await readdirOrEmpty(dir))
      for (const entry of entries) {
        const dataId = idOf(entry, DATA)
        const metaId = idOf(entry, META)
        const isOrphan = (dataId !== null && !entries.has(dataId + META)) ||
          (metaId !== null && !entries.has(metaId + DATA))
        if (!isOrphan) continue
        await fs.rm(path.join(dir, entry), { force: true })
        orphans++
      }
    }
    if (tmpFiles.length > 0 || orphans > 0) {
      this.log.info({ tmpFiles: tmpFiles.length, orphans }, 'removed partial files left by an earlier run')
    }
  }

  /** Move the written bytes into place, then the metadata; returns the visible file. */
  async #install (tmpDataPath: string, metadata: Metadata): Promise<StoredFile> {
    const { sessionId: storageSessionId, id } = metadata
    const dataPath = this.#path(storageSessionId, id, DATA)
    const metaPath = this.#path(storageSessionId, id, META)
    const tmpMetaPath = path.join(this.#tmpDir, newId())
    await this.#renameIntoSession(tmpDataPath, dataPath, storageSessionId)
    try {
      await syncDir(path.dirname(dataPath))
      await writeDurably(tmpMetaPath, JSON.stringify(metadata))
      await this.#renameIntoSession(tmpMetaPath, metaPath, storageSessionId)
      await syncDir(path.dirname(metaPath))
      return toStoredFile(metadata, (await fs.stat(metaPath)).mtimeMs)
    } catch (err) {
      await fs.rm(metaPath, { force: true })
      await fs.rm(dataPath, { force: true })
      await fs.rm(tmpMetaPath, { force: true })
      throw err
    }
  }

  async #renameIntoSession (from: string, to: string, storageSessionId: string): Promise<void> {
    const dir = path.join(this.#filesDir, storageSessionId)
    // sweep removes empty session directories: one may vanish between mkdir and rename, so retry
    for (let attempt = 1; ; attempt++) {
      const created = await fs.mkdir(dir, { recursive: true, mode: DIR_MODE })
      if (created !== undefined) await syncDir(this.#filesDir)
      try {
        await fs.rename(from, to)
        return
      } catch (err) {
        if (!isAbsent(err) || attempt === 3) throw err
      }
    }
  }

  async #read (storageSessionId: string, fileId: string): Promise<StoredFile | null> {
    let handle: FileHandle
    try {
      handle = await fs.open(this.#path(storageSessionId, fileId, META), 'r')
    } catch (err) {
      if (isAbsent(err)) return null
      throw err
    }
    let text: string
    let mtimeMs: number
    try {
      // one descriptor for both: the contents and the time belong to the same file
      text = await handle.readFile('utf8')
      mtimeMs = (await handle.stat()).mtimeMs
    } catch (err) {
      if (errorCode(err) !== 'EISDIR') throw err
      text = ''
      mtimeMs = 0
    } finally {
      await handle.close()
    }
    const metadata = parseMetadata(text, storageSessionId, fileId)
    if (metadata === null) {
      this.log.warn({ sessionId: storageSessionId, fileId }, 'ignoring a stored file with unreadable metadata')
      return null
    }
    return toStoredFile(metadata, mtimeMs)
  }

  async #touchAt (storageSessionId: string, fileId: string, at: Date): Promise<void> {
    try {
      await fs.utimes(this.#path(storageSessionId, fileId, META), at, at)
    } catch (err) {
      if (!isAbsent(err)) throw err
    }
  }

  /** Only ever called with ids that passed `isId`: they are path components. */
  #path (storageSessionId: string, fileId: string, suffix: string): string {
    return path.join(this.#filesDir, storageSessionId, fileId + suffix)
  }
}

/** Writes are serialised, so a caller that forgets to await still gets its bytes in order. */
class DiskFileWriter implements FileWriter {
  #bytesWritten = 0
  #isOpen = true
  #queue: Promise<unknown> = Promise.resolve()

  constructor (
    private readonly handle: FileHandle,
    private readonly tmpPath: string,
    private readonly maxBytes: number,
    private readonly install: (size: number) => Promise<StoredFile>
  ) {}

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
      try {
        await writeFully(this.handle, chunk)
      } catch (err) {
        await this.#discard()
        throw err
      }
      this.#bytesWritten += chunk.byteLength
    })
  }

  commit (): Promise<StoredFile> {
    return this.#serially(async () => {
      if (!this.#isOpen) throw new Error('The file writer is already closed.')
      this.#isOpen = false
      try {
        await this.handle.sync()
        await this.handle.close()
      } catch (err) {
        await this.handle.close().catch(() => {})
        await fs.rm(this.tmpPath, { force: true })
        throw err
      }
      try {
        return await this.install(this.#bytesWritten)
      } catch (err) {
        await fs.rm(this.tmpPath, { force: true })
        throw err
      }
    })
  }

  abort (): Promise<void> {
    return this.#serially(async () => {
      if (this.#isOpen) await this.#discard()
    })
  }

  async #discard (): Promise<void> {
    this.#isOpen = false
    await this.handle.close().catch(() => {})
    await fs.rm(this.tmpPath, { force: true })
  }

  #serially<T> (step: () => Promise<T>): Promise<T> {
    const run = this.#queue.then(step)
    this.#queue = run.catch(() => {})
    return run
  }
}

async function writeFully (handle: FileHandle, chunk: Uint8Array): Promise<void> {
  let offset = 0
  while (offset < chunk.byteLength) {
    const { bytesWritten } = await handle.write(chunk, offset, chunk.byteLength - offset)
    offset += bytesWritten
  }
}

/** `<id><suffix>` -> id, or null for anything else in a session directory. */
function idOf (entry: string, suffix: string): string | null {
  if (!entry.endsWith(suffix)) return null
  const id = entry.slice(0, -suffix.length)
  return isId(id) ? id : null
}

async function readdirOrEmpty (dir: string): Promise<string[]> {
  try {
    return await fs.readdir(dir)
  } catch (err) {
    if (isAbsent(err)) return []
    throw err
  }
}

/** mtime in epoch ms; +Infinity (never expired) for a file removed meanwhile. */
async function mtimeMsOf (filePath: string): Promise<number> {
  try {
    return (await fs.stat(filePath)).mtimeMs
  } catch (err) {
    if (isAbsent(err)) return Number.POSITIVE_INFINITY
    throw err
  }
}

async function sizeOf (filePath: string): Promise<number | null> {
  try {
    return (await fs.stat(filePath)).size
  } catch (err) {
    if (isAbsent(err)) return null
    throw err
  }
}

async function removeEmptyDir (dir: string): Promise<void> {
  try {
    await fs.rmdir(dir)
  } catch (err) {
    // a writer got there first (ENOTEMPTY/EEXIST) or another sweep did (ENOENT): both fine
    if (!['ENOTEMPTY', 'EEXIST', 'ENOENT'].includes(errorCode(err) ?? '')) throw err
  }
}

function errorCode (err: unknown): string | undefined {
  return typeof err === 'object' && err !== null && 'code' in err && typeof err.code === 'string' ? err.code : undefined
}

function isAbsent (err: unknown): boolean {
  const code = errorCode(err)
  return code === 'ENOENT' || code === 'ENOTDIR'
}
