import { ownerKey, type Identity } from '../auth/identity.ts'
import type { ExecutionLimits, SessionSettings } from '../config.ts'
import type { Workspaces } from '../storage/workspaces.ts'
import { WARDEN_ERRORS, WardenError } from '../errors.ts'
import type { ArtifactExchange, Program, RunPhases, WorkerJob } from '../pool/run.ts'
import type { Worker } from '../pool/worker.ts'
import type { AcquireOptions, Flavor } from '../pool/worker-pool.ts'
import type { FlavorOf } from './flavor.ts'
import type { FileStore, StoredFile } from '../storage/file-store.ts'
import { collectRun, type CollectLimits, type CollectedRun } from './collect-run.ts'
import { compileKey, type CompileCache } from './compile-cache.ts'
import { resolveInputs, stagedInputs, toWorkerInputs, type InputReads, type InputRef, type ResolvedInput } from './inputs.ts'
import { programFor, type LanguageDescriptor } from './languages/index.ts'
import { classifyOutcome, type Outcome } from './outcome.ts'
import { planWorkspace, updateWorkspace, type WorkspacePlan, type WorkspaceRequest } from './workspace.ts'
import { OutputCollector } from './outputs.ts'

export interface ExecutionRequest {
  language: LanguageDescriptor
  code: string
  args: string[]
  files: InputRef[]
  identity: Identity
  /** a shorter wall-clock limit than the server's, when the client asked for one */
  timeoutMs?: number
  /** where the run keeps its working directory (default: a fresh one, recorded so it can be continued) */
  workspace?: WorkspaceRequest
}

export interface ExecutionResult {
  /** the execution's id on the wire (`session_id`); its outputs are stored under it as their storage session */
  executionId: string
  /** the runtime session the run used (stateful profile), and whether it was new */
  runtimeSession: { id: string, status: 'new' | 'reused' } | null
  stdout: string
  stderr: string
  files: ExecutionFile[]
  deletedFiles: string[]
  outcome: Outcome
  wallMs: number
  phases: ExecutionPhases
  /** the program ran in an interpreter started ahead of it (a prepared worker) */
  prepared: boolean
  /** the compile cache's answer: `hit` ran a kept build, `miss` built (and kept it); null: not cacheable */
  compileCache: 'hit' | 'miss' | null
}

/** An output of the run; `inherited`: a read-only input the code changed, echoed unchanged (spec §3.5). */
export type ExecutionFile = StoredFile & { inherited?: true }

/** ms spent in each step of one execution */
export interface ExecutionPhases { resolveMs: number, acquireMs: number, run: RunPhases, storeMs: number }

/** What an execution needs from the pool: a worker (prepared for `program` when one is), given back after its one run. */
export interface WorkerSource {
  acquire (flavor?: Flavor, program?: Program, options?: AcquireOptions): Promise<Worker>
  release (worker: Worker): void
}

export interface ExecDeps {
  store: FileStore
  /** which kind of worker a program gets (light or data); data when absent */
  flavorOf?: FlavorOf
  workers: WorkerSource
  limits: ExecutionLimits
  workspaces: Workspaces
  sessions: SessionSettings
  /** told of a failure that does not fail the request (a fresh session's record not written) */
  onBackgroundError?: (error: unknown) => void
  /** builds of compiled programs kept per owner; absent or disabled: every program compiles */
  compileCache?: CompileCache
}

/** One /exec: resolve inputs -> take a worker -> run (files travel over its pipe) -> classify -> store outputs. */
export async function execute (request: ExecutionRequest, deps: ExecDeps): Promise<ExecutionResult> {
  const prepared = await prepareExecution(request, deps)
  const { program } = prepared.job
  const worker = await deps.workers.acquire(deps.flavorOf?.(program, request.code), program).catch(async (error: unknown) => {
    await prepared.outputs.discard()
    throw error
  })
  const acquireMs = prepared.clock.lap()
  let run: CollectedRun
  try {
    run = await collectRun(worker.start({ ...prepared.job, keep: false }), prepared.collectLimits)
  } catch (error) {
    await prepared.outputs.discard()
    throw error
  } finally {
    // never serves another execution: destroyed, and refilled off the request path
    deps.workers.release(worker)
  }
  // a run the server stopped reported nothing: it ran prepared if its worker was
  return await finishExecution(prepared, run, deps, { acquireMs, preparedWorker: worker.preparedKey !== null })
}

