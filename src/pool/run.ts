import type { CgroupCounters } from '../jail/cgroup.ts'
import { EventQueue } from './event-queue.ts'
import { randomBytesFromPool } from './random-pool.ts'
import { CHANNEL_BYTES, DATA_CHUNK_BYTES, FrameType, MARKER_BYTES, RunStream, encodeChannelBytes, encodeFrame, encodeJsonMessage, type Frame } from './protocol.ts'

/** An input file streamed into the worker before the code starts. */
export interface WorkerInput {
  name: string
  size: number
  read: () => AsyncIterable<Uint8Array>
}

/** Where output files go as they stream out of the worker; the caller decides whether to keep them. */
export interface OutputSink {
  open (name: string): Promise<OutputFile | null>
}
export interface OutputFile {
  write (chunk: Uint8Array): Promise<void>
  close (sizeReported: number): Promise<void>
  abort (): Promise<void>
}

/**
 * One step of a program run as processes (compile, then run): `{source}`, `{dir}` and `{args}` are filled
 * in by the worker. `stdoutToStderr`: the step's stdout goes to stderr (a compiler printing its messages there).
 */
export interface ProgramStep { name: string, argv: string[], timeoutMs?: number, env?: Record<string, string>, stdoutToStderr?: boolean }

/**
 * An interpreter a worker may start before its program is known (sandbox/prepared.py): `argv` runs it,
 * `files` are written to the source folder first (a bootstrap), `warmup` is fed to it at once. It writes
 * `L` to {dir}/signal when loaded and `S` when the program starts. `job` handoff: it reads
 * {"source", "args"} from the FIFO {dir}/job; `source` handoff: the source file is a FIFO it reads the
 * program from, after `prefix` (where `{args_items}` becomes the args as comma-separated JSON strings).
 */
export interface PreparedStart {
  /** one kind of prepared worker per key (the language) */
  key: string
  argv: string[]
  handoff: 'job' | 'source'
  files?: Record<string, string>
  warmup?: string
  prefix?: string
}

/** A file of the source folder ({dir}) a build made, as the compile cache keeps it. */
export interface Artifact { name: string, bytes: Buffer }

/**
 * The compile cache's part in a job: `provide` hands the worker a build's artifacts instead of the build
 * (the program's steps are then only its run); `capture` asks the worker for the named artifacts once
 * the build steps succeeded, before the run step starts, and gives them to `keep`.
 */
export type ArtifactExchange =
  | { provide: readonly Artifact[] }
  | { capture: readonly string[], maxBytes: number, keep: (artifacts: Artifact[]) => void }

/** How the worker runs the code: in its warm Python interpreter, or as argv steps. */
export type Program =
  /** `cell`: run as a Jupyter cell (last expression, figures and errors as messages) */
  | { runner: 'python', cell?: { executionCount: number } }
  /** `prepare`: a worker prepared with it runs the steps in that interpreter, any other as processes */
  /** `artifacts`: files of {dir} the build steps make and the run step needs (what the compile cache keeps) */
  | { runner: 'steps', sourceFile: string, steps: ProgramStep[], env?: Record<string, string>, prepare?: PreparedStart, artifacts?: readonly string[] }
  /** an Open WebUI user's terminal (sandbox/terminal.py): requests and channel bytes until it is closed */
  | { runner: 'terminal', settings: { max_log_bytes: number, max_reply_bytes: number } }

export interface WorkerJob {
  program: Program
  code: string
  args: string[]
  inputs: WorkerInput[]
  /** RLIMIT_CPU for the run, a backstop behind the caller's wall-clock limit */
  cpuSeconds: number
  /** the worker waits for another job afterwards (a live worker) instead of exiting */
  keep: boolean
  /** send new and changed files of /mnt/data back after the run (default); a kernel keeps them in place */
  collect?: boolean
  outputs: OutputSink
  /** tools the code may call (programmatic tool calling): stubs by these identifiers ask the server */
  tools?: ToolStub[]
  /** build artifacts handed in, or asked for (the compile cache) */
  artifacts?: ArtifactExchange
}

