import { z } from 'zod'
import { ID_PATTERN } from '../../storage/ids.ts'

/** Every id on the wire: a 21-character nanoid (spec §5). */
export const IdSchema = z.string().regex(ID_PATTERN, 'expected a 21-character id')

export const ErrorSchema = z.object({
  error: z.string().describe('machine-readable code'),
  message: z.string().describe('what went wrong, for people'),
}).loose()

export const SessionFileParamsSchema = z.object({ session_id: z.string(), file_id: z.string() })

/** LibreChat appends ?kind&id&version to file routes (spec §3.6); tolerated, not yet used for access. */
export const FileScopeQuery = z.object({
  kind: z.string().optional(),
  id: z.string().optional(),
  version: z.string().optional(),
}).loose()