/** An execution up to its run: the workspace planned, inputs resolved, the job ready for a worker. */
export interface PreparedExecution {
  request: ExecutionRequest
  executionId: string
  plan: WorkspacePlan
  explicit: ResolvedInput[]
  /** the store's failure while the worker's inputs were read, if any */
  inputReads: InputReads
  /** the job a worker runs, whichever worker it is (single-use, or live for a paused run) */
  job: Omit<WorkerJob, 'keep'>
  outputs: OutputCollector
  timeoutMs: number
  collectLimits: CollectLimits
  resolveMs: number
  clock: Stopwatch
  compileCache: ExecutionResult['compileCache']
}

export async function prepareExecution (request: ExecutionRequest, deps: ExecDeps): Promise<PreparedExecution> {
  const { store, limits } = deps
  const clock = stopwatch()
  const workspaceDeps = { store, workspaces: deps.workspaces, settings: deps.sessions }
  const plan = await planWorkspace(request.workspace ?? { kind: 'fresh' }, request.identity, workspaceDeps)
  const explicit = await resolveInputs(request.files, store, request.identity)
  const inputs = stagedInputs(plan.files, explicit, limits.workdirBytes)
  const timeoutMs = Math.min(request.timeoutMs ?? limits.timeoutMs, limits.timeoutMs)
  const outputs = new OutputCollector(store, plan.executionId, request.identity, limits)
  const inputReads: InputReads = { failure: null }
  const built = withCompileCache(programFor(request.language, { code: request.code, limits }), request, inputs.length, deps.compileCache)
  return {
    request,
    executionId: plan.executionId,
    plan,
    explicit,
    inputReads,
    job: {
      owner: ownerKey(request.identity),
      program: built.program,
      code: request.code,
      args: request.args,
      inputs: toWorkerInputs(inputs, store, inputReads),
      cpuSeconds: cpuSecondsFor(timeoutMs),
      outputs,
      ...(built.artifacts === undefined ? {} : { artifacts: built.artifacts }),
    },
    outputs,
    timeoutMs,
    collectLimits: { timeoutMs, maxStdoutBytes: limits.maxStdoutBytes, maxStderrBytes: limits.maxStderrBytes },
    resolveMs: clock.lap(),
    clock,
    compileCache: built.answer,
  }
}

/** An artifact larger than this is not asked back from a worker (a Go hello world is about 2 MB). */
const MAX_ARTIFACT_BYTES = 64 * 1024 * 1024

interface CachedProgram { program: Program, artifacts?: ArtifactExchange, answer: ExecutionResult['compileCache'] }

/**
 * The program with the compile cache applied: on a hit, only its run step, with the kept build handed to
 * the worker; on a miss, the whole program, with the build asked back to be kept once it succeeded.
 */
function withCompileCache (program: Program, request: ExecutionRequest, inputCount: number, cache: CompileCache | undefined): CachedProgram {
  const key = cache?.enabled === true ? compileKey(request.identity, request.language.id, program, request.code, inputCount) : null
  if (cache === undefined || key === null || program.runner !== 'steps' || program.artifacts === undefined) return { program, answer: null }
  const kept = cache.lookup(key)
  if (kept !== null) return { program: { ...program, steps: program.steps.slice(-1) }, artifacts: { provide: kept }, answer: 'hit' }
  return {
    program,
    artifacts: { capture: program.artifacts, maxBytes: MAX_ARTIFACT_BYTES, keep: (artifacts) => cache.store(key, artifacts) },
    answer: 'miss',
  }
}

/** How the run's worker was had: ms waited for it, and whether it was prepared for the program. */
export interface AcquiredWorker { acquireMs: number, preparedWorker: boolean }

