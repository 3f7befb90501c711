import assert from 'node:assert/strict'
import { test } from 'node:test'
import { classifyOutcome, signalName } from '../../../src/exec/outcome.ts'
import { formatBytes } from '../../../src/units.ts'
import type { CollectedRun } from '../../../src/exec/collect-run.ts'

const MiB = 1024 * 1024
const limits = { memoryBytes: 512 * MiB, maxStdoutBytes: MiB, maxStderrBytes: 64 * 1024 }

/** A run that exited 0 with nothing to report; each test changes what it is about. */
function run (changes: Partial<CollectedRun> = {}): CollectedRun {
  return {
    exitCode: 0,
    signal: null,
    stdout: Buffer.from('hi\n'),
    stderr: Buffer.alloc(0),
    stdoutTruncated: false,
    stderrTruncated: false,
    timedOut: false,
    vanished: false,
    failedStep: null,
    protocolViolation: null,
    jailLost: false,
    stepTimedOut: false,
    prepared: false,
    interrupted: false,
    failure: null,
    deletedInputs: [],
    discardedOutputs: 0,
    notes: [],
    counters: { oomKills: 0, memoryPeakBytes: 10 * MiB, cpuUsageUs: 1000, pidsPeak: 1 },
    wallMs: 12,
    runningMs: 9,
    phases: { sentMs: 1, startedMs: 2, doneMs: 10, closedMs: 11, countedMs: 12 },
    ...changes,
  }
}

const oomCounters = { oomKills: 1, memoryPeakBytes: 512 * MiB, cpuUsageUs: 1000, pidsPeak: 3 }

test('a run that exits 0 is ok, with no explanation', () => {
  assert.deepEqual(classifyOutcome(run(), limits, 30_000), {
    status: 'ok', exitCode: 0, signal: null, timedOut: false, oomKilled: false, truncated: false, explanation: null,
  })
})

test('a run that exits non-zero is error, keeping its exit code and giving no explanation', () => {
  for (const exitCode of [1, 2, 127, 255]) {
    const outcome = classifyOutcome(run({ exitCode }), limits, 30_000)
    assert.equal(outcome.status, 'error')
    assert.equal(outcome.exitCode, exitCode)
    assert.equal(outcome.signal, null)
    assert.equal(outcome.explanation, null)
  }
})

test('a run without cgroup counters is classified from its exit status alone', () => {
  assert.equal(classifyOutcome(run({ counters: null }), limits, 30_000).status, 'ok')
  assert.equal(classifyOutcome(run({ counters: null, exitCode: 3 }), limits, 30_000).status, 'error')
})

test('a timed-out run is timeout and the explanation names the time limit in seconds', () => {
  const outcome = classifyOutcome(run({ timedOut: true, exitCode: null, signal: 9 }), limits, 30_000)
  assert.equal(outcome.status, 'timeout')
  assert.equal(outcome.timedOut, true)
  assert.equal(outcome.signal, 'SIGKILL')
  assert.equal(outcome.explanation, 'Execution exceeded the time limit of 30 s and was stopped.')
  assert.equal(classifyOutcome(run({ timedOut: true }), limits, 2500).explanation, 'Execution exceeded the time limit of 2.5 s and was stopped.')
})

test('an OOM-killed run is oom and the explanation names the memory limit', () => {
  const outcome = classifyOutcome(run({ exitCode: null, signal: null, vanished: true, counters: oomCounters }), limits, 30_000)
  assert.equal(outcome.status, 'oom')
  assert.equal(outcome.oomKilled, true)
  assert.equal(outcome.exitCode, null)
  assert.equal(outcome.signal, 'SIGKILL')
  assert.equal(outcome.explanation, 'Execution exceeded the memory limit of 512 MiB and was stopped.')
  assert.match(classifyOutcome(run({ counters: oomCounters }), { ...limits, memoryBytes: 2 * 1024 ** 3 }, 30_000).explanation ?? '', /memory limit of 2 GiB/)
})

