import type { FastifyPluginAsync } from 'fastify'
import type { ZodTypeProvider } from 'fastify-type-provider-zod'
import { errors, isApiError } from '../errors.ts'
import type { UserConcurrency } from '../exec/admission.ts'
import type { Metrics } from '../metrics.ts'
import { execute, type ExecDeps, type ExecutionResult } from '../exec/execute.ts'
import { formatBudget, JOB_BUDGET_BYTES, jobBytes } from '../exec/job-budget.ts'
import { resolveLanguage, SUPPORTED_LANGUAGES } from '../exec/languages/index.ts'
import { requestIdentity } from './identity.ts'
import { ErrorSchema } from './schemas/common.ts'
import { ExecBodySchema, ExecResponseSchema, type ExecResponse } from './schemas/exec.ts'

export interface ExecRouteDeps extends ExecDeps {
  admission: UserConcurrency
  metrics: Metrics
  /** log the submitted code at debug level (LOG_CODE=true) */
  logCode: boolean
  isDraining: () => boolean
}

export const execRoutes: FastifyPluginAsync<ExecRouteDeps> = async (app, deps) => {
  app.withTypeProvider<ZodTypeProvider>().post('/exec', {
    schema: {
      summary: 'Run code in a fresh jailed worker',
      body: ExecBodySchema,
      response: { 200: ExecResponseSchema, '4xx': ErrorSchema, '5xx': ErrorSchema },
    },
  }, async (request) => {
    const body = request.body
    const language = resolveLanguage(body.lang)
    if (language === null) {
      throw errors.unsupportedLanguage(`Unsupported language "${body.lang}". Warden runs: ${SUPPORTED_LANGUAGES.join(', ')}.`)
    }
    const bytes = jobBytes(body.code, body.args ?? [])
    if (bytes > JOB_BUDGET_BYTES) {
      throw errors.payloadTooLarge(`The code and args are ${bytes} bytes; the limit is ${formatBudget()} together.`)
    }
    const identity = requestIdentity(request, body.user_id)
    if (deps.logCode) request.log.debug({ language: language.id, code: body.code, args: body.args }, 'code submitted')
    let leave: () => void
    try {
      leave = deps.admission.enter(identity)
    } catch (error) {
      deps.metrics.recordRejected(language.id)
      throw error
    }
    const result = await execute({
      language,
      code: body.code,
      args: body.args ?? [],
      files: (body.files ?? []).map((file) => ({
        id: file.id,
        sessionId: (file.storage_session_id ?? file.session_id) as string,
        name: file.name,
      })),
      identity,
      timeoutMs: body.timeout,
    }, deps).catch((error: unknown) => {
      deps.metrics.recordRejected(language.id)
      // a run cut short because the server is stopping says so, not that the sandbox broke
      if (deps.isDraining() && isApiError(error) && error.code === errors.jailUnavailable.code) {
        throw errors.shuttingDown('Warden is shutting down and stopped this execution before it finished; retry.', {}, { cause: error })
      }
      throw error
    }).finally(leave)
    deps.metrics.recordExecution(language.id, result)
    request.log.info({
      sessionId: result.sessionId,
      language: language.id,
      outcome: result.outcome.status,
      wallMs: Math.round(result.wallMs),
      files: result.files.length,
      phases: result.phases,
    }, 'execution finished')
    return toWire(result)
  })
}

function toWire (result: ExecutionResult): ExecResponse {
  return {
    session_id: result.sessionId,
    stdout: result.stdout,
    stderr: result.stderr,
    files: result.files.map((file) => ({
      id: file.id,
      name: file.name,
      storage_session_id: file.sessionId,
      path: `/mnt/data/${file.name}`,
    })),
    deleted_files: result.deletedFiles,
    status: result.outcome.status,
    exit_code: result.outcome.exitCode,
    signal: result.outcome.signal,
    timed_out: result.outcome.timedOut,
    oom_killed: result.outcome.oomKilled,
    truncated: result.outcome.truncated,
    wall_time_ms: Math.round(result.wallMs),
  }
}
