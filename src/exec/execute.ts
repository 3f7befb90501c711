import type { Identity } from '../auth/identity.ts'
import type { ExecutionLimits } from '../config.ts'
import { WARDEN_ERRORS, WardenError } from '../errors.ts'
import type { Program, RunPhases } from '../pool/run.ts'
import type { Worker } from '../pool/worker.ts'
import type { FileStore, StoredFile } from '../storage/file-store.ts'
import { newId } from '../storage/ids.ts'
import { collectRun, type CollectedRun } from './collect-run.ts'
import { resolveInputs, toWorkerInputs, type InputRef } from './inputs.ts'
import { programFor, type LanguageDescriptor } from './languages/index.ts'
import { classifyOutcome, type Outcome } from './outcome.ts'
import { OutputCollector } from './outputs.ts'

export interface ExecutionRequest {
  language: LanguageDescriptor
  code: string
  args: string[]
  files: InputRef[]
  identity: Identity
  /** a shorter wall-clock limit than the server's, when the client asked for one */
  timeoutMs?: number
}

export interface ExecutionResult {
  /** the execution's id on the wire (`session_id`); its outputs are stored under it as their storage session */
  executionId: string
  stdout: string
  stderr: string
  files: StoredFile[]
  deletedFiles: string[]
  outcome: Outcome
  wallMs: number
  phases: ExecutionPhases
  /** the program ran in an interpreter started ahead of it (a prepared worker) */
  prepared: boolean
}

/** ms spent in each step of one execution */
export interface ExecutionPhases { resolveMs: number, acquireMs: number, run: RunPhases, storeMs: number }

/** What an execution needs from the pool: a worker (prepared for `program` when one is), given back after its one run. */
export interface WorkerSource {
  acquire (program?: Program): Promise<Worker>
  release (worker: Worker): void
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
  const executionId = newId()
  const timeoutMs = Math.min(request.timeoutMs ?? limits.timeoutMs, limits.timeoutMs)
  const outputs = new OutputCollector(store, executionId, request.identity, limits)
  const program = programFor(request.language, { code: request.code, limits })
  const worker = await workers.acquire(program)
  const acquireMs = clock.lap()
  let run: CollectedRun
  try {
    run = await collectRun(worker.start({
      program,
      code: request.code,
      args: request.args,
      inputs: toWorkerInputs(inputs, store),
      cpuSeconds: cpuSecondsFor(timeoutMs),
      keep: false,
      outputs,
    }), { timeoutMs, maxStdoutBytes: limits.maxStdoutBytes, maxStderrBytes: limits.maxStderrBytes })
  } catch (error) {
    await outputs.discard()
    throw error
  } finally {
    // never serves another execution: destroyed, and refilled off the request path
    workers.release(worker)
  }
  // the jail died, or the worker broke before the code started: not the program's doing, so no outcome
  const brokeBeforeStart = run.vanished && run.phases.startedMs === null && run.protocolViolation === null
  if ((run.jailLost || brokeBeforeStart) && !run.timedOut && (run.counters?.oomKills ?? 0) === 0) {
    await outputs.discard()
    // the detail (zygote, slot, signal) is for the log, not for the client
    throw new WardenError(WARDEN_ERRORS.jailUnavailable, 'The sandbox stopped before the code finished; retry.', {}, { cause: new Error(run.failure ?? 'the jail stopped') })
  }
  clock.lap()
  const outcome = classifyOutcome(run, limits, timeoutMs, program)
  // LibreChat tells the model that failed executions register nothing (spec §3.1.3): keep that promise
  const files = outcome.status === 'ok' ? await outputs.keep() : await discardOutputs(outputs)
  const notes = [...run.notes, ...outputs.notes()]
  const discarded = outcome.status === 'ok' ? 0 : Math.max(run.discardedOutputs, outputs.count)
  if (discarded > 0) notes.push(`${discarded} file(s) written to /mnt/data were not kept because the execution did not succeed.`)
  return {
    executionId,
    stdout: run.stdout.toString('utf8'),
    stderr: appendLines(run.stderr.toString('utf8'), [...notes, ...(outcome.explanation === null ? [] : [outcome.explanation])]),
    files,
    deletedFiles: outcome.status === 'ok' ? run.deletedInputs : [],
    outcome,
    wallMs: run.wallMs,
    phases: { resolveMs, acquireMs, run: run.phases, storeMs: clock.lap() },
    // a run the server stopped reported nothing: it ran prepared if its worker was
    prepared: run.prepared || (run.vanished && worker.preparedKey !== null),
  }
}

/** RLIMIT_CPU behind the wall-clock limit: a second more, so the wall clock ends a run first. */
export function cpuSecondsFor (timeoutMs: number): number {
  return Math.ceil(timeoutMs / 1000) + 1
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