/** A tool as the code sees it: `identifier` is the Python/Bash name of its stub; calls carry `name`. */
export interface ToolStub { name: string, identifier: string, description?: string }

export type RunEvent =
  | { type: 'started' }
  | { type: 'stdout', chunk: Buffer }
  | { type: 'stderr', chunk: Buffer }
  /** a JSON message from the running code (a tool call, display data) */
  | { type: 'message', message: Record<string, unknown> }
  /** bytes of a terminal channel (a shell's output, a file being downloaded) */
  | { type: 'channel', channel: number, chunk: Buffer }

export interface RunResult {
  exitCode: number | null
  signal: number | null
  /** the argv step that failed (`compile`, `run`); null when all succeeded or for Python */
  failedStep: string | null
  stepTimedOut: boolean
  /** the program ran in an interpreter the worker had started before the job (sandbox/prepared.py) */
  prepared: boolean
  /** the code was interrupted (SIGINT) and stopped */
  interrupted: boolean
  /** the run never reported its end: the worker died, was killed, or broke the protocol */
  vanished: boolean
  /** why the run could not be carried out (for logs; clients get a generic message) */
  failure: string | null
  /** the run's code wrote something on the control socket that is not the protocol; it was stopped */
  protocolViolation: string | null
  /** the jail holding the worker died: not the code's doing */
  jailLost: boolean
  deletedInputs: string[]
  /** new or changed files the worker did not send because the code failed */
  discardedOutputs: number
  notes: string[]
  counters: CgroupCounters | null
  wallMs: number
  phases: RunPhases
}

/** ms from the start of the run to each step, for logs and metrics */
export interface RunPhases { sentMs: number, startedMs: number | null, doneMs: number | null, closedMs: number, countedMs: number }

/** What a run needs from its worker. */
export interface RunLink {
  write (bytes: Buffer): Promise<void>
  interrupt (): void
  kill (reason: string): void
  readCounters (): Promise<CgroupCounters | null>
  /** pause or resume reading the worker's sockets (backpressure) */
  pressure (source: 'events' | 'frames', paused: boolean): void
}

interface DoneMessage {
  exit_code?: unknown,
  signal?: unknown,
  failed_step?: unknown,
  step_timed_out?: unknown,
  prepared?: unknown,
  interrupted?: unknown,
  deleted?: unknown,
  notes?: unknown,
  discarded?: unknown
}

/** After a kill, how long to wait for the worker's streams to close before giving up on it. */
const KILL_GRACE_MS = 5_000
/** After a worker's streams closed, how long its exit status may take to arrive. */
const EXIT_STATUS_GRACE_MS = 2_000
const FRAME_QUEUE_HIGH = 8
const FRAME_QUEUE_LOW = 2

/**
 * One run of code in a worker, as a stream of events and a result. The run owns the worker's streams from
 * its job until its end: the done frame plus its marker on stdout and stderr, or the worker's end (EOF on
 * every stream). `events` must be consumed; it applies backpressure to the worker.
 */
export class Run {
  readonly events: EventQueue<RunEvent>
  readonly done: Promise<RunResult>
  private readonly started = performance.now()
  private readonly stdout: RunStream
  private readonly stderr: RunStream
  private finish: () => void = () => {}
  private finished = false
  private doneMessage: DoneMessage | null = null
  private failure: string | null = null
  private controlEnded = false
  private exitKnown = false
  private exitSignal: number | null = null
  private jailLost = false
  private protocolViolation: string | null = null
  private awaitingExit = false
  private frameQueue: Promise<void> = Promise.resolve()
  private queuedFrames = 0
  private currentOutput: Promise<OutputFile | null> | null = null
  /** the build's artifacts as they arrive (compile cache capture); `announced` once the one A frame came */
  private artifacts: { announced: boolean, receiving: ArtifactReceipt | null } = { announced: false, receiving: null }
  /** a frame other than the build's artifacts arrived after S: any artifact frame now is not the worker's */
  private framedAfterStart = false
  private readonly timers: NodeJS.Timeout[] = []
  private readonly phases: Partial<RunPhases> = {}

