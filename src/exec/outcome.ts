import type { ExecutionLimits } from '../config.ts'
import type { Program } from '../pool/run.ts'
import { formatBytes } from '../units.ts'
import type { CollectedRun } from './collect-run.ts'

/**
 * How a run ended, decided from exit status, the server's own timer and cgroup counters; never from
 * the program's output. `OL`/`EL` are the piston/codeapi codes LibreChat's image reader checks for.
 * `compile_error`: a step before the program's own (compile) failed, so the program never ran.
 */
export type OutcomeStatus = 'ok' | 'error' | 'compile_error' | 'timeout' | 'oom' | 'OL' | 'EL' | 'killed'

export interface Outcome {
  status: OutcomeStatus
  exitCode: number | null
  signal: string | null
  timedOut: boolean
  oomKilled: boolean
  truncated: boolean
  /** one line for stderr when the limits, not the program, ended the run */
  explanation: string | null
}

const SIGNAL_NAMES: Record<number, string> = {
  1: 'SIGHUP',
  2: 'SIGINT',
  3: 'SIGQUIT',
  4: 'SIGILL',
  6: 'SIGABRT',
  7: 'SIGBUS',
  8: 'SIGFPE',
  9: 'SIGKILL',
  11: 'SIGSEGV',
  13: 'SIGPIPE',
  14: 'SIGALRM',
  15: 'SIGTERM',
  24: 'SIGXCPU',
  25: 'SIGXFSZ',
  31: 'SIGSYS',
}

export function signalName (signal: number | null): string | null {
  return signal === null ? null : (SIGNAL_NAMES[signal] ?? `signal ${signal}`)
}

function formatSeconds (ms: number): string {
  return ms % 1000 === 0 ? `${ms / 1000} s` : `${(ms / 1000).toFixed(1)} s`
}

/**
 * `program` tells which step failed: with argv steps, every step but the last builds the program (a
 * failure there is `compile_error`), and a step's own time limit reads as a timeout like the execution's.
 */
export function classifyOutcome (run: CollectedRun, limits: Pick<ExecutionLimits, 'memoryBytes' | 'maxStdoutBytes' | 'maxStderrBytes'>, timeoutMs: number, program?: Program): Outcome {
  const oomKilled = (run.counters?.oomKills ?? 0) > 0
  const truncated = run.stdoutTruncated || run.stderrTruncated
  const signal = signalName(run.signal ?? (run.vanished ? 9 : null))
  const timedOut = run.timedOut || run.stepTimedOut
  const base = { exitCode: run.vanished ? null : run.exitCode, signal: run.vanished || run.signal !== null ? signal : null, timedOut, oomKilled, truncated }
  const steps = program?.runner === 'steps' ? program.steps : []
  const failedStep = steps.find((step) => step.name === run.failedStep)
  const isBuildStep = failedStep !== undefined && failedStep !== steps.at(-1)
  if (run.timedOut) {
    return { ...base, status: 'timeout', explanation: `Execution exceeded the time limit of ${formatSeconds(timeoutMs)} and was stopped.` }
  }
  if (run.stepTimedOut) {
    const limit = failedStep?.timeoutMs === undefined ? '' : ` of ${formatSeconds(failedStep.timeoutMs)}`
    return isBuildStep
      ? { ...base, status: 'timeout', explanation: `Compilation exceeded its time limit${limit} and was stopped; the program did not run.` }
      : { ...base, status: 'timeout', explanation: `The program exceeded its time limit${limit} and was stopped.` }
  }
  if (oomKilled) {
    return { ...base, status: 'oom', explanation: `Execution exceeded the memory limit of ${formatBytes(limits.memoryBytes)} and was stopped.` }
  }
  if (run.stdoutTruncated) {
    return { ...base, status: 'OL', explanation: `Output exceeded the limit of ${formatBytes(limits.maxStdoutBytes)} on stdout; it was truncated and the execution was stopped.` }
  }
  if (run.stderrTruncated) {
    return { ...base, status: 'EL', explanation: `Output exceeded the limit of ${formatBytes(limits.maxStderrBytes)} on stderr; it was truncated and the execution was stopped.` }
  }
  if (run.protocolViolation !== null) {
    return { ...base, status: 'killed', explanation: 'Execution was stopped: the program wrote to the sandbox\'s control channel (fd 3) or broke it.' }
  }
  if (isBuildStep && !run.vanished) {
    const how = run.signal === null ? `exit code ${String(run.exitCode)}` : `terminated by ${signal ?? 'a signal'}`
    return { ...base, status: 'compile_error', explanation: `Compilation failed (${how}); the program did not run.` }
  }
  if (run.vanished || run.signal !== null) {
    return { ...base, status: 'killed', explanation: `Execution was terminated by ${signal ?? 'a signal'}.` }
  }
  return { ...base, status: run.exitCode === 0 ? 'ok' : 'error', explanation: null }
}
