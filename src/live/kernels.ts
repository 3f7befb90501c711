import { randomUUID } from 'node:crypto'
import { StringDecoder } from 'node:string_decoder'
import type { Logger } from 'pino'
import { sameOwner, type Identity } from '../auth/identity.ts'
import type { ExecutionLimits, JupyterSettings } from '../config.ts'
import { WARDEN_ERRORS, WardenError } from '../errors.ts'
import type { OutputSink, Run } from '../pool/run.ts'
import { formatBytes } from '../units.ts'
import type { LiveWorker, LiveWorkers } from './registry.ts'

/** What a cell produces, in order, as Jupyter's iopub messages carry it. */
export type CellOutput =
  | { type: 'stream', name: 'stdout' | 'stderr', text: string }
  | { type: 'display_data' | 'execute_result', data: Record<string, string>, metadata: Record<string, unknown> }
  | { type: 'error', ename: string, evalue: string, traceback: string[] }

export type CellReply =
  | { status: 'ok', executionCount: number }
  | { status: 'error', executionCount: number, ename: string, evalue: string, traceback: string[] }

export type KernelState = 'starting' | 'idle' | 'busy' | 'restarting' | 'dead'

/** After an interrupt at the time limit, how long a cell may take to stop before its kernel is restarted. */
const INTERRUPT_GRACE_MS = 2_000
/** Larger stream messages are split: every WebSocket message stays well under Open WebUI's 1 MiB. */
const MAX_STREAM_TEXT = 256 * 1024
const NO_OUTPUTS: OutputSink = { open: async () => null }
/**
 * Cells waiting behind the running one, per kernel, by count and by the size of their code: a client that
 * floods execute_requests (each up to the 8 MiB a WebSocket message may carry) would otherwise hold all of
 * them in the server's memory (found: 100 queued 4 MiB cells). Past either bound a cell is refused at once.
 */
export const MAX_QUEUED_CELLS = 16
export const MAX_QUEUED_CODE_BYTES = 16 * 1024 * 1024

export interface KernelDeps {
  live: LiveWorkers
  settings: JupyterSettings
  limits: ExecutionLimits
  log: Logger
  /** the replicas' routing table (REDIS_URL): told which kernels live here; absent for one process */
  routes?: LiveRouteBook
}

/** Where a replica says which live things it holds, so the others forward their requests here. */
export interface LiveRouteBook {
  /** settles once the route is written (or Redis refused it: the next heartbeat writes it again) */
  add (kind: 'kernel' | 'ptc', id: string): Promise<void>
  remove (kind: 'kernel' | 'ptc', id: string): void
}

/**
 * A Jupyter kernel: a live jailed worker running cells one at a time in one interpreter, so variables and
 * imports carry over. The worker is adopted from the warm pool when the kernel starts, replaced on
 * restart, and started again after it died (a kernel killed by its memory limit starts fresh).
 */
export class Kernel {
  readonly id = randomUUID()
  lastActivity = new Date()
  executionCount = 0
  connections = 0
  private worker: Promise<LiveWorker> | null = null
  private running: Run | null = null
  private queue: Promise<unknown> = Promise.resolve()
  private readonly queued = { cells: 0, codeBytes: 0 }
  private busy = false
  private restarting = false
  private shutDown = false
  private readonly shutdownListeners = new Set<() => void>()

  constructor (readonly owner: Identity, private readonly deps: KernelDeps, private readonly onCulled: (kernel: Kernel) => void) {}

  get state (): KernelState {
    if (this.shutDown) return 'dead'
    if (this.restarting) return 'restarting'
    if (this.busy) return 'busy'
    return this.worker === null ? 'starting' : 'idle'
  }

