import type { MultipartFile } from '@fastify/multipart'
import type { FastifyPluginAsync, FastifyRequest } from 'fastify'
import type { ZodTypeProvider } from 'fastify-type-provider-zod'
import { ownerFor } from '../auth/identity.ts'
import { errors } from '../errors.ts'
import { FileTooLargeError, type FileKind, type FileStore, type StoredFile } from '../storage/file-store.ts'
import { validateFileName } from '../storage/file-names.ts'
import { newId } from '../storage/ids.ts'
import type { Metrics } from '../metrics.ts'
import { requestIdentity } from './identity.ts'
import { ErrorSchema } from './schemas/common.ts'
import { BatchUploadResponse, UploadResponse, type BatchFileResult } from './schemas/files.ts'
import { toApiError } from './error-boundary.ts'

export interface UploadDeps {
  store: FileStore
  maxUploadBytes: number
  metrics: Metrics
}

const FILE_FIELDS = new Set(['file', 'files'])
const UPLOAD_KINDS = new Set<FileKind>(['user', 'agent', 'skill'])

/** Form fields that describe the files after them (LibreChat sends them first: spec §3.4). */
interface UploadScope { kind: FileKind, resourceId?: string, version?: number, readOnly?: boolean }

/** A batch holds at most this many files (the official service's cap, spec §3.5). */
const MAX_BATCH_FILES = 200

type FilePart = MultipartFile

/**
 * Walk a multipart upload: fields update the scope, each file part is handed to `onFile` with the scope
 * as it is at that point. Parts that are neither are refused.
 */
async function receiveParts (request: FastifyRequest, maxUploadBytes: number, maxFiles: number, onFile: (part: FilePart, scope: UploadScope) => Promise<void>): Promise<void> {
  if (!request.isMultipart()) throw errors.unsupportedMediaType(`POST ${request.routeOptions.url ?? '/upload'} expects multipart/form-data.`)
  const scope: UploadScope = { kind: 'user' }
  for await (const part of request.parts({ preservePath: true, limits: { fileSize: maxUploadBytes, files: maxFiles, fields: 50 } })) {
    if (part.type === 'field') {
      applyField(scope, part.fieldname, String(part.value))
      continue
    }
    if (!FILE_FIELDS.has(part.fieldname)) {
      part.file.resume()
      throw errors.invalidRequest(`Unexpected file field "${part.fieldname}"; send the file as "file" (or "files").`)
    }
    await onFile(part, { ...scope })
  }
}

async function storePart (store: FileStore, request: FastifyRequest, storageSessionId: string, part: FilePart, scope: UploadScope, maxUploadBytes: number): Promise<StoredFile> {
  const name = validUploadName(part.filename)
  const stored = await store.put({
    storageSessionId,
    name,
    contentType: part.mimetype,
    kind: scope.kind,
    resourceId: scope.resourceId,
    version: scope.version,
    readOnly: scope.readOnly,
    // a user upload's `id` field is the user's id; agent and skill files are shared in the tenant
    owner: ownerFor(requestIdentity(request, scope.kind === 'user' ? scope.resourceId : undefined)),
  }, part.file, maxUploadBytes)
  if (part.file.truncated) {
    await store.delete(stored.storageSessionId, stored.id)
    throw new FileTooLargeError(maxUploadBytes)
  }
  return stored
}

