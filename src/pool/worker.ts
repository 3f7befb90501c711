import type { CgroupCounters } from '../jail/cgroup.ts'
import {
  DATA_CHUNK_BYTES, FencedCollector, FrameType, encodeFrame, encodeJsonFrame, type Frame,
} from './protocol.ts'
import type { SlotChannel } from './slot.ts'

export type RuntimeLanguage = 'python' | 'bash'

export interface WorkerInput {
  name: string
  size: number
  read: () => AsyncIterable<Uint8Array>
}

/** Where output files go as they stream out of the worker; the pipeline decides whether to keep them. */
export interface OutputSink {
  open (name: string): Promise<OutputFile | null>
}
export interface OutputFile {
  write (chunk: Uint8Array): Promise<void>
  close (sizeReported: number): Promise<void>
  abort (): Promise<void>
}

export interface WorkerJob {
  language: RuntimeLanguage
  code: string
  args: string[]
  inputs: WorkerInput[]
  timeoutMs: number
  maxStdoutBytes: number
  maxStderrBytes: number
  outputs: OutputSink
}

export interface WorkerRun {
  exitCode: number | null
  signal: number | null
  stdout: Buffer
  stderr: Buffer
  stdoutTruncated: boolean
  stderrTruncated: boolean
  timedOut: boolean
  /** the worker never reported completion: it died (OOM, signal) or broke the protocol */
  vanished: boolean
  failure: string | null
  deletedInputs: string[]
  /** new or changed files the worker did not send because the code failed */
  discardedOutputs: number
  notes: string[]
  counters: CgroupCounters | null
  wallMs: number
  /** ms from the start of run() to each step, for logs and metrics */
  phases: RunPhases
}

export interface RunPhases { sent: number, started: number | null, done: number | null, closed: number, counted: number }

interface DoneMessage { exit_code?: unknown, signal?: unknown, deleted?: unknown, notes?: unknown, discarded?: unknown, fence?: unknown }

/** Grace after a kill before the run is given up on and the zygote is suspected. */
const KILL_GRACE_MS = 5_000

/**
 * One warm, isolated worker: it runs exactly one job and is never reused, so no two executions (let
 * alone two sessions) ever share a process, a /tmp or a /mnt/data.
 */
export class Worker {
  private used = false
  /** wall time of the run, once it is over */
  runMs: number | null = null

  constructor (readonly id: string, private readonly channel: SlotChannel) {}

  get isAlive (): boolean { return this.channel.isAlive }

  /** Stage inputs, run the code, stream outputs to the sink, and classify nothing: just report. */
  async run (job: WorkerJob): Promise<WorkerRun> {
    if (this.used) throw new Error('a worker runs one job only')
    this.used = true
    const run = await new WorkerRunner(this.channel, job).run()
    this.runMs = run.wallMs
    return run
  }

  /** After run(): processes the job left behind once its worker is gone (0 is the only good answer). */
  async survivors (): Promise<number | null> {
    return await this.channel.survivors()
  }

  /** Kill whatever still runs and let the slot clean itself up in the background. */
  dispose (): void {
    this.channel.release()
  }
}

class WorkerRunner {
  private readonly started = performance.now()
  private readonly stdout: FencedCollector
  private readonly stderr: FencedCollector
  private timedOut = false
  private failure: string | null = null
  private done: DoneMessage | null = null
  private exitStatus: { code: number | null, signal: number | null } | null = null
  private controlDrained = false
  private frameQueue: Promise<void> = Promise.resolve()
  private queuedFrames = 0
  private currentOutput: Promise<OutputFile | null> | null = null
  private finish: () => void = () => {}
  private readonly timers: NodeJS.Timeout[] = []
  private readonly phases: Partial<RunPhases> = {}

  constructor (private readonly channel: SlotChannel, private readonly job: WorkerJob) {
    this.stdout = new FencedCollector(job.maxStdoutBytes, () => this.kill('stdout limit'))
    this.stderr = new FencedCollector(job.maxStderrBytes, () => this.kill('stderr limit'))
  }

  async run (): Promise<WorkerRun> {
    const finished = new Promise<void>((resolve) => { this.finish = resolve })
    this.channel.attach({
      frame: (frame) => this.onFrame(frame),
      stdout: (chunk) => { this.stdout.push(chunk); this.checkFinished() },
      stderr: (chunk) => { this.stderr.push(chunk); this.checkFinished() },
      exited: (status, fence) => {
        this.exitStatus = status
        this.stdout.expectFence(fence, true)
        this.stderr.expectFence(fence, true)
        this.checkFinished()
      },
      controlDrained: () => {
        this.controlDrained = true
        this.checkFinished()
      },
      lost: (reason) => {
        this.failure ??= reason
        this.finish()
      },
    })
    // the slot's cgroup outlives its workers: count this run as the difference
    const baseline = await this.channel.readCounters()
    this.timers.push(setTimeout(() => { this.timedOut = true; this.kill('timeout') }, this.job.timeoutMs))
    try {
      await this.sendJob()
      this.phases.sent = this.elapsed()
    } catch (error) {
      this.failure ??= `could not send the job to the worker: ${(error as Error).message}`
      this.kill('send failure')
    }
    await finished
    for (const timer of this.timers) clearTimeout(timer)
    await this.frameQueue
    this.phases.closed = this.elapsed()
    const counters = since(baseline, await this.channel.readCounters())
    this.phases.counted = this.elapsed()
    return this.result(counters)
  }