  /** Start (or adopt) the worker now, so the first cell does not wait for it. */
  warmUp (): Promise<LiveWorker> {
    if (this.shutDown) return Promise.reject(new WardenError(WARDEN_ERRORS.liveNotFound, 'This kernel was shut down.'))
    if (this.worker === null) {
      const starting = this.deps.live.create(this.owner, 'kernel', { max: this.deps.settings.maxKernels, maxPerUser: this.deps.settings.maxKernelsPerUser }, {
        idleTimeoutMs: this.deps.settings.kernelIdleTimeoutMs,
      })
      this.worker = starting
      starting.then((live) => live.onEnd((reason) => {
        if (this.worker !== starting) return
        this.worker = null
        // culled for idleness, or the server is stopping: the kernel goes with its worker
        if (reason === 'expired' || reason === 'shutdown') this.end()
      }), () => { if (this.worker === starting) this.worker = null })
    }
    return this.worker
  }

  /**
   * Run one cell after those already queued; `onStart` learns its execution count when it starts,
   * `emit` receives its outputs in order.
   */
  execute (code: string, emit: (output: CellOutput) => void, onStart: (executionCount: number) => void = () => {}): Promise<CellReply> {
    const codeBytes = Buffer.byteLength(code)
    if (this.queued.cells >= MAX_QUEUED_CELLS || this.queued.codeBytes + codeBytes > MAX_QUEUED_CODE_BYTES) {
      const evalue = `This kernel already has ${this.queued.cells} cells waiting (at most ${MAX_QUEUED_CELLS}, ${formatBytes(MAX_QUEUED_CODE_BYTES)} of code); this one was not run.`
      const refused: CellOutput = { type: 'error', ename: 'KernelBusy', evalue, traceback: [`KernelBusy: ${evalue}`] }
      emit(refused)
      return Promise.resolve({ status: 'error', executionCount: this.executionCount, ename: refused.ename, evalue, traceback: refused.traceback })
    }
    this.queued.cells++
    this.queued.codeBytes += codeBytes
    const result = this.queue.then(() => {
      // running: the code is no longer waiting (the run holds it until the worker has it)
      this.queued.cells--
      this.queued.codeBytes -= codeBytes
      return this.runCell(code, emit, onStart)
    })
    this.queue = result.catch(() => {})
    return result
  }

  /** SIGINT to the running cell: KeyboardInterrupt in Python; the kernel and its state stay. */
  interrupt (): void {
    this.running?.interrupt()
  }

  /** Stop whatever runs: an interrupt, and if the cell ignores it, its worker (the next cell gets a fresh one). */
  stopWork (): void {
    const run = this.running
    if (run === null) return
    run.interrupt()
    setTimeout(() => { if (!run.isFinished) this.worker?.then((live) => live.end('stopped'), () => {}) }, INTERRUPT_GRACE_MS).unref()
  }

  /** A fresh interpreter: the old worker ends (with any running cell), the next cell gets a new one. */
  async restart (): Promise<void> {
    this.restarting = true
    try {
      const old = this.worker
      this.worker = null
      this.executionCount = 0
      if (old !== null) (await old.catch(() => null))?.end('stopped')
      await this.warmUp().catch(() => {})
    } finally {
      this.restarting = false
    }
  }

  /** Told once when the kernel is gone (shut down or culled); the answer stops telling. */
  onShutdown (listener: () => void): () => void {
    if (this.shutDown) {
      listener()
      return () => {}
    }
    this.shutdownListeners.add(listener)
    return () => this.shutdownListeners.delete(listener)
  }

  /** Stops the kernel's work and its worker; the kernel is gone. */
  shutdown (): void {
    if (this.shutDown) return
    this.shutDown = true
    this.tellShutdown()
    this.running?.kill('kernel shut down')
    this.worker?.then((live) => live.end('stopped'), () => {})
    this.worker = null
  }

  private end (): void {
    if (this.shutDown) return
    this.shutDown = true
    this.tellShutdown()
    this.onCulled(this)
  }

  private tellShutdown (): void {
    for (const listener of [...this.shutdownListeners]) listener()
    this.shutdownListeners.clear()
  }

