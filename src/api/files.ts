import type { FastifyPluginAsync, FastifyReply, FastifyRequest } from 'fastify'
import type { ZodTypeProvider } from 'fastify-type-provider-zod'
import { z } from 'zod'
import { canAccess } from '../auth/identity.ts'
import { errors } from '../errors.ts'
import type { Metrics } from '../metrics.ts'
import type { FileStore, StoredFile } from '../storage/file-store.ts'
import { basename } from '../storage/file-names.ts'
import { isId } from '../storage/ids.ts'
import { requestIdentity, userFromScope } from './identity.ts'
import { ErrorSchema, FileScopeQuery, SessionFileParamsSchema } from './schemas/common.ts'
import { DeleteResponse, ListQuery, ObjectInfo } from './schemas/files.ts'

export interface FileRouteDeps { store: FileStore, metrics: Metrics }

function notFound (storageSessionId: string, fileId: string) {
  return errors.fileNotFound(`File ${storageSessionId}/${fileId} was not found; it may have expired.`)
}

/**
 * The file, if it exists and the request's identity may use it. Another user's file, and an id that
 * cannot exist (not a 21-character id), are "not found" like an unknown one: clients read a 404 as
 * "gone, upload again".
 */
async function accessibleFile (store: FileStore, request: FastifyRequest, storageSessionId: string, fileId: string): Promise<StoredFile> {
  if (!isId(storageSessionId) || !isId(fileId)) throw notFound(storageSessionId, fileId)
  const file = await store.get(storageSessionId, fileId)
  if (file === null || !canAccess(scopedIdentity(request), file)) throw notFound(storageSessionId, fileId)
  return file
}

function scopedIdentity (request: FastifyRequest) {
  return requestIdentity(request, userFromScope(request.query as { kind?: string, id?: string }))
}

function etag (file: StoredFile): string {
  return `"${file.id}-${file.size}"`
}

/** RFC 6266: an ASCII fallback plus the exact UTF-8 name, so any name is safe in the header. */
export function contentDisposition (name: string): string {
  const fallback = name.replace(/[^\x20-\x7e]|["\\%;]/g, '_')
  // RFC 8187 attr-chars: encodeURIComponent leaves ' ( ) * ! unencoded, which strict parsers refuse
  const encoded = encodeURIComponent(name).replace(/['()*!]/g, (ch) => `%${ch.charCodeAt(0).toString(16).toUpperCase()}`)
  return `attachment; filename="${fallback}"; filename*=UTF-8''${encoded}`
}

export const fileRoutes: FastifyPluginAsync<FileRouteDeps> = async (app, { store, metrics }) => {
  const api = app.withTypeProvider<ZodTypeProvider>()

  api.get('/download/:session_id/:file_id', {
    schema: { summary: 'Download a stored file', params: SessionFileParamsSchema, querystring: FileScopeQuery, response: { '4xx': ErrorSchema } },
  }, async (request, reply) => {
    const { session_id: storageSessionId, file_id: fileId } = request.params
    await accessibleFile(store, request, storageSessionId, fileId)
    const opened = await store.open(storageSessionId, fileId)
    if (opened === null) throw notFound(storageSessionId, fileId)
    metrics.recordTransfer('download', opened.file.size)
    return sendFile(reply, opened.file, opened.stream)
  })

  const objectInfo = {
    schema: {
      summary: 'Freshness probe: when a stored file was last used',
      params: SessionFileParamsSchema,
      querystring: FileScopeQuery,
      response: { 200: ObjectInfo, '4xx': ErrorSchema },
    },
  }
  api.get('/sessions/:session_id/objects/:file_id', objectInfo, async (request) => {
    const { session_id: storageSessionId, file_id: fileId } = request.params
    await accessibleFile(store, request, storageSessionId, fileId)
    // a probe means LibreChat is about to use the file: it counts as use for retention
    await store.touch(storageSessionId, fileId)
    const file = await store.get(storageSessionId, fileId)
    if (file === null) throw notFound(storageSessionId, fileId)
    return {
      name: `${file.storageSessionId}/${file.id}`,
      originalFilename: file.name,
      size: file.size,
      contentType: file.contentType,
      lastModified: file.lastUsedAt,
      etag: etag(file),
    }
  })

  api.get('/files/:session_id', {
    schema: {
      summary: 'List a session\'s files (detail=simple|summary|full|normalized)',
      params: SessionFileParamsSchema.pick({ session_id: true }),
      querystring: ListQuery,
      response: { 200: z.array(z.unknown()), '4xx': ErrorSchema },
    },
  }, async (request) => {
    const storageSessionId = request.params.session_id
    // an id that cannot exist names a session that does not: nothing in it
    if (!isId(storageSessionId)) return []
    const identity = scopedIdentity(request)
    const files = (await store.list(storageSessionId)).filter((file) => canAccess(identity, file))
    return files.map((file) => describe(file, request.query.detail))
  })

  const deleteFile = async (request: FastifyRequest, storageSessionId: string, fileId: string) => {
    await accessibleFile(store, request, storageSessionId, fileId)
    if (!await store.delete(storageSessionId, fileId)) throw notFound(storageSessionId, fileId)
    return { message: 'success', session_id: storageSessionId, fileId }
  }
  const deleteSchema = { schema: { summary: 'Delete a stored file', params: SessionFileParamsSchema, response: { 200: DeleteResponse, '4xx': ErrorSchema } } }
  api.delete('/files/:session_id/:file_id', deleteSchema, async (request) =>
    await deleteFile(request, request.params.session_id, request.params.file_id))
  api.delete('/sessions/:session_id/objects/:file_id', deleteSchema, async (request) =>
    await deleteFile(request, request.params.session_id, request.params.file_id))
}

function sendFile (reply: FastifyReply, file: StoredFile, stream: NodeJS.ReadableStream) {
  return reply
    .header('content-type', file.contentType)
    .header('content-length', String(file.size))
    .header('content-disposition', contentDisposition(basename(file.name)))
    .header('etag', etag(file))
    .header('last-modified', new Date(file.createdAt).toUTCString())
    .send(stream)
}

/** The shapes of the official server's detail levels (spec §3.8). */
function describe (file: StoredFile, detail: 'simple' | 'summary' | 'full' | 'normalized') {
  const name = `${file.storageSessionId}/${file.id}`
  switch (detail) {
    case 'simple':
      return name
    case 'summary':
      return { name, size: file.size, lastModified: file.lastUsedAt, etag: etag(file) }
    case 'normalized':
      return { id: file.id, name: file.name, storage_session_id: file.storageSessionId, size: file.size, contentType: file.contentType, lastModified: file.lastUsedAt }
    case 'full':
      return {
        id: file.id,
        name,
        storage_session_id: file.storageSessionId,
        size: file.size,
        lastModified: file.lastUsedAt,
        etag: etag(file),
        contentType: file.contentType,
        metadata: { 'content-type': file.contentType, 'original-filename': file.name },
      }
  }
}
