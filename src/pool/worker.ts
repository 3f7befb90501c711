import type { Socket } from 'node:net'
import type { CgroupCounters } from '../jail/cgroup.ts'
import type { WorkerSockets } from './channels.ts'
import { encodeJsonMessage, FrameDecoder, FrameType, MARKER_BYTES, type Frame } from './protocol.ts'
import { randomBytesFromPool } from './random-pool.ts'
import { Run, type Preparation, type RunLink, type WorkerJob } from './run.ts'

/** How a worker ended; `jailLost` when its whole jail (the zygote) went away. */
export interface ExitStatus { code: number | null, signal: number | null, jailLost?: boolean }

/** What a worker needs from the slot it occupies; every call is a no-op once the slot moved on. */
export interface SlotLink {
  kill (reason: string): void
  interrupt (): void
  readCounters (): Promise<CgroupCounters | null>
  /** processes left in the slot's cgroup once the worker is gone (null without cgroups) */
  survivors (): Promise<number | null>
  /** resolves when the zygote reported the worker's exit (or the zygote is gone) */
  readonly exited: Promise<ExitStatus>
}

/** The largest message each way: a whole job to the worker, a report or message from it. */
export interface MessageBudget { toWorker: number, fromWorker: number }

/** Output of processes a live worker's run left running, kept for the next run; more is dropped. */
const MAX_BETWEEN_RUNS_BYTES = 64 * 1024

/**
 * One isolated worker process and its own three connections. It runs one job at a time; a single-use
 * worker exits after its job, a live worker (`keep`) waits for the next. Nothing it does to its sockets
 * reaches any other worker: they were made for it alone (channels.ts).
 *
 * One owner per process, by construction: the first job claims the worker for its `owner`, and from then
 * on a job of anyone else is refused, whoever holds the worker (a pool, a kernel, a paused run); a job
 * that does not keep the worker is its last, whatever comes after; and a worker is prepared
 * (an interpreter started ahead) only before its first job, and then runs exactly one.
 */
export class Worker {
  /** resolves when the worker reported ready (isolated, waiting for a job) */
  readonly ready: Promise<{ setupMs: number }>
  private readyWaiter: { resolve: (value: { setupMs: number }) => void, reject: (error: Error) => void } | null = null
  private readonly decoder: FrameDecoder
  private run: Run | null = null
  private busy = false
  private gone = false
  private exitStatus: ExitStatus | null = null
  private readonly ended = { control: false, stdout: false, stderr: false }
  private readonly between = { stdout: [] as Buffer[], stderr: [] as Buffer[], bytes: 0 }
  private readonly pausedBy = new Set<string>()
  /** wall time of the last run, once it is over */
  lastRunMs: number | null = null
  /** the interpreter started ahead in this worker (sandbox/prepared.py), once it waits for its program */
  preparedKey: string | null = null
  private prepareWaiter: { resolve: (ms: number) => void, reject: (error: Error) => void } | null = null
  /** whose runs this worker serves: set by its first job, never changed */
  private owner: string | null = null
  /** a job without `keep` started: the worker never runs another */
  private spent = false
  /** prepare was asked for (once in a worker's life) */
  private preparing = false

  constructor (readonly id: string, private readonly sockets: WorkerSockets, private readonly slot: SlotLink, private readonly messageBytes: MessageBudget) {
    this.decoder = new FrameDecoder(messageBytes.fromWorker)
    this.ready = new Promise((resolve, reject) => { this.readyWaiter = { resolve, reject } })
    this.ready.catch(() => {})
    this.listen(sockets.control, 'control', (chunk) => this.onControl(chunk))
    this.listen(sockets.stdout, 'stdout', (chunk) => this.onStream('stdout', chunk))
    this.listen(sockets.stderr, 'stderr', (chunk) => this.onStream('stderr', chunk))
    slot.exited.then((status) => this.onExit(status), () => this.onExit({ code: null, signal: null }))
  }

  get isAlive (): boolean { return !this.gone && this.exitStatus === null }
  get isBusy (): boolean { return this.busy }
  /** resolves when the worker process is gone */
  get exited (): Promise<ExitStatus> { return this.slot.exited }