test('a run whose child was OOM-killed while the program exited 0 is still oom', () => {
  assert.equal(classifyOutcome(run({ exitCode: 0, counters: oomCounters }), limits, 30_000).status, 'oom')
})

test('truncated stdout is OL and the explanation names the stdout limit', () => {
  const outcome = classifyOutcome(run({ stdoutTruncated: true, signal: 9 }), limits, 30_000)
  assert.equal(outcome.status, 'OL')
  assert.equal(outcome.truncated, true)
  assert.equal(outcome.explanation, 'Output exceeded the limit of 1 MiB on stdout; it was truncated and the execution was stopped.')
})

test('truncated stderr is EL and the explanation names the stderr limit', () => {
  const outcome = classifyOutcome(run({ stderrTruncated: true }), limits, 30_000)
  assert.equal(outcome.status, 'EL')
  assert.equal(outcome.truncated, true)
  assert.equal(outcome.explanation, 'Output exceeded the limit of 64 KiB on stderr; it was truncated and the execution was stopped.')
})

test('a run ended by a signal is killed and the explanation names the signal', () => {
  const outcome = classifyOutcome(run({ exitCode: null, signal: 11 }), limits, 30_000)
  assert.equal(outcome.status, 'killed')
  assert.equal(outcome.signal, 'SIGSEGV')
  assert.equal(outcome.explanation, 'Execution was terminated by SIGSEGV.')
  assert.equal(classifyOutcome(run({ signal: 42 }), limits, 30_000).explanation, 'Execution was terminated by signal 42.')
})

test('a worker that vanished without a signal is killed by SIGKILL with no exit code', () => {
  const outcome = classifyOutcome(run({ vanished: true, exitCode: 0, signal: null }), limits, 30_000)
  assert.equal(outcome.status, 'killed')
  assert.equal(outcome.exitCode, null)
  assert.equal(outcome.signal, 'SIGKILL')
  assert.equal(outcome.explanation, 'Execution was terminated by SIGKILL.')
})

test('precedence: timeout beats oom, oom beats output limits, stdout beats stderr, limits beat a signal', () => {
  const everything = { timedOut: true, counters: oomCounters, stdoutTruncated: true, stderrTruncated: true, signal: 9, exitCode: null }
  const all = classifyOutcome(run(everything), limits, 30_000)
  assert.equal(all.status, 'timeout')
  assert.deepEqual([all.timedOut, all.oomKilled, all.truncated], [true, true, true])
  assert.equal(classifyOutcome(run({ ...everything, timedOut: false }), limits, 30_000).status, 'oom')
  assert.equal(classifyOutcome(run({ ...everything, timedOut: false, counters: null }), limits, 30_000).status, 'OL')
  assert.equal(classifyOutcome(run({ ...everything, timedOut: false, counters: null, stdoutTruncated: false }), limits, 30_000).status, 'EL')
  assert.equal(classifyOutcome(run({ ...everything, timedOut: false, counters: null, stdoutTruncated: false, stderrTruncated: false }), limits, 30_000).status, 'killed')
})

/** A compiled language's program: compile (its own 15 s limit), then run. */
const compiled = {
  runner: 'steps' as const,
  sourceFile: 'main.c',
  steps: [{ name: 'compile', argv: ['/usr/bin/gcc', '{source}'], timeoutMs: 15_000 }, { name: 'run', argv: ['{dir}/main'] }],
}

test('a compile step that fails is compile_error with its exit code, and the explanation says the program did not run', () => {
  const outcome = classifyOutcome(run({ exitCode: 1, failedStep: 'compile' }), limits, 30_000, compiled)
  assert.deepEqual(outcome, {
    status: 'compile_error',
    exitCode: 1,
    signal: null,
    timedOut: false,
    oomKilled: false,
    truncated: false,
    explanation: 'Compilation failed (exit code 1); the program did not run.',
  })
})

