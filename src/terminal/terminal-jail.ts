import { randomBytes } from 'node:crypto'
import type { Logger } from 'pino'
import type { Identity } from '../auth/identity.ts'
import type { ExecutionLimits, SessionSettings } from '../config.ts'
import { toWorkerInputs } from '../exec/inputs.ts'
import { OutputCollector } from '../exec/outputs.ts'
import { planWorkspace, updateWorkspace, type WorkspacePlan } from '../exec/workspace.ts'
import type { LiveWorker } from '../live/registry.ts'
import type { OutputFile, OutputSink, Run } from '../pool/run.ts'
import type { FileStore } from '../storage/file-store.ts'
import { newId } from '../storage/ids.ts'
import type { Workspaces } from '../storage/workspaces.ts'

/** A failure inside the jail, as Open Terminal reports it: an HTTP status and a `detail`. */
export class TerminalError extends Error {
  override name = 'TerminalError'
  constructor (readonly status: number, readonly detail: string) { super(detail) }
}

export interface TerminalJailDeps {
  store: FileStore
  workspaces: Workspaces
  sessions: SessionSettings
  limits: ExecutionLimits
  log: Logger
}

/** A byte stream of the jail: a shell's output, a file going out. */
export interface ChannelReader { onBytes (chunk: Buffer): void, onEof (): void, onConsumed?: (bytes: number) => void }

/** The largest answer the jail may send in one message (a read_file, a grep): bigger ones are refused there. */
const MAX_REPLY_BYTES = 4 * 1024 * 1024
/** Exits remembered, so that a wait for a process that already ended (even as its own spawn was answered) is not a wait. */
const MAX_EXITED_KEPT = 1024
/** A terminal lives for days: its own process gets a CPU budget that only a runaway loop there reaches. */
const TERMINAL_CPU_SECONDS = 7 * 86_400
/** Keystrokes the server sends ahead of what the shell took: a huge paste waits here, then in the socket. */
export const INPUT_WINDOW_BYTES = 256 * 1024

/**
 * One user's terminal jail: a live jailed worker running sandbox/terminal.py for as long as the user's
 * terminal lasts. Every command, shell and file operation of that user runs in it; its /mnt/data is the
 * user's home, staged from a runtime session when it starts and checkpointed back to it after changes,
 * so the home outlives the worker and a restart of Warden. When it ends, everything it runs ends with it
 * (the worker is the pid 1 of its pid namespace).
 */
export class TerminalJail {
  lastUsedAt = Date.now()
  private nextRequest = 1
  private nextChannel = 1
  private readonly pending = new Map<number, { resolve: (value: unknown) => void, reject: (error: Error) => void }>()
  private readonly channels = new Map<number, ChannelReader>()
  private readonly exitWaiters = new Map<string, Array<() => void>>()
  /** processes whose exit was seen, newest last: a wait for one of them is over before it begins */
  private readonly exited = new Set<string>()
  private checkpointing: Promise<void> | null = null
  private checkpointAgain = false
  private collector: OutputCollector | null = null
  private endedError: Error | null = null
  /** settles once the home is staged and the loop serves: a request sent before would land among the inputs' frames */
  private readonly started: Promise<void>
  private markStarted: () => void = () => {}

  private constructor (
    readonly owner: Identity,
    private readonly plan: WorkspacePlan,
    private readonly live: LiveWorker,
    private readonly run: Run,
    private readonly deps: TerminalJailDeps
  ) {
    this.started = new Promise((resolve) => { this.markStarted = resolve })
    this.pump().catch(() => {})
  }