  /** Start a job. One at a time: the previous run must be over, and a single-use worker runs once. */
  start (job: WorkerJob): Run {
    if (!this.isAlive) throw new Error('the worker is gone')
    if (this.spent) throw new Error('the worker already ran its one job')
    if (this.busy || this.run !== null) throw new Error('the worker is running another job')
    if (this.owner !== null && this.owner !== job.owner) throw new Error('the worker belongs to another owner')
    if (this.prepareWaiter !== null) throw new Error('the worker is being prepared')
    if (this.preparing && job.keep) throw new Error('a prepared worker runs one job')
    this.owner = job.owner
    this.spent = !job.keep
    this.busy = true
    const link: RunLink = {
      write: (bytes) => this.write(bytes),
      interrupt: () => this.slot.interrupt(),
      kill: (reason) => this.kill(reason),
      readCounters: () => this.slot.readCounters(),
      pressure: (source, paused) => this.pressure(source, paused),
    }
    const run = new Run(link, job, randomBytesFromPool(MARKER_BYTES), this.messageBytes.toWorker)
    this.run = run
    // output of processes an earlier run left running comes first, then what already ended
    for (const chunk of this.between.stdout.splice(0)) this.feed('stdout', chunk)
    for (const chunk of this.between.stderr.splice(0)) this.feed('stderr', chunk)
    this.between.bytes = 0
    for (const stream of ['stdout', 'stderr'] as const) if (this.ended[stream]) this.endStream(stream)
    if (this.ended.control) run.onControlEnd()
    if (this.exitStatus !== null) run.onExit(this.exitStatus.signal, this.exitStatus.jailLost === true)
    run.done.then((result) => { this.lastRunMs = result.wallMs }, () => {}).finally(() => {
      if (this.run === run) this.run = null
      // a live worker takes the next job; a single-use one never runs again
      if (job.keep) this.busy = false
    })
    return run
  }

  /**
   * Start an interpreter before the worker's first job (sandbox/prepared.py): resolves with the ms the
   * worker took once the interpreter is loaded and waits for its program. Only a worker that never ran
   * a job and was never prepared can be; its next job is its one run. Rejects (and kills the worker) if
   * the interpreter does not come up.
   */
  async prepare ({ start, env }: Preparation): Promise<number> {
    if (!this.isAlive || this.busy || this.run !== null || this.owner !== null || this.preparing) throw new Error('the worker cannot be prepared now')
    this.preparing = true
    const loaded = new Promise<number>((resolve, reject) => { this.prepareWaiter = { resolve, reject } })
    loaded.catch(() => {})
    const prepare = start.handoff === 'source' ? { ...start, sourceFile: undefined, source_file: start.sourceFile } : start
    await this.write(encodeJsonMessage(FrameType.job, { runner: 'prepare', env, prepare }))
    const ms = await loaded
    this.preparedKey = start.key
    return ms
  }

  /** SIGINT to the code this worker runs. */
  interrupt (): void { this.slot.interrupt() }

  /** Kill the worker and everything it started; its slot cleans itself up once it is gone. */
  kill (reason: string): void {
    if (this.gone) return
    this.slot.kill(reason)
  }

  /** Processes its runs left behind once the worker is gone (0 is the only good answer; null without cgroups). */
  async survivors (): Promise<number | null> {
    return await this.slot.survivors()
  }

  /**
   * Done with it: kill whatever still runs and let go of its connections once the worker is gone and
   * the run reading them (if any) has ended. A worker writes its last output and its done frame before it
   * exits, yet the zygote's report of the exit may be read first (issue 21: 2 in 60 tool-calling runs on
   * a loaded machine): a socket destroyed at the exit would throw away what the run had not read yet. The
   * run's kill ends it within its grace, so the sockets are let go of even if nobody reads them.
   */
  dispose (): void {
    this.kill('released')
    this.gone = true
    this.readyWaiter?.reject(new Error('the worker was disposed'))
    this.readyWaiter = null
    const run = this.run
    run?.kill('released')
    const read = run === null ? Promise.resolve() : run.done.then(() => {}, () => {})
    Promise.all([this.slot.exited, read]).finally(() => {
      for (const socket of Object.values(this.sockets)) socket.destroy()
    }).catch(() => {})
  }

  private listen (socket: Socket, name: 'control' | 'stdout' | 'stderr', onData: (chunk: Buffer) => void): void {
    socket.on('data', onData)
    socket.on('error', () => {}) // a reset is the end of the stream, seen as 'close'
    socket.once('close', () => this.endStream(name))
    socket.resume()
  }

  private onControl (chunk: Buffer): void {
    const frames = this.decoder.push(chunk)
    for (const frame of frames) this.onFrame(frame)
    if (this.decoder.violation !== null) {
      const violation = this.decoder.violation
      this.decoder.violation = null // reported once
      if (this.run !== null) this.run.onProtocolViolation(violation)
      else this.failSetup(`the worker broke the protocol: ${violation}`)
    }
  }