  /** seeds the run's sync markers (protocol.ts syncMarker): the worker writes them before it sends a message */
  readonly syncSeed = randomBytesFromPool(MARKER_BYTES)

  constructor (private readonly link: RunLink, private readonly job: WorkerJob, readonly marker: Buffer, private readonly maxMessageBytes: number) {
    const size = (event: RunEvent) => event.type === 'stdout' || event.type === 'stderr' || event.type === 'channel' ? event.chunk.length : 256
    this.events = new EventQueue<RunEvent>(size, (paused) => link.pressure('events', paused))
    this.stdout = new RunStream(marker, (chunk) => this.events.push({ type: 'stdout', chunk }), this.syncSeed)
    this.stderr = new RunStream(marker, (chunk) => this.events.push({ type: 'stderr', chunk }), this.syncSeed)
    this.done = this.execute()
  }

  /** A JSON message to the running code (PTC tool results); rejects when the worker is gone. */
  async send (message: Record<string, unknown>): Promise<void> {
    const frame = encodeJsonMessage(FrameType.message, message)
    if (frame.length > this.maxMessageBytes + 64) throw new RangeError('the message is larger than the worker accepts')
    await this.link.write(frame)
  }

  /** Bytes for a terminal channel (keystrokes, an upload); rejects when the worker is gone. */
  async sendChannel (channel: number, bytes: Uint8Array): Promise<void> {
    await this.link.write(encodeChannelBytes(channel, bytes))
  }

  /** SIGINT to the running code: Python raises KeyboardInterrupt, a process group gets the signal. */
  interrupt (): void { if (!this.finished) this.link.interrupt() }

  /** Stop the run (and with it the worker); the run ends when the worker's streams close. */
  kill (reason: string): void {
    if (this.finished) return
    this.link.kill(reason)
    // if even a kill brings no end, give up on the worker rather than hang the caller
    this.timers.push(setTimeout(() => {
      this.failure ??= 'the worker did not stop after being killed'
      this.end()
    }, KILL_GRACE_MS))
  }

  get isFinished (): boolean { return this.finished }

  // --- driven by the worker ---------------------------------------------------------------------------

  onFrame (frame: Frame): void {
    this.queuedFrames++
    if (this.queuedFrames > FRAME_QUEUE_HIGH) this.link.pressure('frames', true)
    this.frameQueue = this.frameQueue
      .then(() => this.handleFrame(frame))
      .catch((error: Error) => {
        this.failure ??= `output handling failed: ${error.message}`
        this.kill('output failure')
      })
      .finally(() => {
        this.queuedFrames--
        if (this.queuedFrames <= FRAME_QUEUE_LOW) this.link.pressure('frames', false)
        this.checkFinished()
      })
  }

  /** Returns bytes after the run's marker: output of processes the run left running. */
  onStdout (chunk: Buffer): Buffer | null { const rest = this.stdout.push(chunk); this.checkFinished(); return rest }
  onStderr (chunk: Buffer): Buffer | null { const rest = this.stderr.push(chunk); this.checkFinished(); return rest }
  onStdoutEnd (): void { this.stdout.end(); this.checkFinished() }
  onStderrEnd (): void { this.stderr.end(); this.checkFinished() }

  onControlEnd (): void {
    this.controlEnded = true
    // a worker that closed its control socket but lives on has broken the protocol: end it
    if (this.doneMessage === null) this.kill('control channel closed')
    this.checkFinished()
  }

  onProtocolViolation (violation: string): void {
    this.protocolViolation ??= violation
    this.failure ??= `the worker broke the protocol: ${violation}`
    this.kill('protocol violation')
  }

  onExit (signal: number | null, jailLost: boolean): void {
    this.exitKnown = true
    this.exitSignal = signal
    this.jailLost = jailLost
    this.checkFinished()
  }

  // --- internals ----------------------------------------------------------------------------------------

