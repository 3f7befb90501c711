import type { FastifyPluginAsync, FastifyReply } from 'fastify'
import type { ZodTypeProvider } from 'fastify-type-provider-zod'
import { errors } from '../errors.ts'
import { execute } from '../exec/execute.ts'
import { formatBudget, JOB_BUDGET_BYTES, jobBytes } from '../exec/job-budget.ts'
import { answerFor, type RoundAnswer } from '../ptc/programmatic-run.ts'
import type { ProgrammaticRuns } from '../ptc/programmatic-runs.ts'
import { planToolStubs, type ProgrammaticLanguage } from '../ptc/tool-names.ts'
import { availableLanguage, filesToWire, type ExecRouteDeps } from './exec.ts'
import { requestIdentity } from './identity.ts'
import { ErrorSchema } from './schemas/common.ts'
import {
  CancelBodySchema, CancelResponseSchema, ProgrammaticBodySchema, ProgrammaticResponseSchema,
  type ProgrammaticResponse,
} from './schemas/programmatic.ts'

export interface ProgrammaticRouteDeps extends ExecRouteDeps {
  runs: ProgrammaticRuns
}

/** The header LibreChat's client sends with each request it may cancel (spec §3.3). */
const REQUEST_ID_HEADER = 'x-librechat-code-request-id'
/** Attached workspaces (LibreChat's remote "code environments") are not something Warden has (spec §7). */
const WORKSPACE_HEADER = 'x-librechat-code-workspace-id'

const PROGRAMMATIC_LANGUAGES: Record<string, ProgrammaticLanguage> = { py: 'python', python: 'python', python3: 'python', bash: 'bash', sh: 'bash' }

/**
 * Programmatic tool calling (spec §3.2, §6): the code calls the agent's tools through stubs; each round
 * of calls pauses the run and answers `tool_call_required`, and the client's continuation resumes the
 * same process with the results.
 */
export const programmaticRoutes: FastifyPluginAsync<ProgrammaticRouteDeps> = async (app, deps) => {
  const typed = app.withTypeProvider<ZodTypeProvider>()
  typed.post('/exec/programmatic', {
    schema: {
      summary: 'Run code that calls the agent\'s tools, one round of tool calls per request',
      body: ProgrammaticBodySchema,
      response: { 200: ProgrammaticResponseSchema, '4xx': ErrorSchema, '5xx': ErrorSchema },
    },
  }, async (request, reply) => {
    const body = request.body
    if (request.headers[WORKSPACE_HEADER] !== undefined) {
      throw errors.statefulWorkspaceUnsupported('Warden does not attach workspaces (X-LibreChat-Code-Workspace-ID); run without one.')
    }
    const identity = requestIdentity(request, body.user_id)
    const round = { requestId: requestIdOf(request.headers[REQUEST_ID_HEADER]), gone: goneSignal(reply) }
    if (body.continuation_token !== undefined || body.tool_results !== undefined) {
      if (body.continuation_token === undefined) throw errors.invalidRequest('tool_results need the continuation_token of the round they answer.')
      if (body.tool_results === undefined || body.tool_results.length === 0) {
        throw errors.invalidRequest('A continuation needs tool_results: one for each tool call of the round.')
      }
      return toWire(await deps.runs.continue(body.continuation_token, identity, body.tool_results, round))
    }
    if (body.code === undefined) throw errors.invalidRequest('Missing required field: code.')
    if (body.tools === undefined) throw errors.invalidRequest('Missing required field: tools (a list of the tools the code may call; [] runs it as /exec does).')
    const lang = body.lang ?? body.language ?? 'python'
    const budgetBytes = jobBytes(body.code, body.args ?? []) + body.tools.reduce((sum, tool) => sum + Buffer.byteLength(tool.name) + Buffer.byteLength(tool.description ?? ''), 0)
    if (budgetBytes > JOB_BUDGET_BYTES) throw errors.payloadTooLarge(`The code, args and tools are ${budgetBytes} bytes; the limit is ${formatBudget()} together.`)
    const execution = {
      code: body.code,
      args: body.args ?? [],
      files: (body.files ?? []).map((file) => ({ id: file.id, storageSessionId: (file.storage_session_id ?? file.session_id) as string, name: file.name })),
      identity,
      timeoutMs: body.timeout,
      // stateless, as the official service keeps it (spec §9): session_id and a hint are accepted and ignored
      workspace: { kind: 'fresh' } as const,
    }
    if (body.tools.length === 0) {
      // no tools to call: the same run /exec makes
      const language = availableLanguage(lang, deps.languages)
      const leave = await deps.admission.enter(identity)
      const result = await execute({ ...execution, language }, deps).finally(leave)
      deps.metrics.recordExecution(language.id, result)
      return toWire(answerFor(result))
    }
    const programmatic = PROGRAMMATIC_LANGUAGES[lang.trim().toLowerCase()]
    if (programmatic === undefined) {
      throw errors.unsupportedLanguage(`Programmatic tool calling runs Python (lang absent or "python") or Bash ("bash"), not "${lang}".`)
    }
    const plan = planToolStubs(body.tools, programmatic)
    if (!plan.ok) throw errors.invalidRequest(plan.message)
    const language = availableLanguage(programmatic === 'python' ? 'py' : 'bash', deps.languages)
    return toWire(await deps.runs.start({ ...execution, language }, plan.stubs, round))
  })

  typed.post('/exec/programmatic/cancel', {
    schema: {
      summary: 'Cancel the tool-calling run a request in flight belongs to (its X-LibreChat-Code-Request-ID)',
      body: CancelBodySchema,
      response: { 200: CancelResponseSchema, '4xx': ErrorSchema },
    },
  }, async (request) => {
    const identity = requestIdentity(request, (request.body as { user_id?: unknown }).user_id)
    return { cancelled: deps.runs.cancel(request.body.request_id, identity) }
  })
}

function requestIdOf (header: string | string[] | undefined): string | null {
  return typeof header === 'string' && header.length > 0 && header.length <= 128 ? header : null
}

/** Fires when the client goes away before its answer was sent (its fetch aborted). */
function goneSignal (reply: FastifyReply): AbortSignal {
  const controller = new AbortController()
  reply.raw.once('close', () => { if (!reply.raw.writableEnded) controller.abort() })
  return controller.signal
}

function toWire (answer: RoundAnswer): ProgrammaticResponse {
  switch (answer.status) {
    case 'tool_call_required':
      return {
        status: 'tool_call_required',
        continuation_token: answer.token,
        tool_calls: answer.toolCalls,
        session_id: answer.executionId,
        partial_stdout: answer.partialStdout,
        partial_stderr: answer.partialStderr,
      }
    case 'completed': {
      const { result } = answer
      return {
        status: 'completed',
        session_id: result.executionId,
        stdout: result.stdout,
        stderr: result.stderr,
        files: filesToWire(result.files),
        deleted_files: result.deletedFiles,
        wall_time_ms: Math.round(result.wallMs),
        ...(result.runtimeSession === null ? {} : { runtime_session_id: result.runtimeSession.id, runtime_status: result.runtimeSession.status }),
      }
    }
    case 'error':
      return { status: 'error', error: answer.error, session_id: answer.executionId, stdout: answer.stdout, stderr: answer.stderr }
  }
}
