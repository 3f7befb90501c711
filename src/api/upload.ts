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
import { UploadResponse } from './schemas/files.ts'

export interface UploadDeps {
  store: FileStore
  maxUploadBytes: number
  metrics: Metrics
}

const FILE_FIELDS = new Set(['file', 'files'])
const UPLOAD_KINDS = new Set<FileKind>(['user', 'agent', 'skill'])

/** Form fields that describe the files after them (LibreChat sends them first: spec §3.4). */
interface UploadScope { kind: FileKind, resourceId?: string, version?: number }

export const uploadRoutes: FastifyPluginAsync<UploadDeps> = async (app, { store, maxUploadBytes, metrics }) => {
  app.withTypeProvider<ZodTypeProvider>().post('/upload', {
    schema: {
      summary: 'Upload files into a new storage session (multipart: `file` or `files`, with `kind`, `id`, `version`)',
      consumes: ['multipart/form-data'],
      response: { 200: UploadResponse, '4xx': ErrorSchema, '5xx': ErrorSchema },
    },
  }, async (request) => {
    if (!request.isMultipart()) throw errors.unsupportedMediaType('POST /upload expects multipart/form-data.')
    const storageSessionId = newId()
    const scope: UploadScope = { kind: 'user' }
    const stored: StoredFile[] = []
    try {
      for await (const part of request.parts({ preservePath: true, limits: { fileSize: maxUploadBytes, files: 100, fields: 50 } })) {
        if (part.type === 'field') {
          applyField(scope, part.fieldname, String(part.value))
          continue
        }
        if (!FILE_FIELDS.has(part.fieldname)) {
          part.file.resume()
          throw errors.invalidRequest(`Unexpected file field "${part.fieldname}"; send the file as "file" (or "files").`)
        }
        const name = validUploadName(part.filename)
        stored.push(await store.put({
          storageSessionId,
          name,
          contentType: part.mimetype,
          kind: scope.kind,
          resourceId: scope.resourceId,
          version: scope.version,
          // a user upload's `id` field is the user's id; agent and skill files are shared in the tenant
          owner: ownerFor(requestIdentity(request, scope.kind === 'user' ? scope.resourceId : undefined)),
        }, part.file, maxUploadBytes))
        if (part.file.truncated) throw new FileTooLargeError(maxUploadBytes)
      }
    } catch (error) {
      await Promise.all(stored.map((file) => store.delete(file.storageSessionId, file.id)))
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
}

function applyField (scope: UploadScope, field: string, value: string): void {
  if (field === 'kind') {
    if (!UPLOAD_KINDS.has(value as FileKind)) throw errors.invalidRequest(`Unknown kind "${value}"; expected user, agent or skill.`)
    scope.kind = value as FileKind
  } else if (field === 'id' || field === 'entity_id') {
    scope.resourceId = value.slice(0, 256)
  } else if (field === 'version') {
    const version = Number(value)
    if (!Number.isInteger(version) || version < 0) throw errors.invalidRequest(`version must be a non-negative integer, got "${value}".`)
    scope.version = version
  }
  // other fields (read_only, ...) are accepted and ignored
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
