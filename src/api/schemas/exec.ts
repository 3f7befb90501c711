import { z } from 'zod'
import { formatBudget } from '../../exec/job-budget.ts'
import { IdSchema } from './common.ts'

const wellFormed = (value: string) => value.isWellFormed() && !value.includes('\0')
const NO_NUL = 'must be valid Unicode without NUL characters'

/** An input reference in `files[]` (spec §3.1.1); legacy clients send `session_id` instead of `storage_session_id`. */
export const ExecFileRef = z.object({
  id: IdSchema,
  name: z.string().min(1).max(4096),
  storage_session_id: IdSchema.optional(),
  session_id: IdSchema.optional(),
  resource_id: z.string().max(256).optional(),
  kind: z.enum(['user', 'agent', 'skill']).optional(),
  version: z.union([z.number(), z.string()]).optional(),
}).refine((file) => file.storage_session_id !== undefined || file.session_id !== undefined, {
  message: 'storage_session_id (or the legacy session_id) is required',
})

/**
 * The /exec body. Unknown fields are accepted and dropped: LibreChat spreads its own context into the
 * body (`codeSessionKey`, …; spec §3.1.1).
 */
export const ExecBodySchema = z.object({
  lang: z.string().min(1).max(32),
  code: z.string().refine(wellFormed, NO_NUL)
    .describe(`at most ${formatBudget()} together with args (UTF-8 bytes); more is refused with 413`),
  args: z.array(z.string().max(64 * 1024).refine(wellFormed, NO_NUL)).max(1024).optional(),
  files: z.array(ExecFileRef).max(1000).optional(),
  user_id: z.string().optional(),
  session_id: z.string().optional().describe('an earlier execution of the same owner to continue: its files are in /mnt/data again (unknown or not yours: a new session)'),
  runtime_session_hint: z.string().max(512).optional().describe('with X-CodeAPI-Expected-Profile: stateful, the runtime session whose /mnt/data persists between calls'),
  timeout: z.number().int().positive().optional().describe('wall-clock limit in ms; capped by EXEC_TIMEOUT_MS'),
})
export type ExecBody = z.infer<typeof ExecBodySchema>

export const OutputFileRef = z.object({
  id: z.string(),
  name: z.string().describe('path relative to /mnt/data'),
  storage_session_id: z.string(),
  path: z.string(),
  url: z.string().describe('the path LibreChat\'s UI downloads it from: /api/files/code/download/<session_id>/<file_id>'),
  type: z.string().describe('its MIME type'),
  inherited: z.boolean().optional().describe('an unchanged echo of a read-only input the code modified'),
})

export const ExecResponseSchema = z.object({
  session_id: z.string(),
  stdout: z.string(),
  stderr: z.string(),
  files: z.array(OutputFileRef),
  deleted_files: z.array(z.string()),
  status: z.enum(['ok', 'error', 'compile_error', 'timeout', 'oom', 'OL', 'EL', 'killed'])
    .describe('ok; error (non-zero exit); compile_error (the compile step failed, the program did not run; the compiler\'s message is in stderr); ' +
      'timeout (the execution\'s or a step\'s own time limit); oom; OL/EL (stdout/stderr limit, the codes LibreChat checks); killed (signal)'),
  exit_code: z.number().nullable(),
  signal: z.string().nullable(),
  timed_out: z.boolean(),
  oom_killed: z.boolean(),
  truncated: z.boolean(),
  wall_time_ms: z.number(),
  runtime_session_id: z.string().optional(),
  runtime_status: z.enum(['new', 'reused']).optional(),
})
export type ExecResponse = z.infer<typeof ExecResponseSchema>
