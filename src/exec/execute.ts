import type { Identity } from '../auth/identity.ts'
import type { ExecutionLimits } from '../config.ts'
import { errors } from '../errors.ts'
import type { RunPhases, RuntimeLanguage, Worker, WorkerRun } from '../pool/worker.ts'
import { PoolBusyError, PoolUnavailableError } from '../pool/worker-pool.ts'
import type { FileStore, StoredFile } from '../storage/file-store.ts'
import { newId } from '../storage/ids.ts'
import { resolveInputs, toWorkerInputs, type InputRef } from './inputs.ts'
import { classifyOutcome, type Outcome } from './outcome.ts'
import { OutputCollector } from './outputs.ts'

export interface ExecutionRequest {
  language: RuntimeLanguage
  code: string
  args: string[]
  files: InputRef[]
  identity: Identity
  /** a shorter wall-clock limit than the server's, when the client asked for one */
  timeoutMs?: number
}

export interface ExecutionResult {
  sessionId: string
  stdout: string
  stderr: string
  files: StoredFile[]
  deletedFiles: string[]
  outcome: Outcome
  wallMs: number
  phases: ExecutionPhases
}

/** ms spent in each step of one execution */
export interface ExecutionPhases { resolve: number, acquire: number, run: RunPhases, store: number }

/** What the pipeline needs from the pool: a worker per execution, given back after. */
export interface WorkerSource {
  acquire (): Promise<Worker>
  release (worker: Worker): Promise<void>
}

export interface ExecDeps {
  store: FileStore
  workers: WorkerSource
  limits: ExecutionLimits
}

/** One /exec: resolve inputs -> take a worker -> run (files travel over its pipe) -> classify -> store outputs. */
export async function execute (request: ExecutionRequest, deps: ExecDeps): Promise<ExecutionResult> {
  const { store, workers, limits } = deps
  const clock = stopwatch()
  const inputs = await resolveInputs(request.files, store, limits.workdirBytes, request.identity)
  const resolveMs = clock.lap()
  const sessionId = newId()
  const timeoutMs = Math.min(request.timeoutMs ?? limits.timeoutMs, limits.timeoutMs)
  const outputs = new OutputCollector(store, sessionId, request.identity, limits)
  const worker = await workers.acquire().catch((error: unknown) => {
    if (error instanceof PoolBusyError) {
      throw errors.rateLimited(`${error.message} Retry after ${error.retryAfterSeconds} s.`, { retry_after_seconds: error.retryAfterSeconds })
    }
    throw error instanceof PoolUnavailableError ? errors.jailUnavailable(error.message, {}, { cause: error }) : error
  })
  const acquireMs = clock.lap()
  let run: WorkerRun
  try {
    run = await worker.run({
      language: request.language,
      code: request.code,
      args: request.args,
      inputs: toWorkerInputs(inputs, store),
      timeoutMs,
      maxStdoutBytes: limits.maxStdoutBytes,
      maxStderrBytes: limits.maxStderrBytes,
      outputs,
    })
  } catch (error) {
    await outputs.discard()
    throw error
  } finally {
    // never serves another execution: destroyed, and refilled off the request path
    workers.release(worker).catch(() => {})
  }
  if (run.failure !== null && run.vanished && !run.timedOut && (run.counters?.oomKills ?? 0) === 0) {
    await outputs.discard()
    // the detail (zygote, slot, signal) is for the log, not for the client
    throw errors.jailUnavailable('The sandbox stopped before the code finished; retry.', {}, { cause: new Error(run.failure) })
  }
  clock.lap()
  const outcome = classifyOutcome(run, limits, timeoutMs)
  // LibreChat tells the model that failed executions register nothing (spec §3.1.3): keep that promise
  const files = outcome.status === 'ok' ? await outputs.keep() : await discardOutputs(outputs)
  const notes = [...run.notes, ...outputs.notes()]
  const discarded = outcome.status === 'ok' ? 0 : Math.max(run.discardedOutputs, outputs.count)
  if (discarded > 0) notes.push(`${discarded} file(s) written to /mnt/data were not kept because the execution did not succeed.`)
  return {
    sessionId,
    stdout: run.stdout.toString('utf8'),
    stderr: appendLines(run.stderr.toString('utf8'), [...notes, ...(outcome.explanation === null ? [] : [outcome.explanation])]),
    files,
    deletedFiles: outcome.status === 'ok' ? run.deletedInputs : [],
    outcome,
    wallMs: run.wallMs,
    phases: { resolve: resolveMs, acquire: acquireMs, run: run.phases, store: clock.lap() },
  }
}

function stopwatch () {
  let last = performance.now()
  return {
    lap: () => {
      const now = performance.now()
      const ms = Math.round((now - last) * 100) / 100
      last = now
      return ms
    },
  }
}

async function discardOutputs (outputs: OutputCollector): Promise<StoredFile[]> {
  await outputs.discard()
  return []
}

function appendLines (text: string, lines: string[]): string {
  if (lines.length === 0) return text
  const separator = text === '' || text.endsWith('\n') ? '' : '\n'
  return `${text}${separator}${lines.join('\n')}\n`
}
