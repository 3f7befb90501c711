import assert from 'node:assert/strict'
import { test } from 'node:test'
import type { ExecutionLimits } from '../../../src/config.ts'
import type { WorkerSource } from '../../../src/exec/execute.ts'
import { runSelfTest } from '../../../src/exec/self-test.ts'
import type { Worker } from '../../../src/pool/worker.ts'
import { FakeWorker } from '../../helpers/fake-worker.ts'

const limits = { memoryBytes: 256 * 2 ** 20, pidsMax: 64, maxStdoutBytes: 65_536, maxStderrBytes: 65_536 } as ExecutionLimits

const SAFE = { uid: 65534, capabilities: '0000000000000000', no_new_privs: '1', seccomp: '2', unshare_refused: true, readonly_root: true, network_refused: true, interfaces: ['lo'], processes: 1 }

interface Jail { isolation?: Partial<typeof SAFE>, oomKills?: number, forks?: number, survivors?: number }

/** Workers that answer each canary as a jail with the given properties would. */
function fakeWorkers (jail: Jail): WorkerSource {
  return {
    acquire: async () => new FakeWorker((job) => {
      if (job.code.includes('interfaces')) return { stdout: JSON.stringify({ ...SAFE, ...jail.isolation }) }
      if (job.code.includes("b'\\x01'")) return (jail.oomKills ?? 1) > 0 ? { vanish: true, oomKills: jail.oomKills ?? 1 } : { stdout: 'not stopped\n' }
      if (job.code.includes('os.fork')) return { stdout: `${jail.forks ?? 60}\n` }
      return { stdout: 'started\n' }
    }, jail.survivors ?? 0) as unknown as Worker,
    release: () => {},
  }
}

test('a jail with every protection passes the self-test', async () => {
  const report = await runSelfTest(fakeWorkers({}), limits, { cgroups: true, serverPort: 8000, flavors: ['data'] })
  assert.equal(report.passed, true)
  assert.deepEqual(report.checks.filter((check) => !check.ok), [])
  assert.equal(report.checks.length, 10)
})

const failures: Array<[string, Jail, string]> = [
  ['network', { isolation: { network_refused: false } }, 'no network'],
  ['an extra interface', { isolation: { interfaces: ['lo', 'eth0'] } }, 'no network'],
  ['a writable root', { isolation: { readonly_root: false } }, 'read-only system'],
  ['root inside', { isolation: { uid: 0 } }, 'runs as uid 65534 inside'],
  ['a capability', { isolation: { capabilities: '0000000000200000' } }, 'no capabilities'],
  ['no seccomp', { isolation: { seccomp: '0', unshare_refused: false } }, 'seccomp filter active'],
  ['host processes visible', { isolation: { processes: 40 } }, 'own pid namespace'],
  ['no memory limit', { oomKills: 0 }, 'memory limit enforced'],
  ['no pids limit', { forks: 72 }, 'pids limit enforced'],
  ['a surviving process', { survivors: 2 }, 'no process outlives its execution'],
]
for (const [what, jail, check] of failures) {
  test(`a jail with ${what} fails the self-test on "${check}" alone`, async () => {
    const report = await runSelfTest(fakeWorkers(jail), limits, { cgroups: true, serverPort: 8000, flavors: ['data'] })
    assert.equal(report.passed, false)
    assert.deepEqual(report.checks.filter((c) => !c.ok).map((c) => c.name), [check])
  })
}

test('without cgroups the limit canaries are reported as not checked, not as passed silently', async () => {
  const report = await runSelfTest(fakeWorkers({ oomKills: 0, forks: 500, survivors: 3 }), limits, { cgroups: false, serverPort: 8000, flavors: ['data'] })
  assert.equal(report.passed, true)
  const notChecked = report.checks.filter((check) => check.detail.includes('not checked'))
  assert.deepEqual(notChecked.map((check) => check.name), ['memory limit enforced', 'pids limit enforced', 'no process outlives its execution'])
})

test('with a light zygote each flavor\'s jail is checked: a light jail with network fails on its own line', async () => {
  const healthy = fakeWorkers({})
  const leaky = fakeWorkers({ isolation: { network_refused: false } })
  const workers: WorkerSource = { acquire: async (flavor) => await (flavor === 'light' ? leaky : healthy).acquire(), release: () => {} }
  const report = await runSelfTest(workers, limits, { cgroups: true, serverPort: 8000, flavors: ['data', 'light'] })
  assert.equal(report.checks.length, 17)
  assert.deepEqual(report.checks.filter((c) => !c.ok).map((c) => c.name), ['no network (light workers)'])
})