  private async execute (): Promise<RunResult> {
    const finished = new Promise<void>((resolve) => { this.finish = resolve })
    // a slot's cgroup outlives its workers, and a live worker runs many times: count this run as a difference
    const baseline = await this.link.readCounters()
    this.sendJob().then(
      () => { this.phases.sentMs = this.elapsed() },
      (error: Error) => {
        // sending races the worker's end: a worker that died or stopped reading ends the run, not the server
        this.failure ??= `could not send the job to the worker: ${error.message}`
        this.kill('send failure')
      })
    await finished
    for (const timer of this.timers) clearTimeout(timer)
    await this.frameQueue
    this.events.close()
    this.phases.closedMs = this.elapsed()
    const counters = since(baseline, await this.link.readCounters())
    this.phases.countedMs = this.elapsed()
    return this.result(counters)
  }

  private async sendJob (): Promise<void> {
    const { program } = this.job
    const message = {
      runner: program.runner,
      code: this.job.code,
      args: this.job.args,
      cpu_seconds: this.job.cpuSeconds,
      keep: this.job.keep,
      collect: this.job.collect ?? true,
      marker: this.marker.toString('hex'),
      sync_seed: this.syncSeed.toString('hex'),
      files: this.job.inputs.map((input) => ({ name: input.name, size: input.size })),
      ...(this.job.tools !== undefined && this.job.tools.length > 0 ? { tools: this.job.tools } : {}),
      ...(program.runner === 'python' && program.cell !== undefined ? { cell: true, execution_count: program.cell.executionCount } : {}),
      ...(artifactsMessage(this.job.artifacts)),
      ...(program.runner === 'steps'
        ? {
            source_file: program.sourceFile,
            env: program.env ?? {},
            steps: program.steps.map((step) => ({
              name: step.name,
              argv: step.argv,
              timeout_ms: step.timeoutMs ?? null,
              env: step.env ?? {},
              ...(step.stdoutToStderr === true ? { stdout_to_stderr: true } : {}),
            })),
            ...(program.prepare === undefined ? {} : { prepare: { key: program.prepare.key } }),
          }
        : {}),
      ...(program.runner === 'terminal' ? { terminal: program.settings } : {}),
    }
    await this.link.write(encodeJsonMessage(FrameType.job, message))
    for (const input of this.job.inputs) {
      let sent = 0
      for await (const chunk of input.read()) {
        for (let offset = 0; offset < chunk.length; offset += DATA_CHUNK_BYTES) {
          const piece = chunk.subarray(offset, offset + DATA_CHUNK_BYTES)
          await this.link.write(encodeFrame(FrameType.data, piece))
          sent += piece.length
        }
      }
      if (sent !== input.size) throw new Error(`input ${input.name} changed size while being sent`)
    }
    const provided = this.job.artifacts !== undefined && 'provide' in this.job.artifacts ? this.job.artifacts.provide : []
    for (const artifact of provided) {
      for (let offset = 0; offset < artifact.bytes.length; offset += DATA_CHUNK_BYTES) {
        await this.link.write(encodeFrame(FrameType.data, artifact.bytes.subarray(offset, offset + DATA_CHUNK_BYTES)))
      }
    }
  }

  /**
   * The build's artifacts, asked for by the job: one A frame, right after S and before anything else, then
   * their bytes. The worker sends it after the build and before the run step starts (sandbox/artifacts.py),
   * so an A frame anywhere else, a second one, or one naming what was not asked for is not the worker's:
   * the run is stopped as for any protocol violation, and nothing is kept.
   */
  private receiveArtifacts (payload: Buffer): void {
    const exchange = this.job.artifacts
    const announced = parseJson(payload)?.files
    const files = Array.isArray(announced) ? announced as Array<{ name?: unknown, size?: unknown }> : null
    const placed = this.phases.startedMs !== undefined && !this.artifacts.announced && !this.framedAfterStart
    this.artifacts.announced = true
    if (exchange === undefined || !('capture' in exchange) || !placed || files === null) return this.onProtocolViolation('an artifact frame the job did not ask for here')
    const names = new Set(exchange.capture)
    let total = 0
    const expected: Array<{ name: string, size: number }> = []
    for (const file of files) {
      const { name, size } = file
      if (typeof name !== 'string' || !names.delete(name) || typeof size !== 'number' || !Number.isSafeInteger(size) || size < 0) {
        return this.onProtocolViolation('an artifact the job did not ask for')
      }
      total += size
      expected.push({ name, size })
    }
    if (total > exchange.maxBytes) return this.onProtocolViolation('artifacts larger than the job allows')
    // an empty list: the worker would not vouch for the build (a process it left behind); nothing to keep
    if (expected.length === 0) return
    this.artifacts.receiving = { expected, chunks: [], received: 0, done: [], keep: expected.length === exchange.capture.length ? exchange.keep : null }
    this.completeArtifacts(this.artifacts.receiving)
  }

