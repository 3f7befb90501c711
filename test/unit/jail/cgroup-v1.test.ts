import assert from 'node:assert/strict'
import { spawn } from 'node:child_process'
import { once } from 'node:events'
import { existsSync } from 'node:fs'
import { mkdir, mkdtemp, readFile, rm, stat, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import path from 'node:path'
import { afterEach, beforeEach, test } from 'node:test'
import { detectCgroups, type Cgroups } from '../../../src/jail/cgroup.ts'

// A fake cgroup v1 tree (Documentation/admin-guide/cgroup-v1/): one directory per hierarchy, listed in a
// fake mountinfo. The kernel makes a group's control files on mkdir; a plain directory does not, so
// groups the code will create are pre-made here with the files this kernel (6.x) has.
const INSTANCE = 'warden-test-7'
const OWNER_UID = process.getuid?.() === 0 ? 54_321 : process.getuid?.() ?? 0 // non-root may chown only to itself
const COMMON: Record<string, string> = { 'cgroup.procs': '', tasks: '', notify_on_release: '0\n' }
const CONTROLLER_FILES: Record<string, Record<string, string>> = {
  memory: {
    'memory.limit_in_bytes': '9223372036854771712\n',
    'memory.memsw.limit_in_bytes': '9223372036854771712\n',
    'memory.max_usage_in_bytes': '67108864\n',
    'memory.oom_control': 'oom_kill_disable 0\nunder_oom 0\noom_kill 2\n',
  },
  pids: { 'pids.max': 'max\n', 'pids.peak': '16\n', 'pids.current': '0\n' },
  cpu: { 'cpu.cfs_period_us': '100000\n', 'cpu.cfs_quota_us': '-1\n', 'cpu.shares': '1024\n' },
  cpuacct: { 'cpuacct.usage': '1234567\n' },
}

let root: string

/** Mount names are directory names under the fake fsRoot; `cpu,cpuacct` is a co-mounted hierarchy. */
async function detect (hierarchies = ['memory', 'pids', 'cpu', 'cpuacct']) {
  const lines = ['22 1 0:21 / /proc rw,nosuid - proc proc rw', `31 22 0:26 / ${root} rw - tmpfs tmpfs rw,mode=755`]
  hierarchies.forEach((name, index) => {
    lines.push(`${40 + index} 31 0:${40 + index} / ${root}/${name} rw,nosuid - cgroup cgroup rw,${name}`)
  })
  lines.push(`50 31 0:50 / ${root}/systemd rw - cgroup cgroup rw,xattr,name=systemd`)
  lines.push(`51 31 0:51 / ${root}/unified rw - cgroup2 cgroup2 rw`) // a hybrid host: cgroup2 without controllers
  await mkdir(path.join(root, 'unified'), { recursive: true })
  await writeFile(path.join(root, 'unified/cgroup.controllers'), '')
  await writeFile(path.join(root, 'mountinfo'), lines.join('\n') + '\n')
  await writeFile(path.join(root, 'self-cgroup'), '4:memory:/\n1:cpu:/\n0::/\n')
  return await detectCgroups({
    instance: INSTANCE,
    mode: 'auto',
    fsRoot: root,
    mountInfoPath: path.join(root, 'mountinfo'),
    selfCgroupPath: path.join(root, 'self-cgroup'),
  })
}

async function open (hierarchies?: string[]): Promise<Cgroups> {
  const detection = await detect(hierarchies)
  assert.ok(detection.ok, detection.ok ? '' : detection.reason)
  return detection.cgroups
}

/** Pre-makes `<hierarchy>/<instance>/<group>` with the control files of each controller in the hierarchy's name. */
async function makeGroup (hierarchy: string, group: string, overrides: Record<string, string | null> = {}) {
  const dir = path.join(root, hierarchy, INSTANCE, group)
  await mkdir(dir, { recursive: true })
  const files = Object.assign({}, COMMON, ...hierarchy.split(',').map((name) => CONTROLLER_FILES[name]), overrides)
  for (const [name, text] of Object.entries<string | null>(files)) {
    if (text !== null) await writeFile(path.join(dir, name), text)
  }
}

async function makeGroups (group: string, hierarchies = ['memory', 'pids', 'cpu', 'cpuacct']) {
  for (const hierarchy of hierarchies) await makeGroup(hierarchy, group)
}

const read = (file: string) => readFile(path.join(root, file), 'utf8')
const ownerOf = async (file: string) => (await stat(path.join(root, file))).uid

beforeEach(async () => {
  root = await mkdtemp(path.join(tmpdir(), 'warden-cgroup-v1-'))
  for (const hierarchy of ['memory', 'pids', 'cpu', 'cpuacct', 'cpu,cpuacct']) await mkdir(path.join(root, hierarchy))
})
afterEach(async () => { await rm(root, { recursive: true, force: true }) })

test('a hybrid host whose cgroup2 has no controllers gets v1, with the instance made in each hierarchy', async () => {
  const cgroups = await open()
  assert.equal(cgroups.version, 1)
  assert.equal(cgroups.description, 'cgroup v1 (memory, pids, cpu, cpuacct)')
  for (const hierarchy of ['memory', 'pids', 'cpu', 'cpuacct']) assert.ok(existsSync(path.join(root, hierarchy, INSTANCE)))
})

test('a zygote group gets memory and memsw limits, pids.max and cpu.shares from its weight', async () => {
  const cgroups = await open()
  await makeGroups('z1/zygote')
  const zygote = await cgroups.createZygoteGroup('z1', OWNER_UID, { memoryBytes: 256 * 1024 * 1024, pidsMax: 64, cpuWeightPercent: 25 })
  assert.equal(await read(`memory/${INSTANCE}/z1/zygote/memory.limit_in_bytes`), '268435456')
  assert.equal(await read(`memory/${INSTANCE}/z1/zygote/memory.memsw.limit_in_bytes`), '268435456')
  assert.equal(await read(`pids/${INSTANCE}/z1/zygote/pids.max`), '64')
  assert.equal(await read(`cpu/${INSTANCE}/z1/zygote/cpu.shares`), '256')
  assert.deepEqual(zygote.launcherProcsFiles, ['memory', 'pids', 'cpu', 'cpuacct'].map((name) =>
    path.join(root, name, INSTANCE, 'z1/zygote/cgroup.procs')))
  assert.deepEqual(zygote.bindMounts, ['memory', 'pids', 'cpu', 'cpuacct'].map((name) =>
    ({ hostPath: path.join(root, name, INSTANCE, 'z1'), jailPath: `/run/warden/cgroup/${name}` })))
})

test('a worker group gets memory and memsw limits, pids.max and a CFS quota; its procs and tasks belong to the zygote uid', async () => {
  const cgroups = await open()
  await makeGroups('z1/w1')
  const worker = await cgroups.createWorkerGroup('z1', 'w1', OWNER_UID, { memoryBytes: 64 * 1024 * 1024, pidsMax: 16, cpus: 1.5 })
  assert.equal(await read(`memory/${INSTANCE}/z1/w1/memory.limit_in_bytes`), '67108864')
  assert.equal(await read(`memory/${INSTANCE}/z1/w1/memory.memsw.limit_in_bytes`), '67108864')
  assert.equal(await read(`pids/${INSTANCE}/z1/w1/pids.max`), '16')
  assert.equal(await read(`cpu/${INSTANCE}/z1/w1/cpu.cfs_period_us`), '100000')
  assert.equal(await read(`cpu/${INSTANCE}/z1/w1/cpu.cfs_quota_us`), '150000')
  for (const hierarchy of ['memory', 'pids', 'cpu', 'cpuacct']) {
    assert.equal(await ownerOf(`${hierarchy}/${INSTANCE}/z1/w1/cgroup.procs`), OWNER_UID)
    assert.equal(await ownerOf(`${hierarchy}/${INSTANCE}/z1/w1/tasks`), OWNER_UID)
  }
  assert.deepEqual(worker.jailProcsFiles, ['memory', 'pids', 'cpu', 'cpuacct'].map((name) => `/run/warden/cgroup/${name}/w1/cgroup.procs`))
})

test('without swap accounting memory.memsw.limit_in_bytes is not written', async () => {
  const cgroups = await open()
  await makeGroups('z1/w1', ['pids', 'cpu', 'cpuacct'])
  await makeGroup('memory', 'z1/w1', { 'memory.memsw.limit_in_bytes': null })
  await cgroups.createWorkerGroup('z1', 'w1', OWNER_UID, { memoryBytes: 1024 * 1024, pidsMax: 4, cpus: 1 })
  assert.equal(existsSync(path.join(root, 'memory', INSTANCE, 'z1/w1/memory.memsw.limit_in_bytes')), false)
  assert.equal(await read(`memory/${INSTANCE}/z1/w1/memory.limit_in_bytes`), '1048576')
})

test('co-mounted cpu,cpuacct is one hierarchy: one bind mount, one procs file, quota and usage in the same group', async () => {
  const cgroups = await open(['memory', 'pids', 'cpu,cpuacct'])
  assert.equal(cgroups.description, 'cgroup v1 (memory, pids, cpu,cpuacct)')
  await makeGroups('z1/zygote', ['memory', 'pids', 'cpu,cpuacct'])
  await makeGroups('z1/w1', ['memory', 'pids', 'cpu,cpuacct'])
  const zygote = await cgroups.createZygoteGroup('z1', OWNER_UID, { memoryBytes: 1024 * 1024, pidsMax: 4, cpuWeightPercent: 100 })
  assert.deepEqual(zygote.bindMounts.map((bind) => bind.jailPath), ['memory', 'pids', 'cpu,cpuacct'].map((name) => `/run/warden/cgroup/${name}`))
  const worker = await cgroups.createWorkerGroup('z1', 'w1', OWNER_UID, { memoryBytes: 1024 * 1024, pidsMax: 4, cpus: 0.5 })
  assert.deepEqual(worker.jailProcsFiles, ['memory', 'pids', 'cpu,cpuacct'].map((name) => `/run/warden/cgroup/${name}/w1/cgroup.procs`))
  assert.equal(await read(`cpu,cpuacct/${INSTANCE}/z1/w1/cpu.cfs_quota_us`), '50000')
  assert.equal((await cgroups.readCounters('z1', 'w1')).cpuUsageUs, 1235)
})

test('counters come from oom_control, max_usage_in_bytes, cpuacct.usage in microseconds and pids.peak', async () => {
  const cgroups = await open()
  await makeGroups('z1/w1')
  assert.deepEqual(await cgroups.readCounters('z1', 'w1'), { oomKills: 2, memoryPeakBytes: 67_108_864, cpuUsageUs: 1235, pidsPeak: 16 })
})

test('a kernel without oom_kill in oom_control, pids.peak or cpuacct reports 0 and nulls', async () => {
  const cgroups = await open(['memory', 'pids', 'cpu'])
  await makeGroups('z1/w1', ['memory', 'pids', 'cpu'])
  await makeGroup('memory', 'z1/w1', { 'memory.oom_control': 'oom_kill_disable 0\nunder_oom 0\n' })
  await rm(path.join(root, 'pids', INSTANCE, 'z1/w1/pids.peak'))
  assert.deepEqual(await cgroups.readCounters('z1', 'w1'), { oomKills: 0, memoryPeakBytes: 67_108_864, cpuUsageUs: null, pidsPeak: null })
})

test('killWorkerGroup SIGKILLs a process listed in any hierarchy', async () => {
  const cgroups = await open()
  const sleeper = spawn('sleep', ['100'], { stdio: 'ignore' })
  const exited = once(sleeper, 'exit')
  await makeGroups('z1/w1')
  await writeFile(path.join(root, 'pids', INSTANCE, 'z1/w1/cgroup.procs'), `${sleeper.pid}\n`)
  assert.deepEqual(await cgroups.listProcesses('z1', 'w1'), [sleeper.pid])
  await cgroups.killWorkerGroup('z1', 'w1')
  assert.deepEqual(await exited, [null, 'SIGKILL'])
})

test('a stale instance of a dead server is swept from every hierarchy, a live server\'s is kept', async () => {
  const deadPid = 99_999_999 // above the kernel's pid_max limit (2^22), so never alive
  for (const hierarchy of ['memory', 'pids']) {
    await mkdir(path.join(root, hierarchy, `warden-${deadPid}/z1/zygote`), { recursive: true })
    await mkdir(path.join(root, hierarchy, `warden-${process.pid}`))
  }
  const detection = await detect()
  assert.ok(detection.ok)
  for (const hierarchy of ['memory', 'pids']) {
    assert.equal(existsSync(path.join(root, hierarchy, `warden-${deadPid}`)), false)
    assert.ok(existsSync(path.join(root, hierarchy, `warden-${process.pid}`)))
  }
})

test('a missing pids hierarchy is reported by name, with the fix and the v2 finding', async () => {
  const detection = await detect(['memory', 'cpu', 'cpuacct'])
  assert.equal(detection.ok, false)
  const reason = detection.ok ? '' : detection.reason
  assert.match(reason, /cgroup v1: no pids hierarchy mounted under /)
  assert.match(reason, /cgroup v2 at .*unified: memory, pids, cpu missing from cgroup\.controllers/)
  assert.match(reason, /CGROUPS=off/)
  assert.equal(existsSync(path.join(root, 'memory', INSTANCE)), false)
})
