import type { ExecutionLimits } from '../config.ts'
import type { OutputSink } from '../pool/run.ts'
import type { Worker } from '../pool/worker.ts'
import { collectRun, type CollectedRun } from './collect-run.ts'
import type { Flavor } from '../pool/worker-pool.ts'
import { cpuSecondsFor, type WorkerSource } from './execute.ts'
import bash from './languages/bash.ts'
import python from './languages/python.ts'

export interface SelfTestCheck { name: string, ok: boolean, detail: string }
export interface SelfTestReport { passed: boolean, checks: SelfTestCheck[], durationMs: number }

/** The isolation canary: one Python run reporting what a program can see and do. */
const ISOLATION_PROBE = `
import ctypes, errno, json, os, socket
libc = ctypes.CDLL(None, use_errno=True)
def refused(call):
    result = call()
    return result == -1 and ctypes.get_errno() in (errno.EPERM, errno.EACCES, errno.ENOSYS)
def fails(action):
    try:
        action()
        return False
    except OSError:
        return True
status = dict(line.split(':', 1) for line in open('/proc/self/status').read().splitlines() if ':' in line)
def write_system():
    with open('/usr/warden-canary', 'w') as f:
        f.write('x')
def connect(address):
    with socket.create_connection(address, timeout=2):
        pass
print(json.dumps({
    'uid': os.getuid(),
    'capabilities': status['CapEff'].strip(),
    'no_new_privs': status['NoNewPrivs'].strip(),
    'seccomp': status['Seccomp'].strip(),
    'unshare_refused': refused(lambda: libc.unshare(0x10000000)),
    'readonly_root': fails(write_system),
    'network_refused': fails(lambda: connect(('1.1.1.1', 53))) and fails(lambda: connect(('127.0.0.1', PORT))),
    'interfaces': [line.split(':')[0].strip() for line in open('/proc/net/dev').read().splitlines()[2:]],
    'processes': len([name for name in os.listdir('/proc') if name.isdigit()]),
}))
`

/** Fork until refused; prints how many children were made. */
const PIDS_PROBE = `
import os, time
made = 0
try:
    while made < LIMIT + 8:
        if os.fork() == 0:
            time.sleep(30)
            os._exit(0)
        made += 1
except OSError:
    pass
print(made)
`

/** Processes meant to outlive the run; they must not. */
const LEFTOVER_PROBE = 'nohup sleep 1000 >/dev/null 2>&1 &\nsetsid sleep 1000 >/dev/null 2>&1 &\n( sleep 1000 & ) ; echo started'

const NO_OUTPUTS: OutputSink = { open: async () => null }

/**
 * Canaries in real jails before the server reports ready: no network, a read-only system, no
 * capabilities and a seccomp filter, the memory and pids limits enforced, and nothing surviving a run.
 * Any failure stops the server with a reason an operator can act on.
 */
export async function runSelfTest (workers: WorkerSource, limits: ExecutionLimits, options: { cgroups: boolean, serverPort: number, flavors: Flavor[] }): Promise<SelfTestReport> {
  const started = performance.now()
  // one after the other: a pool as small as POOL_MAX=1 with MAX_QUEUE=0 must pass too
  const isolation: SelfTestCheck[] = []
  // every zygote flavor is a jail of its own: each is checked
  for (const flavor of options.flavors) isolation.push(...await isolationChecks(workers, flavor, options.serverPort))
  const flat = [
    ...isolation,
    ...await (options.cgroups ? memoryCheck(workers, limits) : skipped('memory limit enforced')),
    ...await (options.cgroups ? pidsCheck(workers, limits) : skipped('pids limit enforced')),
    ...await (options.cgroups ? leftoverCheck(workers) : skipped('no process outlives its execution')),
  ]
  return { passed: flat.every((check) => check.ok), checks: flat, durationMs: Math.round(performance.now() - started) }
}

async function skipped (name: string): Promise<SelfTestCheck[]> {
  return [{ name, ok: true, detail: 'not checked: cgroups are off (CGROUPS=off)' }]
}

async function withWorker<T> (workers: WorkerSource, use: (worker: Worker) => Promise<T>, flavor: Flavor = 'data'): Promise<T> {
  // the check is of this flavor's zygote: not a stand-in of another
  const worker = await workers.acquire(flavor, undefined, { exactFlavor: true })
  try {
    return await use(worker)
  } finally {
    workers.release(worker)
  }
}

// A deadline against a canary that hangs, not a measurement: on a working host each one ends well within a
// second, but under software emulation (test/host) forking the preloaded interpreter for the pids canary
// took over 10 s, and a slow host must not fail its self-test for being slow.
const CANARY_TIMEOUT_MS = 60_000

