import type { Run, RunResult } from '../pool/run.ts'

/** A run's result with its stdout and stderr collected, as /exec answers it. */
export interface CollectedRun extends RunResult {
  stdout: Buffer
  stderr: Buffer
  stdoutTruncated: boolean
  stderrTruncated: boolean
  timedOut: boolean
  /** the time the code ran: the run's wall time less the time it waited on its caller (paused) */
  runningMs: number
}

export interface CollectLimits { timeoutMs: number, maxStdoutBytes: number, maxStderrBytes: number }

/** One output stream, cut at its limit: the first byte over it stops the run. */
class CappedBuffer {
  private readonly chunks: Buffer[] = []
  private bytes = 0
  truncated = false

  constructor (private readonly maxBytes: number, private readonly onOverflow: () => void) {}

  push (chunk: Buffer): void {
    const room = this.maxBytes - this.bytes
    if (chunk.length > room && !this.truncated) {
      this.truncated = true
      this.onOverflow()
    }
    if (room > 0) {
      const kept = chunk.subarray(0, room)
      this.chunks.push(kept)
      this.bytes += kept.length
    }
  }

  get value (): Buffer { return Buffer.concat(this.chunks) }
}

/**
 * The wall-clock limit of a run that can wait on its caller: it counts only while the code runs, so a run
 * paused for tool results (programmatic tool calling) is not charged for the tools' time.
 */
export class RunningClock {
  private spentMs = 0
  private since: number | null = null
  private timer: NodeJS.Timeout | null = null

  constructor (private readonly limitMs: number, private readonly onExpired: () => void) {}

  get runningMs (): number {
    return this.spentMs + (this.since === null ? 0 : performance.now() - this.since)
  }

  resume (): void {
    if (this.since !== null) return
    this.since = performance.now()
    this.timer = setTimeout(this.onExpired, Math.max(0, this.limitMs - this.spentMs))
  }

  pause (): void {
    if (this.since === null) return
    this.spentMs += performance.now() - this.since
    this.since = null
    if (this.timer !== null) clearTimeout(this.timer)
    this.timer = null
  }
}

/**
 * Consumes a run's events into its stdout and stderr, enforcing the wall-clock and output limits: the
 * run is killed at the first byte over a limit or when its clock runs out, and its result says which.
 * Messages from the code (tool calls) go to `onMessage`, which may pause the clock while the caller works.
 */
export class RunCollector {
  readonly clock: RunningClock
  readonly result: Promise<CollectedRun>
  private readonly stdout: CappedBuffer
  private readonly stderr: CappedBuffer
  private timedOut = false

  constructor (private readonly run: Run, limits: CollectLimits, private readonly onMessage: (message: Record<string, unknown>) => void = () => {}) {
    this.stdout = new CappedBuffer(limits.maxStdoutBytes, () => run.kill('stdout limit'))
    this.stderr = new CappedBuffer(limits.maxStderrBytes, () => run.kill('stderr limit'))
    this.clock = new RunningClock(limits.timeoutMs, () => { this.timedOut = true; run.kill('timeout') })
    this.result = this.collect()
  }

  /** What the code wrote so far (for a paused run's answer). */
  get partialStdout (): Buffer { return this.stdout.value }
  get partialStderr (): Buffer { return this.stderr.value }

  private async collect (): Promise<CollectedRun> {
    this.clock.resume()
    try {
      for await (const event of this.run.events) {
        if (event.type === 'stdout') this.stdout.push(event.chunk)
        else if (event.type === 'stderr') this.stderr.push(event.chunk)
        else if (event.type === 'message') this.onMessage(event.message)
      }
      const result = await this.run.done
      return {
        ...result,
        stdout: this.stdout.value,
        stderr: this.stderr.value,
        stdoutTruncated: this.stdout.truncated,
        stderrTruncated: this.stderr.truncated,
        timedOut: this.timedOut,
        runningMs: this.clock.runningMs,
      }
    } finally {
      this.clock.pause()
    }
  }
}

/** Collect a run that never waits on its caller (/exec, self-test). */
export async function collectRun (run: Run, limits: CollectLimits): Promise<CollectedRun> {
  return await new RunCollector(run, limits).result
}
