import type { Logger } from 'pino'
import { sameOwner, type Identity } from '../auth/identity.ts'
import type { ProgrammaticToolSettings } from '../config.ts'
import { WARDEN_ERRORS, WardenError } from '../errors.ts'
import type { ExecDeps, ExecutionRequest } from '../exec/execute.ts'
import type { LiveWorkers } from '../live/registry.ts'
import type { LiveRouteBook } from '../live/kernels.ts'
import type { ToolStub } from '../pool/run.ts'
import { ProgrammaticRun, type RoundAnswer, type RunEndReason, type ToolResult } from './programmatic-run.ts'

/** The request a round answers: its cancel id, and a signal that fires when its client goes away. */
export interface RoundRequest { requestId: string | null, gone?: AbortSignal }

export interface ProgrammaticStats { running: number, paused: number }

/** What the runs report to metrics. */
export interface ProgrammaticObserver {
  round (calls: number): void
  ended (reason: RunEndReason, rounds: number): void
}

export interface ProgrammaticRunsDeps {
  live: LiveWorkers
  exec: ExecDeps
  settings: ProgrammaticToolSettings
  observer: ProgrammaticObserver
  log: Logger
  /** the replicas' routing table (REDIS_URL): told which continuation tokens are paused here */
  routes?: LiveRouteBook
}

/**
 * The server's tool-calling runs: each on a live worker of its own (kind `ptc`, capped in all and per
 * user), found again by its current continuation token, and by the request id of a request in flight
 * (`X-LibreChat-Code-Request-ID`) so that the client can cancel it. A token or request id of another
 * owner finds nothing, exactly as an unknown one.
 */
export class ProgrammaticRuns {
  private readonly runs = new Set<ProgrammaticRun>()
  private readonly byToken = new Map<string, ProgrammaticRun>()
  private readonly byRequest = new Map<string, ProgrammaticRun>()
  /** replicas: the write of each paused run's route, awaited before its token is answered */
  private readonly routeWrites = new Map<string, Promise<void>>()

  constructor (private readonly deps: ProgrammaticRunsDeps) {}

  /** Start a program with its tools; the answer is its first pause or its end. */
  async start (request: ExecutionRequest, tools: ToolStub[], round: RoundRequest): Promise<RoundAnswer> {
    const { live, settings } = this.deps
    const caps = { max: settings.maxPausedRuns, maxPerUser: settings.maxPausedRunsPerUser }
    const run = await ProgrammaticRun.start(request, tools, async (program) => await live.create(request.identity, 'ptc', caps, { flavor: this.deps.exec.flavorOf?.(program, request.code) }), this.deps.exec, settings, {
      paused: (paused, calls) => {
        if (paused.token !== null) this.remember(paused.token, paused)
        this.deps.observer.round(calls)
      },
      resumed: () => {},
      ended: (ended, reason) => {
        this.forget(ended)
        this.deps.observer.ended(reason, ended.rounds)
        this.deps.log.info({ executionId: ended.executionId, reason, rounds: ended.rounds, toolCalls: ended.toolCalls }, 'tool-calling run ended')
      },
    })
    this.runs.add(run)
    return await this.answer(run, round, async () => await run.next())
  }

  /**
   * Resume the run paused under `token` with the client's tool results. Unknown, used, expired and
   * other owners' tokens are all the same 404; results that do not match the round are a 400 and leave
   * the run paused, so a corrected continuation still works.
   */
  async continue (token: string, owner: Identity, results: readonly ToolResult[], round: RoundRequest): Promise<RoundAnswer> {
    const run = this.byToken.get(token)
    if (run === undefined || !sameOwner(run.owner, owner) || run.state !== 'paused' || run.token !== token) {
      throw new WardenError(WARDEN_ERRORS.liveNotFound, 'No paused tool-calling run has this continuation token: it was used already, expired, or never existed.')
    }
    const problem = run.checkResults(results)
    if (problem !== null) throw new WardenError(WARDEN_ERRORS.invalidToolResults, problem)
    this.drop(token)
    return await this.answer(run, round, async () => await run.resume(results))
  }

  /** Whether a run is paused here under `token` (whoever owns it): else another replica may hold it. */
  holds (token: string): boolean {
    return this.byToken.has(token)
  }

  /** Cancel the run whose request in flight carries `requestId` (the client's abort); false if there is none. */
  cancel (requestId: string, owner: Identity): boolean {
    const run = this.byRequest.get(requestId)
    if (run === undefined || !sameOwner(run.owner, owner)) return false
    run.cancel('The client cancelled the request.')
    return true
  }

  stats (): ProgrammaticStats {
    let paused = 0
    for (const run of this.runs) if (run.state === 'paused') paused++
    return { running: this.runs.size - paused, paused }
  }

  close (): void {
    for (const run of [...this.runs]) run.cancel('Warden is shutting down.')
  }

  /**
   * Wait for the run's next answer on behalf of one request. A request whose client went away (`gone`)
   * stops its run: no one else could learn the token that would continue it.
   */
  private async answer (run: ProgrammaticRun, request: RoundRequest, next: () => Promise<RoundAnswer>): Promise<RoundAnswer> {
    const { requestId, gone } = request
    if (requestId !== null) this.byRequest.set(requestId, run)
    const abandon = () => run.cancel('The client went away before the answer.')
    if (gone?.aborted === true) abandon()
    gone?.addEventListener('abort', abandon, { once: true })
    try {
      const answer = await next()
      // the client may send the continuation to any replica: the route to this one is written first
      if (answer.status === 'tool_call_required') await this.routeWrites.get(answer.token)
      return answer
    } finally {
      gone?.removeEventListener('abort', abandon)
      if (requestId !== null && this.byRequest.get(requestId) === run) this.byRequest.delete(requestId)
    }
  }

  private forget (run: ProgrammaticRun): void {
    this.runs.delete(run)
    for (const [token, other] of this.byToken) if (other === run) this.drop(token)
    for (const [id, other] of this.byRequest) if (other === run) this.byRequest.delete(id)
  }

  private remember (token: string, run: ProgrammaticRun): void {
    this.byToken.set(token, run)
    const written = this.deps.routes?.add('ptc', token)
    if (written !== undefined) this.routeWrites.set(token, written)
  }

  private drop (token: string): void {
    this.byToken.delete(token)
    this.routeWrites.delete(token)
    this.deps.routes?.remove('ptc', token)
  }
}