  private async runCell (code: string, emit: (output: CellOutput) => void, onStart: (executionCount: number) => void): Promise<CellReply> {
    if (this.shutDown) throw new WardenError(WARDEN_ERRORS.liveNotFound, 'This kernel was shut down.')
    this.busy = true
    this.lastActivity = new Date()
    const executionCount = ++this.executionCount
    onStart(executionCount)
    try {
      const live = await this.warmUp()
      const run = live.start({
        program: { runner: 'python', cell: { executionCount } },
        code,
        args: [],
        inputs: [],
        cpuSeconds: Math.ceil(this.deps.limits.timeoutMs / 1000) + 1,
        collect: false,
        outputs: NO_OUTPUTS,
      })
      this.running = run
      return await this.follow(run, live, executionCount, emit)
    } finally {
      this.running = null
      this.busy = false
      this.lastActivity = new Date()
    }
  }

  /** Turn the run's events into cell outputs, enforcing the time limit and the output caps. */
  private async follow (run: Run, live: LiveWorker, executionCount: number, emit: (output: CellOutput) => void): Promise<CellReply> {
    const limits = this.deps.limits
    const decoders = { stdout: new StringDecoder('utf8'), stderr: new StringDecoder('utf8') }
    const sent = { stdout: 0, stderr: 0 }
    const caps = { stdout: limits.maxStdoutBytes, stderr: limits.maxStderrBytes }
    let error: CellReply | null = null
    let limitNote: string | null = null
    const timer = setTimeout(() => {
      limitNote = `Execution exceeded the time limit of ${limits.timeoutMs / 1000} s and was stopped.`
      run.interrupt()
      // a cell that ignores the interrupt (a blocked C call, a child process) costs its kernel's state
      setTimeout(() => { if (!run.isFinished) live.end('stopped') }, INTERRUPT_GRACE_MS).unref()
    }, limits.timeoutMs)
    try {
      for await (const event of run.events) {
        if (event.type === 'stdout' || event.type === 'stderr') {
          const room = caps[event.type] - sent[event.type]
          if (room <= 0) continue
          const chunk = event.chunk.subarray(0, room)
          sent[event.type] += chunk.length
          emitStream(emit, event.type, decoders[event.type].write(chunk))
          if (chunk.length < event.chunk.length) {
            limitNote = `Output exceeded the limit of ${formatBytes(caps[event.type])} on ${event.type}; the rest was dropped and the cell stopped.`
            run.interrupt()
          }
        } else if (event.type === 'message') {
          const output = cellOutput(event.message)
          if (output === null) continue
          // the time limit's own interrupt: its KeyboardInterrupt is reported as the limit, below
          if (output.type === 'error' && limitNote !== null && output.ename === 'KeyboardInterrupt') continue
          if (output.type === 'error') error = { status: 'error', executionCount, ename: output.ename, evalue: output.evalue, traceback: output.traceback }
          emit(output)
        }
      }
      const result = await run.done
      for (const name of ['stdout', 'stderr'] as const) emitStream(emit, name, decoders[name].end())
      if (result.vanished) {
        const oom = (result.counters?.oomKills ?? 0) > 0
        const evalue = oom
          ? `The kernel exceeded the memory limit of ${formatBytes(limits.memoryBytes)} and was stopped; the next cell starts a fresh one.`
          : limitNote ?? 'The kernel stopped; the next cell starts a fresh one.'
        const died: CellOutput = { type: 'error', ename: oom ? 'MemoryError' : 'KernelDied', evalue, traceback: [`${oom ? 'MemoryError' : 'KernelDied'}: ${evalue}`] }
        emit(died)
        return { status: 'error', executionCount, ename: died.ename, evalue, traceback: died.traceback }
      }
      if (limitNote !== null) {
        const stopped: CellOutput = { type: 'error', ename: 'LimitExceeded', evalue: limitNote, traceback: [`LimitExceeded: ${limitNote}`] }
        emit(stopped)
        return { status: 'error', executionCount, ename: stopped.ename, evalue: limitNote, traceback: stopped.traceback }
      }
      return error ?? { status: 'ok', executionCount }
    } finally {
      clearTimeout(timer)
    }
  }
}