/** After the run: classify it, keep or drop its outputs, update the workspace, and shape the result. */
export async function finishExecution (prepared: PreparedExecution, run: CollectedRun, deps: ExecDeps, after: AcquiredWorker): Promise<ExecutionResult> {
  const { request, plan, explicit, outputs, timeoutMs, executionId, clock } = prepared
  const { store, limits } = deps
  const workspaceDeps = { store, workspaces: deps.workspaces, settings: deps.sessions }
  clock.lap()
  if (prepared.inputReads.failure !== null) {
    await outputs.discard()
    throw prepared.inputReads.failure
  }
  // the jail died, or the worker broke before the code started: not the program's doing, so no outcome
  const brokeBeforeStart = run.vanished && run.phases.startedMs === null && run.protocolViolation === null
  if ((run.jailLost || brokeBeforeStart) && !run.timedOut && (run.counters?.oomKills ?? 0) === 0) {
    await outputs.discard()
    // the detail (zygote, slot, signal) is for the log, not for the client
    throw new WardenError(WARDEN_ERRORS.jailUnavailable, 'The sandbox stopped before the code finished; retry.', {}, { cause: new Error(run.failure ?? 'the jail stopped') })
  }
  const outcome = classifyOutcome(run, limits, timeoutMs, prepared.job.program)
  // LibreChat tells the model that failed executions register nothing (spec §3.1.3): keep that promise
  const kept = outcome.status === 'ok' ? await outputs.keep() : await discardOutputs(outputs)
  const files = await echoReadOnlyInputs(kept, explicit, store)
  const notes = [...run.notes, ...outputs.notes()]
  if (outcome.status === 'ok') {
    const update = updateWorkspace(plan, explicit, files, run.deletedInputs, request.identity, workspaceDeps)
    if (plan.kind === 'session' && plan.status === 'new') {
      // only a later request naming this execution reads the record: it need not hold up this answer
      update.catch((error: unknown) => deps.onBackgroundError?.(error))
    } else {
      const note = await update
      if (note !== null) notes.push(note)
    }
  }
  const discarded = outcome.status === 'ok' ? 0 : Math.max(run.discardedOutputs, outputs.count)
  if (discarded > 0) notes.push(`${discarded} file(s) written to /mnt/data were not kept because the execution did not succeed.`)
  return {
    executionId,
    runtimeSession: plan.kind === 'runtime' ? { id: plan.id, status: plan.status } : null,
    stdout: run.stdout.toString('utf8'),
    stderr: appendLines(run.stderr.toString('utf8'), [...notes, ...(outcome.explanation === null ? [] : [outcome.explanation])]),
    files,
    deletedFiles: outcome.status === 'ok' ? run.deletedInputs : [],
    outcome,
    wallMs: run.wallMs,
    phases: { resolveMs: prepared.resolveMs, acquireMs: after.acquireMs, run: run.phases, storeMs: clock.lap() },
    prepared: run.prepared || (run.vanished && after.preparedWorker),
    compileCache: prepared.compileCache,
  }
}

/** RLIMIT_CPU behind the wall-clock limit: a second more, so the wall clock ends a run first. */
export function cpuSecondsFor (timeoutMs: number): number {
  return Math.ceil(timeoutMs / 1000) + 1
}

interface Stopwatch { lap: () => number }

function stopwatch (): Stopwatch {
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

/**
 * A read-only input (an infrastructure file, `read_only` on upload) that the code changed is not a
 * generated artifact: its new version is dropped and the original is echoed with `inherited: true`.
 */
async function echoReadOnlyInputs (outputs: StoredFile[], inputs: ResolvedInput[], store: FileStore): Promise<ExecutionFile[]> {
  const readOnly = new Map(inputs.filter((input) => input.file.readOnly === true).map((input) => [input.ref.name, input.file]))
  if (readOnly.size === 0) return outputs
  return await Promise.all(outputs.map(async (output): Promise<ExecutionFile> => {
    const original = readOnly.get(output.name)
    if (original === undefined) return output
    await store.delete(output.storageSessionId, output.id)
    return { ...original, name: output.name, inherited: true }
  }))
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
