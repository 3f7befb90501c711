import { z } from 'zod'
import { WARDEN_ERRORS, WardenError } from '../errors.ts'
import { contentTypeFor } from './content-type.ts'
import { validateFileName } from './file-names.ts'
import { FILE_KINDS } from './file-store.ts'
import type { NewFile, StoredFile } from './file-store.ts'
import { ID_PATTERN, isId, newId } from './ids.ts'

/**
 * A stored file's metadata as every backend keeps it beside the bytes (a `.json` file on disk, an object in
 * a bucket): a StoredFile without lastUsedAt, which each backend keeps its own cheap way. The storage
 * session id is `sessionId`, as it has been since the first release: data written by earlier versions
 * stays readable.
 */
export const MetadataSchema = z.object({
  id: z.string().regex(ID_PATTERN),
  sessionId: z.string().regex(ID_PATTERN),
  // the name becomes a path in the jail: a tampered one must not get past the store
  name: z.string().refine((name) => validateFileName(name).ok),
  size: z.number().int().nonnegative(),
  contentType: z.string().min(1),
  kind: z.enum(FILE_KINDS),
  resourceId: z.string().optional(),
  version: z.number().optional(),
  readOnly: z.boolean().optional(),
  owner: z.object({ tenant: z.string(), user: z.string() }),
  createdAt: z.iso.datetime(),
})
export type Metadata = z.infer<typeof MetadataSchema>

/** What a new file's metadata holds before its bytes are written: everything but size and createdAt. */
export type PendingMetadata = Omit<Metadata, 'size' | 'createdAt'>

/**
 * Check a new file's request and give it its id: a WardenError (invalid id, file name or kind) for a bad
 * session id, name or kind, a RangeError for a negative `maxBytes` (a caller's bug).
 */
export function pendingMetadata (file: NewFile, maxBytes: number): PendingMetadata {
  if (!isId(file.storageSessionId)) throw new WardenError(WARDEN_ERRORS.invalidId, 'The session id is not a 21-character id.')
  const check = validateFileName(file.name)
  if (!check.ok) throw new WardenError(WARDEN_ERRORS.invalidFileName, check.reason)
  if (!FILE_KINDS.includes(file.kind)) throw new WardenError(WARDEN_ERRORS.invalidFileKind, `Unknown file kind: ${String(file.kind)}.`)
  if (!(maxBytes >= 0)) throw new RangeError('maxBytes must be a non-negative number')
  return {
    id: newId(),
    sessionId: file.storageSessionId,
    name: check.name,
    contentType: contentTypeFor(check.name, file.contentType),
    kind: file.kind,
    ...(file.resourceId !== undefined && { resourceId: file.resourceId }),
    ...(file.version !== undefined && { version: file.version }),
    ...(file.readOnly === true && { readOnly: true }),
    owner: { tenant: file.owner.tenant, user: file.owner.user },
  }
}

/** The metadata in `text` if it is well formed and names this file; null for anything else. */
export function parseMetadata (text: string, storageSessionId: string, fileId: string): Metadata | null {
  try {
    const parsed = MetadataSchema.safeParse(JSON.parse(text))
    return parsed.success && parsed.data.id === fileId && parsed.data.sessionId === storageSessionId ? parsed.data : null
  } catch {
    return null
  }
}

export function toStoredFile (metadata: Metadata, lastUsedMs: number): StoredFile {
  return {
    id: metadata.id,
    storageSessionId: metadata.sessionId,
    name: metadata.name,
    size: metadata.size,
    contentType: metadata.contentType,
    kind: metadata.kind,
    ...(metadata.resourceId !== undefined && { resourceId: metadata.resourceId }),
    ...(metadata.version !== undefined && { version: metadata.version }),
    ...(metadata.readOnly === true && { readOnly: true }),
    owner: { tenant: metadata.owner.tenant, user: metadata.owner.user },
    createdAt: metadata.createdAt,
    // utimes(Date) stores ...122.9999 ms for ...123: round, so a touch reads back as written
    lastUsedAt: new Date(Math.round(lastUsedMs)).toISOString(),
  }
}

/** Oldest first; ties by id, so a listing is stable. */
export function byCreation (a: StoredFile, b: StoredFile): number {
  if (a.createdAt !== b.createdAt) return a.createdAt < b.createdAt ? -1 : 1
  return a.id < b.id ? -1 : a.id > b.id ? 1 : 0
}

/** Everything a store's `put` is: a writer fed from the source, committed, or aborted on any failure. */
export async function putThrough (writer: { write (chunk: Uint8Array): Promise<void>, commit (): Promise<StoredFile>, abort (): Promise<void> }, source: AsyncIterable<Uint8Array>): Promise<StoredFile> {
  try {
    for await (const chunk of source) await writer.write(chunk)
    return await writer.commit()
  } catch (err) {
    await writer.abort()
    throw err
  }
}