  private onFrame (frame: Frame): void {
    if (this.readyWaiter !== null) {
      if (frame.type === FrameType.ready) {
        const setupMs = Number(parseSetup(frame.payload))
        this.readyWaiter.resolve({ setupMs })
        this.readyWaiter = null
      } else {
        const message = frame.type === FrameType.failed ? frame.payload.toString('utf8').slice(0, 500) : `unexpected frame ${frame.type} before ready`
        this.failSetup(`worker setup failed: ${message}`)
      }
      return
    }
    if (this.run !== null && !this.run.isFinished) {
      this.run.onFrame(frame)
      return
    }
    if (this.prepareWaiter !== null) {
      const waiter = this.prepareWaiter
      this.prepareWaiter = null
      if (frame.type === FrameType.prepared) return waiter.resolve(Number(parseJsonField(frame.payload, 'prepare_ms')))
      waiter.reject(new Error(`preparing failed: ${frame.payload.toString('utf8').slice(0, 500)}`))
      return this.kill('prepare failed')
    }
    // between runs nobody asked for anything: the code left running in a live worker wrote to fd 3
    this.kill('frame between runs')
  }

  private onStream (stream: 'stdout' | 'stderr', chunk: Buffer): void {
    if (this.run !== null && !this.run.isFinished) {
      this.feed(stream, chunk)
      return
    }
    this.keepBetweenRuns(stream, chunk)
  }

  private feed (stream: 'stdout' | 'stderr', chunk: Buffer): void {
    const run = this.run
    if (run === null) return this.keepBetweenRuns(stream, chunk)
    const rest = stream === 'stdout' ? run.onStdout(chunk) : run.onStderr(chunk)
    if (rest !== null && rest.length > 0) this.keepBetweenRuns(stream, rest)
  }

  private keepBetweenRuns (stream: 'stdout' | 'stderr', chunk: Buffer): void {
    if (this.between.bytes + chunk.length > MAX_BETWEEN_RUNS_BYTES) return
    this.between[stream].push(chunk)
    this.between.bytes += chunk.length
  }

  private endStream (name: 'control' | 'stdout' | 'stderr'): void {
    this.ended[name] = true
    if (name === 'control') {
      this.failSetup('the worker closed its control channel during setup')
      this.run?.onControlEnd()
    } else if (name === 'stdout') {
      this.run?.onStdoutEnd()
    } else {
      this.run?.onStderrEnd()
    }
  }

  private onExit (status: ExitStatus): void {
    this.exitStatus = status
    this.prepareWaiter?.reject(new Error(`the worker exited while preparing (code ${status.code}, signal ${status.signal})`))
    this.prepareWaiter = null
    this.failSetup(`the worker exited during setup (code ${status.code}, signal ${status.signal})`)
    this.run?.onExit(status.signal, status.jailLost === true)
  }

  private failSetup (reason: string): void {
    if (this.readyWaiter === null) return
    this.readyWaiter.reject(new Error(reason))
    this.readyWaiter = null
    this.kill('setup failed')
  }

  private async write (bytes: Buffer): Promise<void> {
    const socket = this.sockets.control
    if (socket.destroyed || this.ended.control || !this.isAlive) throw new Error('the worker is gone')
    if (socket.write(bytes)) return
    await new Promise<void>((resolve, reject) => {
      const onDrain = () => { cleanup(); resolve() }
      const onGone = () => { cleanup(); reject(new Error('the worker is gone')) }
      const cleanup = () => {
        socket.off('drain', onDrain)
        socket.off('close', onGone)
        clearInterval(watch)
      }
      // the worker's death closes the socket; a worker that lives on but stops reading is ended by its run's limit
      const watch = setInterval(() => { if (!this.isAlive) onGone() }, 250)
      socket.once('drain', onDrain)
      socket.once('close', onGone)
    })
  }

  private pressure (source: string, paused: boolean): void {
    if (paused) this.pausedBy.add(source)
    else this.pausedBy.delete(source)
    for (const socket of Object.values(this.sockets)) {
      if (this.pausedBy.size > 0) socket.pause()
      else socket.resume()
    }
  }
}

function parseSetup (payload: Buffer): number {
  return parseJsonField(payload, 'setup_ms')
}

function parseJsonField (payload: Buffer, field: string): number {
  try {
    const value = (JSON.parse(payload.toString('utf8')) as Record<string, unknown>)[field]
    return typeof value === 'number' ? value : 0
  } catch {
    return 0
  }
}