  private receiveArtifactData (receipt: ArtifactReceipt, chunk: Buffer): void {
    const current = receipt.expected[receipt.done.length]
    if (current === undefined || receipt.received + chunk.length > current.size) return this.onProtocolViolation('artifact data beyond its size')
    receipt.chunks.push(chunk)
    receipt.received += chunk.length
    this.completeArtifacts(receipt)
  }

  /** Close every artifact whose bytes are all in (zero-byte ones at once); keep them when the last is. */
  private completeArtifacts (receipt: ArtifactReceipt): void {
    for (let current = receipt.expected[receipt.done.length]; current !== undefined && receipt.received === current.size; current = receipt.expected[receipt.done.length]) {
      receipt.done.push({ name: current.name, bytes: Buffer.concat(receipt.chunks) })
      receipt.chunks = []
      receipt.received = 0
    }
    if (receipt.done.length < receipt.expected.length) return
    this.artifacts.receiving = null
    receipt.keep?.(receipt.done)
  }

  private async handleFrame (frame: Frame): Promise<void> {
    const receipt = this.artifacts.receiving
    if (receipt !== null) {
      if (frame.type === FrameType.data) return this.receiveArtifactData(receipt, frame.payload)
      return this.onProtocolViolation('a frame inside an artifact')
    }
    if (frame.type === FrameType.artifact) return this.receiveArtifacts(frame.payload)
    if (this.phases.startedMs !== undefined) this.framedAfterStart = true
    switch (frame.type) {
      case FrameType.started:
        this.phases.startedMs = this.elapsed()
        this.events.push({ type: 'started' })
        return
      case FrameType.message: {
        const message = parseJson(frame.payload)
        if (message === null) return
        // the output the code wrote before this message comes first (frames wait behind this one)
        if (typeof message.sync === 'number') await Promise.all([this.stdout.untilSync(message.sync), this.stderr.untilSync(message.sync)])
        this.events.push({ type: 'message', message })
        return
      }
      case FrameType.output: {
        const name = parseJson(frame.payload)?.name
        this.currentOutput = typeof name === 'string' ? this.job.outputs.open(name) : Promise.resolve(null)
        return
      }
      case FrameType.data: {
        const output = await this.currentOutput
        await output?.write(frame.payload)
        return
      }
      case FrameType.outputEnd: {
        const output = await this.currentOutput
        this.currentOutput = null
        const size = parseJson(frame.payload)?.size
        await output?.close(typeof size === 'number' ? size : -1)
        return
      }
      case FrameType.terminal:
        if (this.job.program.runner !== 'terminal' || frame.payload.length < CHANNEL_BYTES) return this.onProtocolViolation('a terminal frame outside a terminal run')
        this.events.push({ type: 'channel', channel: frame.payload.readUInt32BE(0), chunk: frame.payload.subarray(CHANNEL_BYTES) })
        return
      case FrameType.done:
        this.doneMessage = parseJson(frame.payload) ?? {}
        this.phases.doneMs = this.elapsed()
        return
      case FrameType.failed: {
        const message = parseJson(frame.payload)?.message
        const reason = `the worker failed: ${typeof message === 'string' ? message.slice(0, 500) : 'unknown'}`
        // before the code started only the worker could fail; after, the code may have written this
        if (this.phases.startedMs === undefined) {
          this.failure ??= reason
          this.kill('worker failure')
        } else {
          this.onProtocolViolation(reason)
        }
        return
      }
      default:
        this.onProtocolViolation(`unexpected frame type ${frame.type}`)
    }
  }

