import assert from 'node:assert/strict'
import { spawn } from 'node:child_process'
import { once } from 'node:events'
import { existsSync } from 'node:fs'
import { readFile } from 'node:fs/promises'
import path from 'node:path'
import { after, before, describe, test } from 'node:test'
import { setTimeout as sleep } from 'node:timers/promises'
import { detectCgroups, type Cgroups, type WorkerCgroup, type ZygoteCgroup } from '../../src/jail/cgroup.ts'

// The real kernel of a cgroup v1 host (sandbox-research.md §8.1): limits must hold, counters must count,
// and removal must leave nothing behind.
const skip = process.getuid?.() !== 0
  ? 'needs root to create cgroups'
  : !existsSync('/sys/fs/cgroup/memory/memory.limit_in_bytes') ? 'needs a cgroup v1 memory hierarchy' : false
const INSTANCE = `warden-test-${process.pid}`
const MIB = 1024 * 1024

describe('cgroup v1 on this kernel', { skip }, () => {
  let cgroups: Cgroups
  let zygote: ZygoteCgroup

  before(async () => {
    const detection = await detectCgroups({ instance: INSTANCE, mode: 'auto' })
    assert.ok(detection.ok, detection.ok ? '' : detection.reason)
    assert.equal(detection.cgroups.version, 1)
    cgroups = detection.cgroups
    zygote = await cgroups.createZygoteGroup('z1', 0, { memoryBytes: 256 * MIB, pidsMax: 64, cpuWeightPercent: 25 })
  })
  after(async () => {
    await cgroups?.removeZygoteGroup('z1')
    await cgroups?.close()
  })

  /** The worker's procs files on the host, found through the zygote's bind mounts as the jail would see them. */
  function hostProcsFiles (worker: WorkerCgroup): string[] {
    return worker.jailProcsFiles.map((jailFile) => {
      const bind = zygote.bindMounts.find((candidate) => jailFile.startsWith(`${candidate.jailPath}/`))
      assert.ok(bind, `no bind mount holds ${jailFile}`)
      return path.join(bind.hostPath, path.relative(bind.jailPath, jailFile))
    })
  }

  /** Runs `script` under `sh` after the shell has put itself into every hierarchy of the worker's group. */
  function runInWorker (worker: WorkerCgroup, script: string) {
    const enter = hostProcsFiles(worker).map((file) => `echo $$ > '${file}'`).join(' && ')
    const child = spawn('/bin/sh', ['-c', `${enter} && ${script}`], { stdio: ['ignore', 'ignore', 'pipe'] })
    let stderr = ''
    child.stderr.setEncoding('utf8').on('data', (chunk: string) => { stderr += chunk })
    const exited = once(child, 'close').then(([code, signal]) => ({ code: code as number | null, signal, stderr }))
    return { child, exited }
  }

  async function waitForProcess (worker: string, pid: number): Promise<void> {
    for (let attempt = 0; attempt < 200; attempt++) {
      if ((await cgroups.listProcesses('z1', worker)).includes(pid)) return
      await sleep(10)
    }
    assert.fail(`pid ${pid} never appeared in ${worker}`)
  }

  test('the zygote leaf gets a quarter of a worker\'s cpu.shares and the launcher writes into every hierarchy', async () => {
    assert.equal(zygote.launcherProcsFiles.length, zygote.bindMounts.length)
    for (const file of zygote.launcherProcsFiles) assert.ok(existsSync(file), file)
    const cpuLeaf = zygote.launcherProcsFiles.find((file) => file.includes('/cpu/'))
    assert.ok(cpuLeaf)
    assert.equal((await readFile(path.join(path.dirname(cpuLeaf), 'cpu.shares'), 'utf8')).trim(), '256')
  })

  test('a worker over its memory limit is OOM-killed and counted', async () => {
    const worker = await cgroups.createWorkerGroup('z1', 'oom', 0, { memoryBytes: 64 * MIB, pidsMax: 16, cpus: 1 })
    // tail keeps a line in memory until its newline, and /dev/zero has none
    const { exited } = runInWorker(worker, 'head -c 200M /dev/zero | tail')
    const result = await exited
    assert.equal(result.code, 137, `exit ${result.code} ${result.signal ?? ''} ${result.stderr}`)
    const counters = await cgroups.readCounters('z1', 'oom')
    assert.ok(counters.oomKills >= 1, `oom_kill ${counters.oomKills}`)
    assert.ok(counters.memoryPeakBytes !== null && counters.memoryPeakBytes <= 64 * MIB, `peak ${counters.memoryPeakBytes}`)
    assert.ok(counters.memoryPeakBytes > 32 * MIB, `peak ${counters.memoryPeakBytes}`)
    await cgroups.removeWorkerGroup('z1', 'oom')
  })

  test('a fork loop stops at pids.max and its leftovers die with the group', async () => {
    const worker = await cgroups.createWorkerGroup('z1', 'forks', 0, { memoryBytes: 64 * MIB, pidsMax: 16, cpus: 1 })
    const { exited } = runInWorker(worker, 'i=0; while [ $i -lt 40 ]; do sleep 100 >/dev/null 2>&1 & i=$((i+1)); done; wait')
    const result = await exited
    assert.notEqual(result.code, 0)
    assert.match(result.stderr, /fork/i)
    const survivors = await cgroups.listProcesses('z1', 'forks')
    assert.ok(survivors.length >= 1 && survivors.length <= 15, `${survivors.length} sleeps left`)
    const counters = await cgroups.readCounters('z1', 'forks')
    if (counters.pidsPeak !== null) assert.equal(counters.pidsPeak, 16)
    await cgroups.removeWorkerGroup('z1', 'forks')
    assert.deepEqual(await cgroups.listProcesses('z1', 'forks'), [])
    assert.equal(existsSync(path.dirname(hostProcsFiles(worker)[0] ?? '')), false)
  })

  test('a CPU-bound worker limited to half a core gets about half a core', async () => {
    const worker = await cgroups.createWorkerGroup('z1', 'cpu', 0, { memoryBytes: 64 * MIB, pidsMax: 16, cpus: 0.5 })
    const { exited } = runInWorker(worker, 'timeout 1 sh -c "while :; do :; done"; true')
    assert.equal((await exited).code, 0)
    const counters = await cgroups.readCounters('z1', 'cpu')
    assert.ok(counters.cpuUsageUs !== null, 'cpuacct is mounted on this host')
    assert.ok(counters.cpuUsageUs > 50_000 && counters.cpuUsageUs < 750_000, `cpu ${counters.cpuUsageUs} us in 1 s`)
    await cgroups.removeWorkerGroup('z1', 'cpu')
  })

  test('killWorkerGroup SIGKILLs a process placed in the group', async () => {
    const worker = await cgroups.createWorkerGroup('z1', 'kill', 0, { memoryBytes: 64 * MIB, pidsMax: 16, cpus: 1 })
    const { child, exited } = runInWorker(worker, 'exec sleep 100')
    assert.ok(child.pid)
    await waitForProcess('kill', child.pid)
    await cgroups.killWorkerGroup('z1', 'kill')
    assert.equal((await exited).signal, 'SIGKILL')
    await cgroups.removeWorkerGroup('z1', 'kill')
  })

  test('removing a busy worker, then the zygote and the instance, leaves no directories behind', async () => {
    const worker = await cgroups.createWorkerGroup('z1', 'busy', 0, { memoryBytes: 64 * MIB, pidsMax: 16, cpus: 1 })
    const { child, exited } = runInWorker(worker, 'exec sleep 100')
    assert.ok(child.pid)
    await waitForProcess('busy', child.pid)
    await cgroups.removeWorkerGroup('z1', 'busy')
    assert.equal((await exited).signal, 'SIGKILL')
    await cgroups.removeWorkerGroup('z1', 'busy') // idempotent
    await cgroups.createWorkerGroup('z1', 'left', 0, { memoryBytes: 64 * MIB, pidsMax: 16, cpus: 1 })
    await cgroups.removeZygoteGroup('z1')
    for (const bind of zygote.bindMounts) assert.equal(existsSync(bind.hostPath), false, bind.hostPath)
    await cgroups.close()
    for (const bind of zygote.bindMounts) assert.equal(existsSync(path.dirname(bind.hostPath)), false, path.dirname(bind.hostPath))
  })
})
