import { z } from 'zod'

export const UploadResponse = z.object({
  message: z.literal('success'),
  storage_session_id: z.string(),
  session_id: z.string().describe('same as storage_session_id, for LibreChat before 0.8.6'),
  files: z.array(z.object({ fileId: z.string(), filename: z.string() })),
})

export const BatchFileResultSchema = z.union([
  z.object({ status: z.literal('success'), fileId: z.string(), filename: z.string() }),
  z.object({ status: z.literal('error'), filename: z.string(), error: z.string() }),
])
export type BatchFileResult = z.infer<typeof BatchFileResultSchema>

export const BatchUploadResponse = z.object({
  message: z.enum(['success', 'partial_success']),
  storage_session_id: z.string(),
  session_id: z.string(),
  files: z.array(BatchFileResultSchema),
  succeeded: z.number(),
  failed: z.number(),
})

export const ObjectInfo = z.object({
  name: z.string(),
  originalFilename: z.string(),
  size: z.number(),
  contentType: z.string(),
  lastModified: z.string().describe('last use (ISO 8601): LibreChat reuses files younger than 23 h'),
  etag: z.string(),
})

export const ListQuery = z.object({
  detail: z.enum(['simple', 'summary', 'full', 'normalized']).default('full'),
}).loose()

export const DeleteResponse = z.object({ message: z.string(), session_id: z.string(), fileId: z.string() })
