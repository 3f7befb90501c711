import assert from 'node:assert/strict'
import { spawnSync } from 'node:child_process'
import { existsSync, mkdtempSync, rmSync } from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import { test } from 'node:test'

// sandbox/runners.py run_steps outside any jail: the order of steps, the first failure ending the run,
// and each step's own time limit (a process group killed, reported as step_timed_out).

const sandboxDir = path.resolve(import.meta.dirname, '..', '..', '..', 'sandbox')
const python = existsSync('/usr/bin/python3') ? '/usr/bin/python3' : 'python3'

interface Outcome { exit_code: number, signal: number | null, failed_step: string | null, step_timed_out: boolean, ms: number }

function runSteps (steps: Array<{ name: string, argv: string[], timeout_ms?: number, stdout_to_stderr?: boolean }>, code = 'echo "$1"', args: string[] = []): Outcome & { stdout: string, stderr: string } {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'warden-runners-'))
  try {
    const script = `
import dataclasses, json, sys, time
sys.path.insert(0, ${JSON.stringify(sandboxDir)})
import runners
runners.SOURCE_DIR = ${JSON.stringify(dir)}
started = time.monotonic()
outcome = runners.run_steps(json.loads(sys.argv[1]), sys.argv[2], "main.sh", json.loads(sys.argv[3]), {"PATH": "/usr/bin:/bin"}, runners.Interrupts())
sys.stdout.flush()
print("\\nOUTCOME " + json.dumps({**dataclasses.asdict(outcome), "ms": (time.monotonic() - started) * 1000}))
`
    const result = spawnSync(python, ['-c', script, JSON.stringify(steps), code, JSON.stringify(args)], { encoding: 'utf8', timeout: 30_000 })
    assert.equal(result.status, 0, result.stderr)
    const [stdout, outcome] = result.stdout.split('\nOUTCOME ')
    return { ...JSON.parse(outcome ?? '{}') as Outcome, stdout: stdout ?? '', stderr: result.stderr }
  } finally {
    rmSync(dir, { recursive: true, force: true })
  }
}

test('steps run in order with {source}, {dir} and {args} filled in, and a run whose steps all succeed exits 0', () => {
  const outcome = runSteps([
    { name: 'compile', argv: ['/bin/sh', '-c', 'cp "$1" "$2/built.sh" && echo compiled', 'sh', '{source}', '{dir}'] },
    { name: 'run', argv: ['/bin/bash', '{dir}/built.sh', '{args}'] },
  ], 'echo "ran with [$1] [$2]"', ['two words', '$HOME'])
  assert.equal(outcome.stdout, 'compiled\nran with [two words] [$HOME]\n')
  assert.deepEqual([outcome.exit_code, outcome.failed_step, outcome.step_timed_out], [0, null, false])
})

test('the first failing step ends the run: its name and exit code are reported and later steps never start', () => {
  const outcome = runSteps([
    { name: 'compile', argv: ['/bin/sh', '-c', 'echo broken >&2; exit 4'] },
    { name: 'run', argv: ['/bin/sh', '-c', 'echo must not run'] },
  ])
  assert.equal(outcome.stdout, '')
  assert.deepEqual([outcome.exit_code, outcome.signal, outcome.failed_step, outcome.step_timed_out], [4, null, 'compile', false])
})

test('a step past its own time limit is killed with its whole process group and reported as step_timed_out', () => {
  const outcome = runSteps([
    { name: 'compile', argv: ['/bin/sh', '-c', '(sleep 30; echo grandchild) & sleep 30'], timeout_ms: 300 },
    { name: 'run', argv: ['/bin/sh', '-c', 'echo must not run'] },
  ])
  assert.deepEqual([outcome.exit_code, outcome.signal, outcome.failed_step, outcome.step_timed_out], [137, 9, 'compile', true])
  assert.ok(outcome.ms < 5_000, `the step was stopped after ${Math.round(outcome.ms)} ms`)
  assert.equal(outcome.stdout, '')
})

test('a step that ends by a signal of its own is reported with the signal, not as timed out', () => {
  const outcome = runSteps([{ name: 'run', argv: ['/bin/sh', '-c', 'kill -SEGV $$'] }])
  assert.deepEqual([outcome.signal, outcome.failed_step, outcome.step_timed_out], [11, 'run', false])
})

test('a step marked stdout_to_stderr writes its stdout to stderr (a compiler printing its messages there)', () => {
  const outcome = runSteps([
    { name: 'compile', argv: ['/bin/sh', '-c', 'echo "main.go:4:2: undefined: x"; exit 2'], stdout_to_stderr: true },
    { name: 'run', argv: ['/bin/sh', '-c', 'echo must not run'] },
  ])
  assert.equal(outcome.stdout, '')
  assert.equal(outcome.stderr, 'main.go:4:2: undefined: x\n')
  assert.deepEqual([outcome.exit_code, outcome.failed_step], [2, 'compile'])
})