  /** Starts the terminal in `live`, with the home of runtime session `hint` of `owner`. */
  static async start (owner: Identity, hint: string, live: LiveWorker, deps: TerminalJailDeps): Promise<TerminalJail> {
    const plan = await planWorkspace({ kind: 'runtime', hint }, owner, { store: deps.store, workspaces: deps.workspaces, settings: deps.sessions })
    let jail: TerminalJail | null = null
    const sink: OutputSink = { open: async (name): Promise<OutputFile | null> => await (jail?.collector?.open(name) ?? Promise.resolve(null)) }
    const run = live.start({
      program: { runner: 'terminal', settings: { max_log_bytes: deps.limits.maxStdoutBytes, max_reply_bytes: MAX_REPLY_BYTES } },
      code: '',
      args: [],
      inputs: toWorkerInputs(plan.files, deps.store),
      cpuSeconds: TERMINAL_CPU_SECONDS,
      collect: false,
      outputs: sink,
    }, { last: true })
    jail = new TerminalJail(owner, plan, live, run, deps)
    return jail
  }

  get isAlive (): boolean { return this.endedError === null && this.live.isAlive }
  get workspaceId (): string { return this.plan.id }

  touch (): void { this.lastUsedAt = Date.now(); this.live.touch() }

  /** One request to the jail's loop; its answer, or a TerminalError with the jail's status and detail. */
  async request<T = Record<string, unknown>> (op: string, args: Record<string, unknown> = {}): Promise<T> {
    await this.started
    if (this.endedError !== null) throw this.endedError
    this.touch()
    const id = this.nextRequest++
    const answer = new Promise<unknown>((resolve, reject) => this.pending.set(id, { resolve, reject }))
    await this.run.send({ ...args, op, id }).catch((error: Error) => {
      this.pending.delete(id)
      throw new TerminalError(503, `The terminal is gone: ${error.message}`)
    })
    return await answer as T
  }

  /** A message that wants no answer (credit for a channel). */
  notify (op: string, args: Record<string, unknown>): void {
    // only after a request was answered (a channel exists), so the loop already serves
    this.run.send({ ...args, op }).catch(() => {})
  }

  /** A new channel number, and who receives its bytes. */
  openChannel (reader: ChannelReader): number {
    const channel = this.nextChannel++
    this.channels.set(channel, reader)
    return channel
  }

  closeChannel (channel: number): void { this.channels.delete(channel) }

  /** Bytes for a channel; resolves once the jail took them (the window refills as it reports them used). */
  async write (channel: number, bytes: Buffer): Promise<void> {
    await this.started
    await this.run.sendChannel(channel, bytes)
  }

  /** Resolves when the process `proc` exits (or the jail ends), or after `ms`. */
  async untilExit (proc: string, ms: number): Promise<void> {
    if (ms <= 0 || this.endedError !== null || this.exited.has(proc)) return
    await new Promise<void>((resolve) => {
      const timer = setTimeout(done, ms)
      const waiters = this.exitWaiters.get(proc) ?? []
      waiters.push(done)
      this.exitWaiters.set(proc, waiters)
      function done () { clearTimeout(timer); resolve() }
    })
  }

  /**
   * New and changed files of the home go to the store and into the runtime session; files deleted leave
   * it. Calls while one runs are folded into one more after it.
   */
  checkpoint (): Promise<void> {
    if (this.checkpointing !== null) {
      this.checkpointAgain = true
      return this.checkpointing
    }
    this.checkpointing = this.saveHome().finally(() => {
      this.checkpointing = null
      if (this.checkpointAgain && this.isAlive) {
        this.checkpointAgain = false
        this.checkpoint().catch(() => {})
      }
    })
    return this.checkpointing
  }

  /** The home is saved, then the jail and everything running in it end. */
  async close (reason: 'stopped' | 'expired' | 'shutdown'): Promise<void> {
    if (this.isAlive) {
      await this.checkpoint().catch((error: Error) => this.deps.log.warn({ err: error, workspace: this.plan.id }, 'terminal home not saved'))
      await this.request('close').catch(() => {})
    }
    this.live.end(reason)
  }

