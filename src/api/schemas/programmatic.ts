import { z } from 'zod'
import { ExecBodySchema, OutputFileRef } from './exec.ts'

const MAX_TOOLS = 100

/** A tool of the agent, as LibreChat passes its definitions through (spec §3.2); only its name is needed. */
export const ProgrammaticToolSchema = z.object({
  name: z.string().min(1).max(256),
  description: z.string().max(64 * 1024).optional(),
}).loose()

export const ToolResultSchema = z.object({
  call_id: z.string().min(1).max(64),
  result: z.unknown().optional().describe('the tool\'s return value, any JSON'),
  is_error: z.boolean().optional(),
  error_message: z.string().max(64 * 1024).optional(),
})

/**
 * POST /exec/programmatic: an initial request (code and tools) or a continuation (a token and the
 * results of the calls it paused for). One object with both sets of fields, so that each misuse gets a
 * plain sentence from the handler rather than a union's error list.
 */
export const ProgrammaticBodySchema = ExecBodySchema.partial().extend({
  lang: z.string().min(1).max(32).optional().describe('python (the default) or bash'),
  language: z.string().min(1).max(32).optional().describe('an alias of lang'),
  tools: z.array(ProgrammaticToolSchema).max(MAX_TOOLS, `at most ${MAX_TOOLS} tools`).optional()
    .describe('the tools the code may call; stubs are named by LibreChat\'s rules (spec §3.2). An empty list runs the code as /exec does'),
  workspace_instance_id: z.string().max(128).optional().describe('accepted; attached workspaces are not supported'),
  continuation_token: z.string().min(1).max(128).optional(),
  tool_results: z.array(ToolResultSchema).max(MAX_TOOLS).optional(),
})
export type ProgrammaticBody = z.infer<typeof ProgrammaticBodySchema>

export const ToolCallSchema = z.object({ id: z.string(), name: z.string().describe('the tool\'s original name'), input: z.unknown() })

export const ProgrammaticResponseSchema = z.discriminatedUnion('status', [
  z.object({
    status: z.literal('tool_call_required'),
    continuation_token: z.string().describe('continues this round only; a new one comes with every pause'),
    tool_calls: z.array(ToolCallSchema),
    session_id: z.string(),
    partial_stdout: z.string(),
    partial_stderr: z.string(),
  }),
  z.object({
    status: z.literal('completed'),
    session_id: z.string(),
    stdout: z.string(),
    stderr: z.string(),
    files: z.array(OutputFileRef),
    deleted_files: z.array(z.string()),
    wall_time_ms: z.number(),
    runtime_session_id: z.string().optional(),
    runtime_status: z.enum(['new', 'reused']).optional(),
  }),
  z.object({
    status: z.literal('error'),
    error: z.string().describe('one of the strings LibreChat explains to the model (spec §4.3)'),
    session_id: z.string(),
    stdout: z.string(),
    stderr: z.string(),
  }),
])
export type ProgrammaticResponse = z.infer<typeof ProgrammaticResponseSchema>

export const CancelBodySchema = z.object({ request_id: z.string().min(1).max(128) })
export const CancelResponseSchema = z.object({ cancelled: z.boolean().describe('a request in flight with this id was found and its run stopped') })
