import assert from 'node:assert/strict'
import { spawn, spawnSync, type ChildProcess } from 'node:child_process'
import { existsSync } from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import { test } from 'node:test'

// Found as a flake of test/e2e/programmatic.test.ts ("Bash: background jobs are one round" saw 2
// rounds under CPU load): sandbox/tools.py gathered a round of Bash calls until one scan of /proc showed
// no process of the program running. A scan is not atomic: a job that forked while the scan read its
// parent (then asleep, waiting for the child) and not its child (born after the listing) looked idle,
// the round closed after the quiet moment, and the job's call became a second round. The server now
// closes a round only when two scans on either side of the quiet moment show the same processes, none
// running and none switched in or out.
//
// Here BashToolServer runs outside any jail, in a pid namespace of its own (so that /proc holds only
// the program), with busy loops outside the namespace loading every core. Before the fix 1 to 3 runs of
// 30 had 2 rounds (8 background jobs, each forking a pipeline before its call). With two scans alone, 2
// of 40 still had 2 rounds at a load of 20: the round also closed after 0.5 s of wall time, and the
// loaded jobs needed more. It now closes after 0.5 s of the program's CPU time (5 s of wall time at
// most): 0 of 40 at a load of 22.

const sandboxDir = path.resolve(import.meta.dirname, '..', '..', 'sandbox')
const python = existsSync('/usr/bin/python3') ? '/usr/bin/python3' : 'python3'
const RUNS = 25
const JOBS = 8

const HARNESS = String.raw`
import json, os, sys
sys.path.insert(0, sys.argv[1])
import frames, runners, tools

rounds = []
class Reader:
    def read(self):
        results = [{"call_id": call["id"], "result": call["input"]} for call in rounds[-1]]
        return frames.MESSAGE, json.dumps({"type": "tool_results", "results": results}).encode()

tool_list = [{"name": "get_weather", "identifier": "get_weather"}]
broker = tools.Broker(lambda message: rounds.append(message["calls"]), Reader())
runners.SOURCE_DIR = "/tmp/src"
os.makedirs(runners.SOURCE_DIR, exist_ok=True)
code, runs = sys.argv[2], int(sys.argv[3])
report = []
for _ in range(runs):
    rounds.clear()
    env = {"PATH": "/usr/bin:/bin"} | tools.prepare_bash_stubs(tool_list)
    server = tools.BashToolServer(broker, tool_list)
    outcome = runners.run_steps([{"name": "run", "argv": ["/bin/bash", "{source}"]}], code, "main.sh", [], env, runners.Interrupts(), server)
    server.close()
    os.unlink(os.path.join(tools.TOOLS_DIR, "calls"))
    report.append({"rounds": len(rounds), "calls": sum(len(r) for r in rounds), "exit_code": outcome.exit_code})
print(json.dumps(report))
`

interface RunReport { rounds: number, calls: number, exit_code: number }

/** Runs `code` `runs` times under BashToolServer in a pid and mount namespace of its own (root: unshare). */
function serveBash (code: string, runs: number): RunReport[] {
  const result = spawnSync('unshare', ['--fork', '--pid', '--mount', '--mount-proc', 'sh', '-c',
    'mount -t tmpfs none /tmp && exec "$0" -c "$1" "$2" "$3" "$4"', python, HARNESS, sandboxDir, code, String(runs)],
  { encoding: 'utf8', timeout: 240_000 })
  assert.equal(result.status, 0, `the harness failed (it needs root for unshare): ${result.stderr}`)
  return JSON.parse(result.stdout) as RunReport[]
}

/** Busy loops on every core, outside the program's namespace: the CPU load the flake needed. */
function loadEveryCore (): ChildProcess[] {
  return Array.from({ length: os.availableParallelism() * 2 }, () => spawn('sh', ['-c', 'while :; do :; done'], { stdio: 'ignore' }))
}

test(`${JOBS} background jobs that fork before their call are one round, ${RUNS} times in a row, with every core loaded`, { timeout: 300_000 }, () => {
  const jobs = Array.from({ length: JOBS }, (_, i) => `{ v=$(echo ${i} | cat | cat); r=$(get_weather '{"city": "'$v'"}'); echo "$r" > /tmp/out.${i}; } &`)
  const busy = loadEveryCore()
  try {
    const reports = serveBash([...jobs, 'wait', `test "$(cat /tmp/out.* | wc -l)" = ${JOBS}`].join('\n'), RUNS)
    assert.equal(reports.length, RUNS)
    for (const report of reports) assert.deepEqual(report, { rounds: 1, calls: JOBS, exit_code: 0 }, JSON.stringify(reports))
  } finally {
    for (const child of busy) child.kill('SIGKILL')
  }
})

test('the count can fail: calls made one after another are one round each', () => {
  const reports = serveBash('a=$(get_weather \'{"n": 1}\')\nb=$(get_weather "$a")\nc=$(get_weather "$b")\ntest "$c" = \'{"n":1}\'', 3)
  for (const report of reports) assert.deepEqual(report, { rounds: 3, calls: 3, exit_code: 0 })
})

test('a program busy beside its call still gets its round: the gathering ends at its CPU budget', () => {
  const reports = serveBash('(while :; do :; done) &\nbusy=$!\na=$(get_weather \'{"n": 1}\')\nkill $busy\ntest "$a" = \'{"n":1}\'', 2)
  for (const report of reports) assert.deepEqual(report, { rounds: 1, calls: 1, exit_code: 0 })
})