  private async saveHome (): Promise<void> {
    const { limits, sessions } = this.deps
    const collector = new OutputCollector(this.deps.store, newId(), this.owner, {
      maxOutputFiles: sessions.workspaceMaxFiles,
      maxOutputFileBytes: limits.maxOutputFileBytes,
      maxOutputTotalBytes: sessions.workspaceQuotaBytes ?? limits.workdirBytes,
    })
    this.collector = collector
    try {
      const result = await this.request<{ deleted?: unknown }>('checkpoint', {
        max_files: sessions.workspaceMaxFiles,
        max_file_bytes: limits.maxOutputFileBytes,
        max_total_bytes: sessions.workspaceQuotaBytes ?? limits.workdirBytes,
      })
      const deleted = Array.isArray(result.deleted) ? result.deleted.filter((name): name is string => typeof name === 'string') : []
      const files = await collector.keep()
      await updateWorkspace(this.plan, [], files, deleted, this.owner, { store: this.deps.store, workspaces: this.deps.workspaces, settings: sessions })
    } catch (error) {
      await collector.discard()
      throw error
    } finally {
      this.collector = null
    }
  }

  /** Everything the jail sends, dispatched; the jail's end fails what still waits for it. */
  private async pump (): Promise<void> {
    try {
      for await (const event of this.run.events) {
        if (event.type === 'started') this.markStarted()
        else if (event.type === 'channel') this.channels.get(event.channel)?.onBytes(event.chunk)
        else if (event.type === 'message') this.onMessage(event.message)
      }
    } finally {
      const result = await this.run.done.catch(() => null)
      this.deps.log.info({ workspace: this.plan.id, failure: result?.failure, protocolViolation: result?.protocolViolation, vanished: result?.vanished, oomKills: result?.counters?.oomKills }, 'terminal ended')
      this.endedError = new TerminalError(503, 'The terminal has ended; the next request starts it again.')
      this.markStarted()
      for (const waiter of this.pending.values()) waiter.reject(this.endedError)
      this.pending.clear()
      for (const reader of this.channels.values()) reader.onEof()
      this.channels.clear()
      for (const waiters of this.exitWaiters.values()) for (const waiter of waiters) waiter()
      this.exitWaiters.clear()
      this.live.end('stopped')
    }
  }

  /** A message from the jail, checked: it runs with the user's privileges, so it is as untrusted as they are. */
  private onMessage (message: Record<string, unknown>): void {
    if (typeof message.re === 'number') {
      const waiter = this.pending.get(message.re)
      if (waiter === undefined) return
      this.pending.delete(message.re)
      const error = message.error as { status?: unknown, detail?: unknown } | null | undefined
      if (typeof error === 'object' && error !== null) {
        const status = typeof error.status === 'number' && error.status >= 400 && error.status < 500 ? error.status : 400
        waiter.reject(new TerminalError(status, typeof error.detail === 'string' ? error.detail.slice(0, 2000) : 'The operation failed.'))
      } else {
        waiter.resolve(message.ok ?? {})
      }
      return
    }
    if (message.ev === 'exited' && typeof message.proc === 'string') {
      this.exited.add(message.proc)
      // bounded: ids past the last MAX_EXITED_KEPT are long forgotten by Commands (128) and the jail (64)
      if (this.exited.size > MAX_EXITED_KEPT) this.exited.delete(this.exited.values().next().value as string)
      for (const waiter of this.exitWaiters.get(message.proc) ?? []) waiter()
      this.exitWaiters.delete(message.proc)
    } else if (message.ev === 'eof' && typeof message.channel === 'number') {
      this.channels.get(message.channel)?.onEof()
      this.channels.delete(message.channel)
    } else if (message.ev === 'consumed' && typeof message.channel === 'number' && typeof message.bytes === 'number') {
      this.channels.get(message.channel)?.onConsumed?.(message.bytes)
    }
  }
}

/** Open Terminal's process ids: `YYYYMMDD-HHMMSS-<6 hex>` (spec §1). */
export function newProcessId (now = new Date()): string {
  const stamp = now.toISOString().replace(/[-:]/g, '').replace('T', '-').slice(0, 15)
  return `${stamp}-${randomBytes(3).toString('hex')}`
}
