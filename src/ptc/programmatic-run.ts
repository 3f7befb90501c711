import { randomBytes } from 'node:crypto'
import type { Identity } from '../auth/identity.ts'
import type { ExecDeps, ExecutionRequest, ExecutionResult, PreparedExecution } from '../exec/execute.ts'
import { finishExecution, prepareExecution } from '../exec/execute.ts'
import { RunCollector } from '../exec/collect-run.ts'
import type { Outcome } from '../exec/outcome.ts'
import type { LiveWorker } from '../live/registry.ts'
import type { Program, Run, ToolStub } from '../pool/run.ts'

export interface ToolCall { id: string, name: string, input: unknown }
export interface ToolResult { call_id: string, result?: unknown, is_error?: boolean, error_message?: string }

/** What a request of a tool-calling run gets back: tools to call, or the run's end (spec §3.2). */
export type RoundAnswer =
  | { status: 'tool_call_required', token: string, toolCalls: ToolCall[], executionId: string, partialStdout: string, partialStderr: string }
  | { status: 'completed', result: ExecutionResult }
  /** `error`: one of the strings LibreChat explains to the model (§4.3); the output is what the run printed */
  | { status: 'error', error: string, executionId: string, stdout: string, stderr: string }

export type RunState = 'running' | 'paused' | 'ended'
export type RunEndReason = 'completed' | 'error' | 'expired' | 'cancelled' | 'unavailable'

export interface ProgrammaticSettings {
  /** how long a paused run waits for its tool results before it is stopped */
  pauseTimeoutMs: number
  /** rounds of tool calls a run may make (LibreChat's client stops after 20) */
  maxRounds: number
}

/** Why the server itself stopped a run; `error` is one of the strings LibreChat explains to the model (§4.3). */
interface Stop { error: string, explanation: string }

/** The strings LibreChat's client turns into a fixed explanation for the model (spec §4.3). */
export const SAFE_ERRORS = {
  failed: 'Execution failed or timed out',
  memory: 'Out of memory',
  time: 'Time limit exceeded',
  emptyCalls: 'sandbox emitted an empty pending tool call block; aborting to avoid a tight retry loop',
  stdout: 'stdout length exceeded',
  stderr: 'stderr length exceeded',
  exited: (code: number | 'unknown') => `Sandbox exited with code ${code}`,
  unregistered: (name: string) => `Sandbox requested an unregistered tool: ${name}`,
} as const

const MAX_CALLS_PER_ROUND = 100
const MAX_CALL_ID_CHARS = 64
const MAX_TOOL_NAME_CHARS = 200

/** A continuation token: 256 random bits, so the only way to a paused run is to have been told its token. */
function newToken (): string {
  return randomBytes(32).toString('base64url')
}

class Deferred<T> {
  readonly promise: Promise<T>
  resolve!: (value: T) => void
  reject!: (error: unknown) => void
  constructor () {
    this.promise = new Promise<T>((resolve, reject) => { this.resolve = resolve; this.reject = reject })
    // a run may end while no request waits for it
    this.promise.catch(() => {})
  }
}

export interface RunEvents {
  paused (run: ProgrammaticRun, calls: number): void
  resumed (run: ProgrammaticRun): void
  ended (run: ProgrammaticRun, reason: RunEndReason): void
}

/**
 * One program that calls the agent's tools: a single live worker runs it from its first request to its
 * end, blocked inside a tool stub while the client runs the tools. Every pause gets a fresh token, so a
 * token continues exactly one round; the run's clock stops while it waits, and the wait has its own limit.
 */
export class ProgrammaticRun {
  state: RunState = 'running'
  rounds = 0
  toolCalls = 0
  /** the token of the current pause; null while running */
  token: string | null = null
  private pending = new Map<string, string>()
  private answer = new Deferred<RoundAnswer>()
  private pauseTimer: NodeJS.Timeout | null = null
  private stop: Stop | null = null
  private endReason: RunEndReason | null = null
  private readonly tools: Map<string, ToolStub>
  private readonly run: Run
  private readonly collector: RunCollector

  private constructor (
    readonly owner: Identity,
    private readonly live: LiveWorker,
    private readonly prepared: PreparedExecution,
    tools: ToolStub[],
    private readonly deps: ExecDeps,
    private readonly settings: ProgrammaticSettings,
    private readonly events: RunEvents,
    private readonly acquireMs: number
  ) {
    this.tools = new Map(tools.map((tool) => [tool.name, tool]))
    this.run = live.start({ ...prepared.job, tools }, { last: true })
    this.collector = new RunCollector(this.run, prepared.collectLimits, (message) => this.onMessage(message))
    this.collector.result
      .then(async (collected) => await finishExecution(this.prepared, collected, this.deps, { acquireMs: this.acquireMs, preparedWorker: false }))
      .then((result) => this.finish(result), (error: unknown) => this.fail(error))
  }

