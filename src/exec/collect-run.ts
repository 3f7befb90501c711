import type { Run, RunResult } from '../pool/run.ts'

/** A run's result with its stdout and stderr collected, as /exec answers it. */
export interface CollectedRun extends RunResult {
  stdout: Buffer
  stderr: Buffer
  stdoutTruncated: boolean
  stderrTruncated: boolean
  timedOut: boolean
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
 * Consume a run's events into its stdout and stderr, enforcing the wall-clock and output limits: the
 * run is killed at the first byte over a limit or at the deadline, and its result says which.
 */
export async function collectRun (run: Run, limits: CollectLimits): Promise<CollectedRun> {
  let timedOut = false
  const stdout = new CappedBuffer(limits.maxStdoutBytes, () => run.kill('stdout limit'))
  const stderr = new CappedBuffer(limits.maxStderrBytes, () => run.kill('stderr limit'))
  const timer = setTimeout(() => { timedOut = true; run.kill('timeout') }, limits.timeoutMs)
  try {
    for await (const event of run.events) {
      if (event.type === 'stdout') stdout.push(event.chunk)
      else if (event.type === 'stderr') stderr.push(event.chunk)
    }
    const result = await run.done
    return {
      ...result,
      stdout: stdout.value,
      stderr: stderr.value,
      stdoutTruncated: stdout.truncated,
      stderrTruncated: stderr.truncated,
      timedOut,
    }
  } finally {
    clearTimeout(timer)
  }
}
