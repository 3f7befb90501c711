import { z } from 'zod'
import { WARDEN_ERRORS, WardenError } from '../errors.ts'
import { formatBytes } from '../units.ts'

/**
 * The store of uploaded and generated files, as the API and the execution pipeline use it. Local disk
 * (`local-file-store.ts`) is the embedded default; an object store can implement the same interface.
 * Files are addressed by (storageSessionId, fileId), both 21-char nanoids (`ids.ts`); names live in metadata.
 */

/** Who a file came from: `user`/`agent`/`skill` uploads (spec §3.4) or an execution's `output`. */
export const FILE_KINDS = ['user', 'agent', 'skill', 'output'] as const
export type FileKind = (typeof FILE_KINDS)[number]

/** Who a file (or workspace) belongs to: a tenant and a user of it (`*`: any user of the tenant). */
export const FileOwnerSchema = z.object({ tenant: z.string(), user: z.string() })
export type FileOwner = z.infer<typeof FileOwnerSchema>

export interface StoredFile {
  id: string
  storageSessionId: string
  /** Path under /mnt/data, validated by `validateFileName`; may contain `/`. */
  name: string
  size: number
  contentType: string
  kind: FileKind
  /** LibreChat's resource id (user, agent or skill id); not a nanoid (spec §5). */
  resourceId?: string
  /** Skill version (spec §3.4). */
  version?: number
  /** an infrastructure input (`read_only` on upload, spec §3.5): a run that changes it does not make it an output */
  readOnly?: boolean
  owner: FileOwner
  /** ISO 8601. */
  createdAt: string
  /** ISO 8601; drives retention and the freshness probe (spec §3.7). */
  lastUsedAt: string
}

export interface NewFile {
  storageSessionId: string
  name: string
  /** What the client declared; used only when the name's extension is unknown (`contentTypeFor`). */
  contentType?: string
  kind: FileKind
  resourceId?: string
  version?: number
  readOnly?: boolean
  owner: FileOwner
}

/** One file being written. Call `commit` or `abort` exactly once; until `commit` nobody sees it. */
export interface FileWriter {
  readonly bytesWritten: number
  /** Resolves once the chunk is handed to the OS: await it (backpressure). */
  write (chunk: Uint8Array): Promise<void>
  /** Make the file durable and visible; resolves with its metadata. */
  commit (): Promise<StoredFile>
  /** Drop everything written; idempotent, and a no-op after `commit`. */
  abort (): Promise<void>
}

/** The subset of a pino logger the store uses. */
export interface StorageLog {
  info (fields: object, message: string): void
  warn (fields: object, message: string): void
}

export interface FileStore {
  /**
   * Start writing a new file; nothing is visible until commit(). write() rejects with
   * FileTooLargeError once more than `maxBytes` would be written (and the writer is then aborted).
   * Rejects with a WardenError (invalid id, file name or kind) for a bad session id, name or kind.
   */
  create (file: NewFile, maxBytes: number): Promise<FileWriter>
  /** Stream a whole source into a new file (uploads); on any failure nothing is left behind. */
  put (file: NewFile, source: AsyncIterable<Uint8Array>, maxBytes: number): Promise<StoredFile>
  /** Metadata only; does not count as a use. Null for an unknown, expired or malformed id. */
  get (storageSessionId: string, fileId: string): Promise<StoredFile | null>
  /** Open for reading and mark as used now. The caller reads or destroys the stream. */
  open (storageSessionId: string, fileId: string): Promise<{ file: StoredFile, stream: NodeJS.ReadableStream } | null>
  /** Mark as used now (extends retention); a no-op for an unknown file. */
  touch (storageSessionId: string, fileId: string): Promise<void>
  /** The session's files, oldest first; [] for an unknown session. */
  list (storageSessionId: string): Promise<StoredFile[]>
  /** True if the file existed and is now gone. */
  delete (storageSessionId: string, fileId: string): Promise<boolean>
  /** Remove files whose last use is older than ttlMs (at `now`, epoch ms); returns how many. */
  sweep (ttlMs: number, now?: number): Promise<number>
  /** Committed files and the bytes of their contents. */
  usage (): Promise<{ files: number, bytes: number }>
}

/** A file over the size it may have (an upload, an output): the code is the one the error boundary maps to 413. */
export class FileTooLargeError extends WardenError {
  constructor (readonly limitBytes: number) {
    super(WARDEN_ERRORS.fileTooLarge, `The file is larger than the limit of ${formatBytes(limitBytes)}.`, { limitBytes })
  }
}