test('a compiler ended by a signal is still compile_error, naming the signal', () => {
  const outcome = classifyOutcome(run({ exitCode: 139, signal: 11, failedStep: 'compile' }), limits, 30_000, compiled)
  assert.equal(outcome.status, 'compile_error')
  assert.equal(outcome.signal, 'SIGSEGV')
  assert.equal(outcome.explanation, 'Compilation failed (terminated by SIGSEGV); the program did not run.')
})

test('the last step failing is the program\'s own error, not a compile error', () => {
  assert.equal(classifyOutcome(run({ exitCode: 3, failedStep: 'run' }), limits, 30_000, compiled).status, 'error')
  assert.equal(classifyOutcome(run({ exitCode: 134, signal: 6, failedStep: 'run' }), limits, 30_000, compiled).status, 'killed')
  // a one-step program (an interpreter) has no compile step
  const interpreted = { runner: 'steps' as const, sourceFile: 'main.js', steps: [{ name: 'run', argv: ['node', '{source}'] }] }
  assert.equal(classifyOutcome(run({ exitCode: 1, failedStep: 'run' }), limits, 30_000, interpreted).status, 'error')
})

test('a compile step stopped at its own time limit is timeout, and the explanation names the compile limit', () => {
  const outcome = classifyOutcome(run({ exitCode: 137, signal: 9, failedStep: 'compile', stepTimedOut: true }), limits, 30_000, compiled)
  assert.equal(outcome.status, 'timeout')
  assert.equal(outcome.timedOut, true)
  assert.equal(outcome.signal, 'SIGKILL')
  assert.equal(outcome.explanation, 'Compilation exceeded its time limit of 15 s and was stopped; the program did not run.')
})

test('a run step with its own time limit reads as a timeout naming that limit', () => {
  const limited = { ...compiled, steps: [compiled.steps[0] as (typeof compiled.steps)[0], { name: 'run', argv: ['{dir}/main'], timeoutMs: 2000 }] }
  const outcome = classifyOutcome(run({ exitCode: 137, signal: 9, failedStep: 'run', stepTimedOut: true }), limits, 30_000, limited)
  assert.equal(outcome.status, 'timeout')
  assert.equal(outcome.explanation, 'The program exceeded its time limit of 2 s and was stopped.')
})

test('precedence: the execution\'s own timeout and the memory limit beat a failed compile step', () => {
  assert.equal(classifyOutcome(run({ exitCode: 137, signal: 9, failedStep: 'compile', timedOut: true }), limits, 30_000, compiled).status, 'timeout')
  assert.equal(classifyOutcome(run({ exitCode: 1, failedStep: 'compile', counters: oomCounters }), limits, 30_000, compiled).status, 'oom')
})

test('signalName names the common signals and numbers the rest', () => {
  assert.equal(signalName(null), null)
  assert.deepEqual([1, 2, 6, 9, 11, 13, 15, 24, 25, 31].map(signalName), [
    'SIGHUP', 'SIGINT', 'SIGABRT', 'SIGKILL', 'SIGSEGV', 'SIGPIPE', 'SIGTERM', 'SIGXCPU', 'SIGXFSZ', 'SIGSYS',
  ])
  assert.equal(signalName(64), 'signal 64')
  assert.equal(signalName(0), 'signal 0')
})

test('formatBytes picks bytes, KiB, MiB or whole GiB with at most one decimal', () => {
  const cases: Array<[number, string]> = [
    [0, '0 bytes'],
    [1023, '1023 bytes'],
    [1024, '1 KiB'],
    [1536, '1.5 KiB'],
    [64 * 1024, '64 KiB'],
    [MiB, '1 MiB'],
    [1.25 * MiB, '1.3 MiB'],
    [512 * MiB, '512 MiB'],
    [1024 ** 3, '1 GiB'],
    [1.5 * 1024 ** 3, '1536 MiB'],
    [4 * 1024 ** 3, '4 GiB'],
  ]
  for (const [bytes, text] of cases) assert.equal(formatBytes(bytes), text, `${bytes}`)
})