  /**
   * Finished when stdout and stderr are closed (the run's marker or EOF) and either the done frame was
   * handled or the worker is gone (its control socket closed, and its exit status known or overdue).
   */
  private checkFinished (): void {
    if (this.finished || !this.stdout.isEnded || !this.stderr.isEnded || this.queuedFrames > 0) return
    if (this.doneMessage !== null) return this.end()
    if (!this.controlEnded) return
    if (this.exitKnown) return this.end()
    if (!this.awaitingExit) {
      this.awaitingExit = true
      this.timers.push(setTimeout(() => this.end(), EXIT_STATUS_GRACE_MS))
    }
  }

  private end (): void {
    if (this.finished) return
    this.finished = true
    this.stdout.end()
    this.stderr.end()
    this.finish()
  }

  private elapsed (): number {
    return Math.round((performance.now() - this.started) * 100) / 100
  }

  private result (counters: CgroupCounters | null): RunResult {
    const done = this.doneMessage
    return {
      exitCode: done !== null && typeof done.exit_code === 'number' ? done.exit_code : null,
      signal: done !== null ? (typeof done.signal === 'number' ? done.signal : null) : this.exitSignal,
      failedStep: typeof done?.failed_step === 'string' ? done.failed_step : null,
      stepTimedOut: done?.step_timed_out === true,
      prepared: done?.prepared === true,
      interrupted: done?.interrupted === true,
      vanished: done === null,
      failure: this.failure,
      protocolViolation: this.protocolViolation,
      jailLost: this.jailLost,
      deletedInputs: stringArray(done?.deleted),
      discardedOutputs: typeof done?.discarded === 'number' ? done.discarded : 0,
      notes: stringArray(done?.notes),
      counters,
      wallMs: performance.now() - this.started,
      phases: {
        sentMs: this.phases.sentMs ?? 0,
        startedMs: this.phases.startedMs ?? null,
        doneMs: this.phases.doneMs ?? null,
        closedMs: this.phases.closedMs ?? 0,
        countedMs: this.phases.countedMs ?? 0,
      },
    }
  }
}

interface ArtifactReceipt {
  expected: Array<{ name: string, size: number }>
  /** the bytes so far of the artifact being received, and their count */
  chunks: Buffer[]
  received: number
  done: Artifact[]
  /** null when the worker sent fewer than were asked for: an incomplete build is not kept */
  keep: ((artifacts: Artifact[]) => void) | null
}

/** The job message's part of the compile cache (sandbox/artifacts.py reads it). */
function artifactsMessage (exchange: ArtifactExchange | undefined): Record<string, unknown> {
  if (exchange === undefined) return {}
  if ('provide' in exchange) return { artifacts: { provide: exchange.provide.map((artifact) => ({ name: artifact.name, size: artifact.bytes.length })) } }
  return { artifacts: { capture: exchange.capture, max_bytes: exchange.maxBytes } }
}

function since (baseline: CgroupCounters | null, now: CgroupCounters | null): CgroupCounters | null {
  if (baseline === null || now === null) return now
  return {
    oomKills: now.oomKills - baseline.oomKills,
    memoryPeakBytes: now.memoryPeakBytes,
    cpuUsageUs: now.cpuUsageUs === null || baseline.cpuUsageUs === null ? null : now.cpuUsageUs - baseline.cpuUsageUs,
    pidsPeak: now.pidsPeak,
  }
}

function parseJson (payload: Buffer): Record<string, unknown> | null {
  try {
    const value: unknown = JSON.parse(payload.toString('utf8'))
    return typeof value === 'object' && value !== null && !Array.isArray(value) ? value as Record<string, unknown> : null
  } catch {
    return null
  }
}

function stringArray (value: unknown): string[] {
  return Array.isArray(value) ? value.filter((item): item is string => typeof item === 'string').slice(0, 1000) : []
}