  /** Starts the program on `live` (a worker of its own); the first answer comes from `next()`. */
  static async start (request: ExecutionRequest, tools: ToolStub[], live: (program: Program) => Promise<LiveWorker>, deps: ExecDeps, settings: ProgrammaticSettings, events: RunEvents): Promise<ProgrammaticRun> {
    const prepared = await prepareExecution(request, deps)
    let worker: LiveWorker
    try {
      worker = await live(prepared.job.program)
    } catch (error) {
      await prepared.outputs.discard()
      throw error
    }
    return new ProgrammaticRun(request.identity, worker, prepared, tools, deps, settings, events, prepared.clock.lap())
  }

  get executionId (): string { return this.prepared.executionId }
  get ended (): RunEndReason | null { return this.endReason }

  /** The answer to the current request: the next pause, or the end. */
  async next (): Promise<RoundAnswer> { return await this.answer.promise }

  /**
   * The ids a continuation must answer, or why the results do not fit this pause (one result per call,
   * no other ids). Checked before anything changes: a wrong continuation leaves the run paused.
   */
  checkResults (results: readonly ToolResult[]): string | null {
    const seen = new Set<string>()
    for (const result of results) {
      if (!this.pending.has(result.call_id)) return `call_id "${result.call_id.slice(0, MAX_CALL_ID_CHARS)}" was not asked for in this round.`
      if (seen.has(result.call_id)) return `call_id "${result.call_id}" is answered twice.`
      seen.add(result.call_id)
    }
    const missing = [...this.pending.keys()].filter((id) => !seen.has(id))
    if (missing.length > 0) return `No result for ${missing.join(', ')}; every tool call of the round needs one.`
    return null
  }

  /** Give the paused code its tool results; the answer is the next pause or the end. */
  async resume (results: readonly ToolResult[]): Promise<RoundAnswer> {
    this.pauseTimer !== null && clearTimeout(this.pauseTimer)
    this.pauseTimer = null
    this.state = 'running'
    this.token = null
    this.pending.clear()
    this.answer = new Deferred<RoundAnswer>()
    this.events.resumed(this)
    this.collector.clock.resume()
    const answer = this.answer.promise
    this.run.send({
      type: 'tool_results',
      results: results.map((result) => ({
        call_id: result.call_id,
        result: result.result ?? null,
        is_error: result.is_error === true,
        ...(result.is_error === true ? { error_message: result.error_message ?? 'The tool failed.' } : {}),
      })),
    }).catch(() => {
      // the worker is gone or cannot take the message: the run ends, and its end is the answer
      this.halt({ error: SAFE_ERRORS.failed, explanation: 'The tool results could not be given to the program.' }, 'error')
    })
    return await answer
  }

  /** Stop the run (cancelled by its client, or the server is stopping); a waiting request gets an error. */
  cancel (explanation: string): void {
    this.halt({ error: SAFE_ERRORS.failed, explanation }, 'cancelled')
  }

  // --- internals ----------------------------------------------------------------------------------------

  /** A message from the code: only tool calls, and only while it runs; anything else ends the run. */
  private onMessage (message: Record<string, unknown>): void {
    if (message.type !== 'tool_calls') return
    if (this.state !== 'running') return this.halt({ error: SAFE_ERRORS.failed, explanation: 'The program asked for tools while it was waiting for tool results.' }, 'error')
    const calls = parseCalls(message.calls)
    if (!Array.isArray(calls)) return this.halt(calls, 'error')
    const unknown = calls.find((call) => !this.tools.has(call.name))
    if (unknown !== undefined) {
      return this.halt({ error: SAFE_ERRORS.unregistered(unknown.name), explanation: `The program asked for the tool "${unknown.name}", which this request did not offer.` }, 'error')
    }
    if (this.rounds >= this.settings.maxRounds) {
      return this.halt({ error: SAFE_ERRORS.failed, explanation: `The program asked for tools more than ${this.settings.maxRounds} times; it was stopped (PTC_MAX_ROUNDS).` }, 'error')
    }
    this.collector.clock.pause()
    this.rounds++
    this.toolCalls += calls.length
    this.state = 'paused'
    this.pending = new Map(calls.map((call) => [call.id, call.name]))
    this.token = newToken()
    this.pauseTimer = setTimeout(() => this.expire(), this.settings.pauseTimeoutMs)
    this.events.paused(this, calls.length)
    this.answer.resolve({
      status: 'tool_call_required',
      token: this.token,
      toolCalls: calls,
      executionId: this.executionId,
      partialStdout: this.collector.partialStdout.toString('utf8'),
      partialStderr: this.collector.partialStderr.toString('utf8'),
    })
  }