/** One canary run in `worker`, collected as /exec would. */
async function runCanary (worker: Worker, language: 'python' | 'bash', code: string, limits: Pick<ExecutionLimits, 'maxStdoutBytes' | 'maxStderrBytes'>): Promise<CollectedRun> {
  const run = worker.start({
    owner: 'self-test',
    program: (language === 'python' ? python : bash).program,
    code,
    args: [],
    inputs: [],
    cpuSeconds: cpuSecondsFor(CANARY_TIMEOUT_MS),
    keep: false,
    outputs: NO_OUTPUTS,
  })
  return await collectRun(run, { timeoutMs: CANARY_TIMEOUT_MS, maxStdoutBytes: limits.maxStdoutBytes, maxStderrBytes: limits.maxStderrBytes })
}

function describeRun (run: CollectedRun): string {
  return `exit ${run.exitCode}, signal ${run.signal}, stderr ${JSON.stringify(run.stderr.toString('utf8').slice(-300))}`
}

async function isolationChecks (workers: WorkerSource, flavor: Flavor, serverPort: number): Promise<SelfTestCheck[]> {
  const run = await withWorker(workers, (worker) => runCanary(worker, 'python', ISOLATION_PROBE.replace('PORT', String(serverPort)), {
    maxStdoutBytes: 65_536, maxStderrBytes: 65_536,
  }), flavor)
  let seen: Record<string, unknown>
  try {
    seen = JSON.parse(run.stdout.toString('utf8')) as Record<string, unknown>
  } catch {
    return [{ name: `isolation canary ran${flavor === 'data' ? '' : ` (${flavor} workers)`}`, ok: false, detail: describeRun(run) }]
  }
  const where = flavor === 'data' ? '' : ` (${flavor} workers)`
  const check = (name: string, ok: boolean, detail: unknown): SelfTestCheck => ({ name: name + where, ok, detail: JSON.stringify(detail) })
  return [
    check('runs as uid 65534 inside', seen.uid === 65534, seen.uid),
    check('no capabilities', /^0+$/.test(String(seen.capabilities)), seen.capabilities),
    check('no_new_privs set', seen.no_new_privs === '1', seen.no_new_privs),
    check('seccomp filter active', seen.seccomp === '2' && seen.unshare_refused === true, { seccomp: seen.seccomp, unshareRefused: seen.unshare_refused }),
    check('read-only system', seen.readonly_root === true, seen.readonly_root),
    check('no network', seen.network_refused === true && JSON.stringify(seen.interfaces) === '["lo"]', { refused: seen.network_refused, interfaces: seen.interfaces }),
    check('own pid namespace', typeof seen.processes === 'number' && seen.processes <= 2, seen.processes),
  ]
}

async function memoryCheck (workers: WorkerSource, limits: ExecutionLimits): Promise<SelfTestCheck[]> {
  const bytes = limits.memoryBytes + 64 * 1024 * 1024
  const run = await withWorker(workers, (worker) => runCanary(worker, 'python', `data = b'\\x01' * ${bytes}\nprint('not stopped')`, limits))
  const ok = (run.counters?.oomKills ?? 0) > 0 && !run.stdout.toString().includes('not stopped')
  return [{ name: 'memory limit enforced', ok, detail: ok ? `${bytes} bytes were refused` : describeRun(run) }]
}

async function pidsCheck (workers: WorkerSource, limits: ExecutionLimits): Promise<SelfTestCheck[]> {
  const run = await withWorker(workers, (worker) => runCanary(worker, 'python', PIDS_PROBE.replace('LIMIT', String(limits.pidsMax)), limits))
  const made = Number(run.stdout.toString().trim())
  const ok = Number.isInteger(made) && made > 0 && made < limits.pidsMax
  return [{ name: 'pids limit enforced', ok, detail: ok ? `${made} of ${limits.pidsMax} processes could be made` : describeRun(run) }]
}

async function leftoverCheck (workers: WorkerSource): Promise<SelfTestCheck[]> {
  const survivors = await withWorker(workers, async (worker) => {
    const run = await runCanary(worker, 'bash', LEFTOVER_PROBE, { maxStdoutBytes: 65_536, maxStderrBytes: 65_536 })
    return run.stdout.toString() === 'started\n' ? await worker.survivors() : -1
  }, 'light')
  const ok = survivors === 0
  return [{ name: 'no process outlives its execution', ok, detail: `${survivors} process(es) left after the run` }]
}