function emitStream (emit: (output: CellOutput) => void, name: 'stdout' | 'stderr', text: string): void {
  for (let offset = 0; offset < text.length; offset += MAX_STREAM_TEXT) {
    emit({ type: 'stream', name, text: text.slice(offset, offset + MAX_STREAM_TEXT) })
  }
}

/** A message from the worker's cell runner (sandbox/cells.py), checked: the worker is as untrusted as the code. */
function cellOutput (message: Record<string, unknown>): CellOutput | null {
  const strings = (value: unknown) => typeof value === 'object' && value !== null && !Array.isArray(value) &&
    Object.values(value).every((item) => typeof item === 'string')
  if ((message.type === 'display_data' || message.type === 'execute_result') && strings(message.data)) {
    return { type: message.type, data: message.data as Record<string, string>, metadata: {} }
  }
  if (message.type === 'error' && typeof message.ename === 'string' && typeof message.evalue === 'string' &&
    Array.isArray(message.traceback) && message.traceback.every((line) => typeof line === 'string')) {
    return { type: 'error', ename: message.ename, evalue: message.evalue, traceback: message.traceback as string[] }
  }
  return null
}

/** The kernels of a server: made, found by owner, and shut down; a kernel of another owner does not exist. */
export class KernelManager {
  private readonly kernels = new Map<string, Kernel>()
  /** replicas: the write of each new kernel's route, awaited before its id is answered (`routed`) */
  private readonly routeWrites = new Map<string, Promise<void>>()
  private created = 0
  private culled = 0

  constructor (private readonly deps: KernelDeps) {}

  /** A new kernel for `owner`; its worker is started at once, in the background. */
  create (owner: Identity): Kernel {
    const owned = this.list(owner).length
    if (owned >= this.deps.settings.maxKernelsPerUser) {
      throw new WardenError(WARDEN_ERRORS.liveCapacity, `This user already has ${owned} kernels; the limit is ${this.deps.settings.maxKernelsPerUser}.`, { retryAfterSeconds: 10 })
    }
    if (this.kernels.size >= this.deps.settings.maxKernels) {
      throw new WardenError(WARDEN_ERRORS.liveCapacity, `The server holds as many kernels as it may (${this.deps.settings.maxKernels}).`, { retryAfterSeconds: 10 })
    }
    const kernel = new Kernel(owner, this.deps, (culled) => {
      this.kernels.delete(culled.id)
      this.deps.routes?.remove('kernel', culled.id)
      this.culled++
      this.deps.log.info({ kernel: culled.id }, 'kernel culled')
    })
    this.kernels.set(kernel.id, kernel)
    const written = this.deps.routes?.add('kernel', kernel.id)
    if (written !== undefined) this.routeWrites.set(kernel.id, written)
    this.created++
    kernel.warmUp().catch((error: Error) => this.deps.log.warn({ kernel: kernel.id, err: error }, 'kernel worker did not start'))
    return kernel
  }

  /** Settles once the other replicas can find kernel `id` (at once for one process): then its id may be told. */
  async routed (id: string): Promise<void> {
    const written = this.routeWrites.get(id)
    this.routeWrites.delete(id)
    await written
  }

  get (id: string, owner: Identity): Kernel | null {
    const kernel = this.kernels.get(id)
    return kernel !== undefined && sameOwner(kernel.owner, owner) ? kernel : null
  }

  list (owner: Identity): Kernel[] {
    return [...this.kernels.values()].filter((kernel) => sameOwner(kernel.owner, owner))
  }

  delete (id: string, owner: Identity): boolean {
    const kernel = this.get(id, owner)
    if (kernel === null) return false
    kernel.shutdown()
    this.kernels.delete(id)
    this.deps.routes?.remove('kernel', id)
    return true
  }

  stats (): { kernels: number, created: number, culled: number } {
    return { kernels: this.kernels.size, created: this.created, culled: this.culled }
  }

  close (): void {
    for (const kernel of this.kernels.values()) {
      kernel.shutdown()
      this.deps.routes?.remove('kernel', kernel.id)
    }
    this.kernels.clear()
  }
}
