import type { FastifyPluginAsync } from 'fastify'
import type { ZodTypeProvider } from 'fastify-type-provider-zod'
import { errors } from '../errors.ts'
import type { Admission } from '../exec/admission.ts'
import type { Metrics } from '../metrics.ts'
import { execute, type ExecDeps, type ExecutionResult } from '../exec/execute.ts'
import type { WorkspaceRequest } from '../exec/workspace.ts'
import { formatBudget, JOB_BUDGET_BYTES, jobBytes } from '../exec/job-budget.ts'
import { resolveLanguage, type LanguageAvailability } from '../exec/languages/index.ts'
import { requestIdentity } from './identity.ts'
import { ErrorSchema } from './schemas/common.ts'
import { ExecBodySchema, ExecResponseSchema, type ExecBody, type ExecResponse } from './schemas/exec.ts'

export interface ExecRouteDeps extends ExecDeps {
  languages: LanguageAvailability
  admission: Admission
  metrics: Metrics
  /** log the submitted code at debug level (LOG_CODE=true) */
  logCode: boolean
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
    const language = availableLanguage(body.lang, deps.languages)
    const bytes = jobBytes(body.code, body.args ?? [])
    if (bytes > JOB_BUDGET_BYTES) {
      throw errors.payloadTooLarge(`The code and args are ${bytes} bytes; the limit is ${formatBudget()} together.`)
    }
    const identity = requestIdentity(request, body.user_id)
    if (deps.logCode) request.log.debug({ language: language.id, code: body.code, args: body.args }, 'code submitted')
    let leave: () => void
    try {
      leave = await deps.admission.enter(identity)
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
        storageSessionId: (file.storage_session_id ?? file.session_id) as string,
        name: file.name,
      })),
      identity,
      timeoutMs: body.timeout,
      workspace: workspaceFor(body, request.executionProfile),
    }, deps).catch((error: unknown) => {
      deps.metrics.recordRejected(language.id)
      throw error
    }).finally(leave)
    deps.metrics.recordExecution(language.id, result)
    // on the request's one log line (app.ts)
    request.logFields = {
      executionId: result.executionId,
      language: language.id,
      outcome: result.outcome.status,
      prepared: result.prepared,
      compileCache: result.compileCache,
      wallMs: Math.round(result.wallMs),
      files: result.files.length,
      phases: result.phases,
    }
    return toWire(result)
  })
}

/** The language `lang` names, if this server can run it; otherwise a 400 that says what is missing. */
export function availableLanguage (lang: string, languages: LanguageAvailability) {
  const language = resolveLanguage(lang)
  const missing = languages.missing.find((entry) => entry.language === language)
  if (language !== null && missing === undefined) return language
  const runs = languages.available.flatMap((available) => available.aliases).join(', ')
  if (missing === undefined) throw errors.unsupportedLanguage(`Unsupported language "${lang}". Warden runs: ${runs}.`)
  throw errors.unsupportedLanguage(`Language "${lang}" is not installed on this server: ${missing.executables.join(', ')} ` +
    `${missing.executables.length === 1 ? 'is' : 'are'} missing (Debian package: ${missing.language.install}). Warden runs: ${runs}.`)
}

/** The stateful profile with a hint runs in a runtime session; a named session id continues that session. */
function workspaceFor (body: ExecBody, profile: 'default' | 'stateful'): WorkspaceRequest {
  if (profile === 'stateful' && typeof body.runtime_session_hint === 'string' && body.runtime_session_hint.trim() !== '') {
    return { kind: 'runtime', hint: body.runtime_session_hint }
  }
  if (typeof body.session_id === 'string') return { kind: 'session', sessionId: body.session_id }
  return { kind: 'fresh' }
}

/** An execution's output files as LibreChat reads them (spec §3.1.3). */
export function filesToWire (files: ExecutionResult['files']): ExecResponse['files'] {
  return files.map((file) => ({
    id: file.id,
    name: file.name,
    storage_session_id: file.storageSessionId,
    path: `/mnt/data/${file.name}`,
    url: `/api/files/code/download/${file.storageSessionId}/${file.id}`,
    type: file.contentType,
    ...(file.inherited === true ? { inherited: true } : {}),
  }))
}

function toWire (result: ExecutionResult): ExecResponse {
  return {
    session_id: result.executionId,
    stdout: result.stdout,
    stderr: result.stderr,
    files: filesToWire(result.files),
    deleted_files: result.deletedFiles,
    status: result.outcome.status,
    exit_code: result.outcome.exitCode,
    signal: result.outcome.signal,
    timed_out: result.outcome.timedOut,
    oom_killed: result.outcome.oomKilled,
    truncated: result.outcome.truncated,
    wall_time_ms: Math.round(result.wallMs),
    ...(result.runtimeSession === null ? {} : { runtime_session_id: result.runtimeSession.id, runtime_status: result.runtimeSession.status }),
  }
}