  private expire (): void {
    if (this.state !== 'paused') return
    this.halt({ error: SAFE_ERRORS.failed, explanation: `No tool results came within ${Math.round(this.settings.pauseTimeoutMs / 1000)} s; the run was stopped.` }, 'expired')
  }

  /** The server stops the run: the worker goes, and the run's end (or this reason) is the answer. */
  private halt (stop: Stop, reason: RunEndReason): void {
    if (this.state === 'ended') return
    this.stop ??= stop
    this.endReason ??= reason
    this.run.kill(`ptc ${reason}`)
    this.live.end(reason === 'expired' ? 'expired' : 'stopped')
  }

  private finish (result: ExecutionResult): void {
    const reason = this.stop !== null ? this.endReason ?? 'error' : result.outcome.status === 'ok' ? 'completed' : 'error'
    this.settle(reason)
    if (this.stop !== null) {
      this.answer.resolve({ status: 'error', error: this.stop.error, executionId: result.executionId, stdout: result.stdout, stderr: appendLine(result.stderr, this.stop.explanation) })
    } else {
      this.answer.resolve(answerFor(result))
    }
  }

  /**
   * The run could not be carried out: the jail died, or the server stopped the run before its code
   * began (a cancel right after the start). The waiting request gets the stop, else the error.
   */
  private fail (error: unknown): void {
    this.settle('unavailable')
    this.live.end('stopped')
    if (this.stop !== null) {
      this.answer.resolve({ status: 'error', error: this.stop.error, executionId: this.executionId, stdout: '', stderr: appendLine('', this.stop.explanation) })
    } else {
      this.answer.reject(error)
    }
  }

  private settle (reason: RunEndReason): void {
    if (this.pauseTimer !== null) clearTimeout(this.pauseTimer)
    this.pauseTimer = null
    this.state = 'ended'
    this.token = null
    this.endReason ??= reason
    this.events.ended(this, this.endReason)
  }
}

/** How a finished execution answers a tool-calling request: completed only if it succeeded. */
export function answerFor (result: ExecutionResult): RoundAnswer {
  return result.outcome.status === 'ok'
    ? { status: 'completed', result }
    : { status: 'error', error: errorFor(result.outcome), executionId: result.executionId, stdout: result.stdout, stderr: result.stderr }
}

/** The `error` LibreChat explains to the model for each way a run can fail (spec §4.3). */
export function errorFor (outcome: Outcome): string {
  switch (outcome.status) {
    case 'timeout': return SAFE_ERRORS.time
    case 'oom': return SAFE_ERRORS.memory
    case 'OL': return SAFE_ERRORS.stdout
    case 'EL': return SAFE_ERRORS.stderr
    case 'error': return SAFE_ERRORS.exited(outcome.exitCode ?? 'unknown')
    default: {
      const signal = SIGNAL_NUMBERS[outcome.signal ?? '']
      return signal === undefined ? SAFE_ERRORS.failed : SAFE_ERRORS.exited(128 + signal)
    }
  }
}

const SIGNAL_NUMBERS: Record<string, number> = { SIGHUP: 1, SIGINT: 2, SIGQUIT: 3, SIGILL: 4, SIGABRT: 6, SIGBUS: 7, SIGFPE: 8, SIGKILL: 9, SIGSEGV: 11, SIGPIPE: 13, SIGALRM: 14, SIGTERM: 15, SIGXCPU: 24, SIGXFSZ: 25, SIGSYS: 31 }

/** The calls of one round as the worker sent them, or why they are refused (the code can send anything). */
function parseCalls (value: unknown): ToolCall[] | Stop {
  if (!Array.isArray(value) || value.length === 0) return { error: SAFE_ERRORS.emptyCalls, explanation: 'The program sent an empty tool request.' }
  if (value.length > MAX_CALLS_PER_ROUND) {
    return { error: SAFE_ERRORS.failed, explanation: `The program asked for more than ${MAX_CALLS_PER_ROUND} tool calls at once; it was stopped.` }
  }
  const calls: ToolCall[] = []
  const ids = new Set<string>()
  for (const item of value) {
    const call = item as { id?: unknown, name?: unknown, input?: unknown } | null
    if (typeof call !== 'object' || call === null || typeof call.id !== 'string' || typeof call.name !== 'string' ||
      call.id === '' || call.id.length > MAX_CALL_ID_CHARS || call.name.length > MAX_TOOL_NAME_CHARS || ids.has(call.id)) {
      return { error: SAFE_ERRORS.failed, explanation: 'The program sent a malformed tool request; it was stopped.' }
    }
    ids.add(call.id)
    calls.push({ id: call.id, name: call.name, input: call.input ?? {} })
  }
  return calls
}

function appendLine (text: string, line: string): string {
  return `${text}${text === '' || text.endsWith('\n') ? '' : '\n'}${line}\n`
}