  private async sendJob (): Promise<void> {
    const job = {
      lang: this.job.language,
      code: this.job.code,
      args: this.job.args,
      cpu_seconds: Math.ceil(this.job.timeoutMs / 1000) + 1,
      files: this.job.inputs.map((input) => ({ name: input.name, size: input.size })),
    }
    await this.channel.write(encodeJsonFrame(FrameType.job, job))
    for (const input of this.job.inputs) {
      let sent = 0
      for await (const chunk of input.read()) {
        for (let offset = 0; offset < chunk.length; offset += DATA_CHUNK_BYTES) {
          const piece = chunk.subarray(offset, offset + DATA_CHUNK_BYTES)
          await this.channel.write(encodeFrame(FrameType.data, piece))
          sent += piece.length
        }
      }
      if (sent !== input.size) throw new Error(`input ${input.name} changed size while being sent`)
    }
  }

  private onFrame (frame: Frame): void {
    this.queuedFrames++
    if (this.queuedFrames > 8) this.channel.pause()
    this.frameQueue = this.frameQueue
      .then(() => this.handleFrame(frame))
      .catch((error: Error) => {
        this.failure ??= `output handling failed: ${error.message}`
        this.kill('output failure')
      })
      .finally(() => {
        this.queuedFrames--
        if (this.queuedFrames <= 2) this.channel.resume()
      })
  }

  private async handleFrame (frame: Frame): Promise<void> {
    switch (frame.type) {
      case FrameType.ready:
        return
      case FrameType.started:
        this.phases.started = this.elapsed()
        return
      case FrameType.output: {
        const { name } = parseJson(frame.payload) as { name?: unknown }
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
        const { size } = parseJson(frame.payload) as { size?: unknown }
        await output?.close(typeof size === 'number' ? size : -1)
        return
      }
      case FrameType.done: {
        this.done = parseJson(frame.payload) as DoneMessage
        this.phases.done = this.elapsed()
        const fence = typeof this.done.fence === 'string' ? Buffer.from(this.done.fence, 'hex') : null
        if (fence !== null && fence.length === 16) {
          this.stdout.expectFence(fence, false)
          this.stderr.expectFence(fence, false)
        }
        this.checkFinished()
        return
      }
      case FrameType.failed: {
        const { message } = parseJson(frame.payload) as { message?: unknown }
        this.failure = typeof message === 'string' ? message : 'the worker failed'
        this.kill('worker failure')
        return
      }
      default:
        this.failure ??= `unexpected frame type ${frame.type}`
        this.kill('protocol violation')
    }
  }

  private elapsed (): number {
    return Math.round((performance.now() - this.started) * 100) / 100
  }

  /**
   * Finished when both output streams are closed by a fence, and either the worker reported done or it
   * is gone and every frame it sent has been read (a paused control socket may still hold its done).
   */
  private checkFinished (): void {
    const outputsClosed = this.stdout.output !== null && this.stderr.output !== null
    if (outputsClosed && (this.done !== null || (this.exitStatus !== null && this.controlDrained))) this.finish()
  }

  private kill (reason: string): void {
    this.channel.kill(reason)
    // if even a kill brings no exit notice, give up rather than hang the request
    this.timers.push(setTimeout(() => {
      this.failure ??= 'the worker did not stop after being killed'
      this.finish()
    }, KILL_GRACE_MS))
  }

  private result (counters: CgroupCounters | null): WorkerRun {
    const done = this.done
    const exitCode = done !== null && typeof done.exit_code === 'number' ? done.exit_code : null
    const signal = done !== null ? (typeof done.signal === 'number' ? done.signal : null) : (this.exitStatus?.signal ?? null)
    return {
      exitCode,
      signal,
      stdout: this.stdout.output ?? Buffer.alloc(0),
      stderr: this.stderr.output ?? Buffer.alloc(0),
      stdoutTruncated: this.stdout.truncated,
      stderrTruncated: this.stderr.truncated,
      timedOut: this.timedOut,
      vanished: done === null,
      failure: this.failure,
      deletedInputs: stringArray(done?.deleted),
      discardedOutputs: typeof done?.discarded === 'number' ? done.discarded : 0,
      notes: stringArray(done?.notes),
      counters,
      wallMs: performance.now() - this.started,
      phases: {
        sent: this.phases.sent ?? 0,
        started: this.phases.started ?? null,
        done: this.phases.done ?? null,
        closed: this.phases.closed ?? 0,
        counted: this.phases.counted ?? 0,
      },
    }
  }
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

function parseJson (payload: Buffer): unknown {
  try {
    const value: unknown = JSON.parse(payload.toString('utf8'))
    return typeof value === 'object' && value !== null ? value : {}
  } catch {
    return {}
  }
}

function stringArray (value: unknown): string[] {
  return Array.isArray(value) ? value.filter((item): item is string => typeof item === 'string').slice(0, 1000) : []
}