export const uploadRoutes: FastifyPluginAsync<UploadDeps> = async (app, { store, maxUploadBytes, metrics }) => {
  app.withTypeProvider<ZodTypeProvider>().post('/upload', {
    schema: {
      summary: 'Upload files into a new storage session (multipart: `file` or `files`, with `kind`, `id`, `version`, `read_only`)',
      consumes: ['multipart/form-data'],
      response: { 200: UploadResponse, '4xx': ErrorSchema, '5xx': ErrorSchema },
    },
  }, async (request) => {
    const storageSessionId = newId()
    const stored: StoredFile[] = []
    try {
      await receiveParts(request, maxUploadBytes, 100, async (part, scope) => {
        stored.push(await storePart(store, request, storageSessionId, part, scope, maxUploadBytes))
      })
    } catch (error) {
      // all or nothing: one bad part and none of the files stays
      // a store that failed (S3 away) may fail these too: the upload's own error is the one to answer
      await Promise.all(stored.map(async (file) => await store.delete(file.storageSessionId, file.id).catch(() => false)))
      throw translateUploadError(error, maxUploadBytes)
    }
    if (stored.length === 0) throw errors.invalidRequest('No file was uploaded; send it in the "file" form field.')
    logUpload(request, storageSessionId, stored)
    for (const file of stored) metrics.recordTransfer('upload', file.size)
    return {
      message: 'success' as const,
      storage_session_id: storageSessionId,
      session_id: storageSessionId,
      files: stored.map((file) => ({ fileId: file.id, filename: file.name })),
    }
  })

  // Skills upload many files at once (spec §3.5): each file succeeds or fails on its own
  app.withTypeProvider<ZodTypeProvider>().post('/upload/batch', {
    schema: {
      summary: `Upload up to ${MAX_BATCH_FILES} files into one new storage session; each file succeeds or fails on its own`,
      consumes: ['multipart/form-data'],
      response: { 200: BatchUploadResponse, '4xx': ErrorSchema, '5xx': ErrorSchema },
    },
  }, async (request, reply) => {
    const storageSessionId = newId()
    const results: BatchFileResult[] = []
    try {
      await receiveParts(request, maxUploadBytes, MAX_BATCH_FILES, async (part, scope) => {
        try {
          const file = await storePart(store, request, storageSessionId, part, scope, maxUploadBytes)
          metrics.recordTransfer('upload', file.size)
          results.push({ status: 'success', fileId: file.id, filename: file.name })
        } catch (error) {
          part.file.resume() // the rest of this part is read and dropped; the next part follows
          const apiError = toApiError(translateUploadError(error, maxUploadBytes))
          if (apiError.statusCode >= 500) throw error
          results.push({ status: 'error', filename: part.filename ?? '', error: apiError.message })
        }
      })
    } catch (error) {
      await Promise.all(results.flatMap((result) => result.status === 'success' ? [store.delete(storageSessionId, result.fileId).catch(() => false)] : []))
      throw translateUploadError(error, maxUploadBytes)
    }
    const succeeded = results.filter((result) => result.status === 'success').length
    const failed = results.length - succeeded
    if (results.length === 0) throw errors.invalidRequest('No file was uploaded; send them in "file" (or "files") form fields.')
    if (succeeded === 0) {
      return await reply.code(400).send({ error: errors.invalidRequest.code, message: `None of the ${failed} files could be stored.`, files: results })
    }
    return {
      message: failed === 0 ? 'success' as const : 'partial_success' as const,
      storage_session_id: storageSessionId,
      session_id: storageSessionId,
      files: results,
      succeeded,
      failed,
    }
  })
}

function applyField (scope: UploadScope, field: string, value: string): void {
  if (field === 'kind') {
    if (!UPLOAD_KINDS.has(value as FileKind)) throw errors.invalidRequest(`Unknown kind "${value}"; expected user, agent or skill.`)
    scope.kind = value as FileKind
  } else if (field === 'id' || field === 'entity_id') {
    scope.resourceId = value.slice(0, 256)
  } else if (field === 'read_only') {
    scope.readOnly = value.trim().toLowerCase() === 'true'
  } else if (field === 'version') {
    const version = Number(value)
    if (!Number.isInteger(version) || version < 0) throw errors.invalidRequest(`version must be a non-negative integer, got "${value}".`)
    scope.version = version
  }
  // other fields are accepted and ignored
}

function validUploadName (filename: string | undefined): string {
  if (filename === undefined || filename === '') throw errors.invalidFileName('The uploaded file has no filename.')
  const checked = validateFileName(filename)
  if (!checked.ok) throw errors.invalidFileName(`File name "${filename}" is not allowed: ${checked.reason}`)
  return checked.name
}

/** busboy's own "file too large" says no number: say the limit, as the store's error does. */
function translateUploadError (error: unknown, maxUploadBytes: number): unknown {
  return (error as { code?: unknown }).code === 'FST_REQ_FILE_TOO_LARGE' ? new FileTooLargeError(maxUploadBytes) : error
}

function logUpload (request: FastifyRequest, storageSessionId: string, files: StoredFile[]): void {
  request.log.info({ storageSessionId, files: files.length, bytes: files.reduce((sum, file) => sum + file.size, 0) }, 'upload stored')
}
