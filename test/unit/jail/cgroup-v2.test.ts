import assert from 'node:assert/strict'
import { spawn } from 'node:child_process'
import { once } from 'node:events'
import { existsSync } from 'node:fs'
import { mkdir, mkdtemp, readFile, rm, stat, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import path from 'node:path'
import { afterEach, beforeEach, test } from 'node:test'
import { detectCgroups, type Cgroups } from '../../../src/jail/cgroup.ts'
import { isSelfOrDescendant, type DelegationProbe } from '../../../src/jail/cgroup-delegation.ts'

// A fake cgroup2 tree following Documentation/admin-guide/cgroup-v2.rst. The kernel makes a group's
// control files on mkdir; a plain directory does not, so groups the code will create are pre-made here.
const INSTANCE = 'warden-test-7'
const OWNER_UID = process.getuid?.() === 0 ? 54_321 : process.getuid?.() ?? 0 // non-root may chown only to itself
const GROUP_FILES: Record<string, string> = {
  'cgroup.procs': '',
  'cgroup.controllers': 'cpu io memory pids\n',
  'cgroup.subtree_control': '',
  'cgroup.type': 'domain\n',
  'cgroup.kill': '',
  'memory.max': 'max\n',
  'memory.swap.max': 'max\n',
  'memory.events': 'low 0\nhigh 0\nmax 3\noom 1\noom_kill 1\noom_group_kill 0\n',
  'memory.peak': '52428800\n',
  'pids.max': 'max\n',
  'pids.peak': '7\n',
  'cpu.max': 'max 100000\n',
  'cpu.weight': '100\n',
  'cpu.stat': 'usage_usec 1234\nuser_usec 1000\nsystem_usec 234\nnr_periods 0\nnr_throttled 0\nthrottled_usec 0\n',
}

let root: string
let fsRoot: string
let base: string

async function makeGroup (dir: string, overrides: Record<string, string | null> = {}): Promise<void> {
  await mkdir(dir, { recursive: true })
  for (const [name, text] of Object.entries({ ...GROUP_FILES, ...overrides })) {
    if (text !== null) await writeFile(path.join(dir, name), text)
  }
}

/** A host where systemd marked Warden's unit as delegated (the `user.delegate` xattr of Delegate=yes). */
const DELEGATED: DelegationProbe = {
  delegateXattr: async () => '1',
  unitDelegate: async () => true,
  isOwnProcess: () => true,
}

async function detect (selfCgroup = '0::/system.slice/warden.service\n', mountRoot = '/', delegation = DELEGATED) {
  await writeFile(path.join(root, 'mountinfo'), [
    '22 1 0:21 / /proc rw,nosuid,nodev,noexec,relatime shared:12 - proc proc rw',
    `31 22 0:26 ${mountRoot} ${fsRoot} rw,nosuid,nodev,noexec,relatime shared:9 - cgroup2 cgroup2 rw,nsdelegate`,
  ].join('\n') + '\n')
  await writeFile(path.join(root, 'self-cgroup'), selfCgroup)
  return await detectCgroups({
    instance: INSTANCE,
    mode: 'auto',
    fsRoot,
    mountInfoPath: path.join(root, 'mountinfo'),
    selfCgroupPath: path.join(root, 'self-cgroup'),
    delegation,
  })
}

async function open (): Promise<Cgroups> {
  const detection = await detect()
  assert.ok(detection.ok, detection.ok ? '' : detection.reason)
  return detection.cgroups
}

const read = (file: string) => readFile(path.join(base, file), 'utf8')
const ownerOf = async (file: string) => (await stat(path.join(base, file))).uid

beforeEach(async () => {
  root = await mkdtemp(path.join(tmpdir(), 'warden-cgroup-v2-'))
  fsRoot = path.join(root, 'cgroup')
  base = path.join(fsRoot, 'system.slice/warden.service')
  await makeGroup(base, { 'cgroup.procs': '4242\n4243\n' })
})
afterEach(async () => { await rm(root, { recursive: true, force: true }) })

test('detection picks v2 based at the server\'s own cgroup', async () => {
  const detection = await detect()
  assert.ok(detection.ok)
  assert.equal(detection.cgroups.version, 2)
  assert.equal(detection.cgroups.description, `cgroup v2 (memory, pids, cpu) at ${base}`)
  assert.ok(existsSync(path.join(base, INSTANCE)))
})

test('delegation moves the server\'s processes into warden-server and enables memory, pids and cpu', async () => {
  await open()
  assert.deepEqual((await read('warden-server/cgroup.procs')).split('\n').filter(Boolean), ['4242', '4243'])
  assert.equal(await read('cgroup.subtree_control'), '+memory +pids +cpu')
  assert.equal(await read(`${INSTANCE}/cgroup.subtree_control`), '+memory +pids +cpu')
})

test('controllers already enabled in subtree_control leave the server\'s processes where they are', async () => {
  await writeFile(path.join(base, 'cgroup.subtree_control'), 'cpu memory pids\n')
  await open()
  assert.equal(existsSync(path.join(base, 'warden-server')), false)
})

test('the root cgroup (no cgroup.type) is exempt: its processes stay and controllers are enabled', async () => {
  await rm(path.join(base, 'cgroup.type'))
  await open()
  assert.equal(existsSync(path.join(base, 'warden-server')), false)
  assert.equal(await read('cgroup.subtree_control'), '+memory +pids +cpu')
})

test('a server restarted inside warden-server keeps its parent as the base', async () => {
  await makeGroup(path.join(base, 'warden-server'))
  const detection = await detect('0::/system.slice/warden.service/warden-server\n')
  assert.ok(detection.ok)
  assert.equal(detection.cgroups.description, `cgroup v2 (memory, pids, cpu) at ${base}`)
})

test('the base is found relative to the mount\'s root (a cgroup namespace or a bound subtree)', async () => {
  await makeGroup(fsRoot)
  const detection = await detect('0::/\n')
  assert.ok(detection.ok)
  assert.equal(detection.cgroups.description, `cgroup v2 (memory, pids, cpu) at ${fsRoot}`)
  const bound = await detect('0::/docker/abc/system.slice/warden.service\n', '/docker/abc')
  assert.ok(bound.ok)
  assert.equal(bound.cgroups.description, `cgroup v2 (memory, pids, cpu) at ${base}`)
})

test('a zygote group gets its limits, a lower cpu.weight, one bind mount; the zygote owns the group\'s procs file, the server keeps the leaf\'s', async () => {
  const cgroups = await open()
  await makeGroup(path.join(base, INSTANCE, 'z1'))
  await makeGroup(path.join(base, INSTANCE, 'z1/zygote'))
  const zygote = await cgroups.createZygoteGroup('z1', OWNER_UID, { memoryBytes: 256 * 1024 * 1024, pidsMax: 64, cpuWeightPercent: 25 })
  assert.equal(await read(`${INSTANCE}/z1/cgroup.subtree_control`), '+memory +pids +cpu')
  assert.equal(await read(`${INSTANCE}/z1/zygote/memory.max`), '268435456')
  assert.equal(await read(`${INSTANCE}/z1/zygote/memory.swap.max`), '0')
  assert.equal(await read(`${INSTANCE}/z1/zygote/pids.max`), '64')
  assert.equal(await read(`${INSTANCE}/z1/zygote/cpu.weight`), '25')
  assert.equal(await ownerOf(`${INSTANCE}/z1/cgroup.procs`), OWNER_UID)
  // the root wrapper writes the leaf: without CAP_DAC_OVERRIDE (Docker's --cap-drop ALL) only a file it owns
  assert.equal(await ownerOf(`${INSTANCE}/z1/zygote/cgroup.procs`), process.getuid?.())
  assert.deepEqual(zygote, {
    name: 'z1',
    launcherProcsFiles: [path.join(base, INSTANCE, 'z1/zygote/cgroup.procs')],
    bindMounts: [{ hostPath: path.join(base, INSTANCE, 'z1'), jailPath: '/run/warden/cgroup' }],
  })
})

test('a worker group gets memory.max, memory.swap.max 0, pids.max and cpu.max as quota and period', async () => {
  const cgroups = await open()
  await makeGroup(path.join(base, INSTANCE, 'z1/w1'))
  const worker = await cgroups.createWorkerGroup('z1', 'w1', OWNER_UID, { memoryBytes: 64 * 1024 * 1024, pidsMax: 16, cpus: 0.5 })
  assert.equal(await read(`${INSTANCE}/z1/w1/memory.max`), '67108864')
  assert.equal(await read(`${INSTANCE}/z1/w1/memory.swap.max`), '0')
  assert.equal(await read(`${INSTANCE}/z1/w1/pids.max`), '16')
  assert.equal(await read(`${INSTANCE}/z1/w1/cpu.max`), '50000 100000')
  assert.equal(await ownerOf(`${INSTANCE}/z1/w1/cgroup.procs`), OWNER_UID)
  assert.deepEqual(worker, { name: 'w1', jailProcsFiles: ['/run/warden/cgroup/w1/cgroup.procs'] })
})

test('without swap accounting memory.swap.max is left alone, and a tiny cpus rate gets the 1 ms minimum quota', async () => {
  const cgroups = await open()
  await makeGroup(path.join(base, INSTANCE, 'z1/w1'), { 'memory.swap.max': null })
  await cgroups.createWorkerGroup('z1', 'w1', OWNER_UID, { memoryBytes: 1024 * 1024, pidsMax: 1, cpus: 0.001 })
  assert.equal(existsSync(path.join(base, INSTANCE, 'z1/w1/memory.swap.max')), false)
  assert.equal(await read(`${INSTANCE}/z1/w1/cpu.max`), '1000 100000')
})

test('counters come from memory.events oom_kill, memory.peak, cpu.stat usage_usec and pids.peak', async () => {
  const cgroups = await open()
  await makeGroup(path.join(base, INSTANCE, 'z1/w1'))
  assert.deepEqual(await cgroups.readCounters('z1', 'w1'), { oomKills: 1, memoryPeakBytes: 52_428_800, cpuUsageUs: 1234, pidsPeak: 7 })
})

test('counters are null where an older kernel has no memory.peak or pids.peak', async () => {
  const cgroups = await open()
  await makeGroup(path.join(base, INSTANCE, 'z1/w1'), { 'memory.peak': null, 'pids.peak': null })
  assert.deepEqual(await cgroups.readCounters('z1', 'w1'), { oomKills: 1, memoryPeakBytes: null, cpuUsageUs: 1234, pidsPeak: null })
})

test('killWorkerGroup writes 1 to cgroup.kill when the kernel has it', async () => {
  const cgroups = await open()
  await makeGroup(path.join(base, INSTANCE, 'z1/w1'))
  await cgroups.killWorkerGroup('z1', 'w1')
  assert.equal(await read(`${INSTANCE}/z1/w1/cgroup.kill`), '1')
})

test('without cgroup.kill, killWorkerGroup SIGKILLs every listed process', async () => {
  const cgroups = await open()
  const sleeper = spawn('sleep', ['100'], { stdio: 'ignore' })
  const exited = once(sleeper, 'exit')
  await makeGroup(path.join(base, INSTANCE, 'z1/w1'), { 'cgroup.kill': null, 'cgroup.procs': `${sleeper.pid}\n` })
  assert.deepEqual(await cgroups.listProcesses('z1', 'w1'), [sleeper.pid])
  await cgroups.killWorkerGroup('z1', 'w1')
  assert.deepEqual(await exited, [null, 'SIGKILL'])
})

// rmdir of real groups is covered on the kernel (test/jail/cgroup-v1-kernel.test.ts): a plain directory
// keeps the control files the kernel would drop with the group
test('removing groups that do not exist succeeds (removal is idempotent)', async () => {
  const cgroups = await open()
  await mkdir(path.join(base, INSTANCE, 'z1/w1'), { recursive: true }) // an emptied group
  await cgroups.removeWorkerGroup('z1', 'w1')
  await cgroups.removeWorkerGroup('z1', 'w1')
  await cgroups.removeZygoteGroup('gone')
  assert.equal(existsSync(path.join(base, INSTANCE, 'z1/w1')), false)
})

test('names that are not plain path components are refused', async () => {
  const cgroups = await open()
  const limits = { memoryBytes: 1024, pidsMax: 1, cpus: 1 }
  await assert.rejects(cgroups.createWorkerGroup('z1', '../escape', OWNER_UID, limits), TypeError)
  await assert.rejects(cgroups.createWorkerGroup('z1', 'cgroup.procs', OWNER_UID, limits), TypeError)
  await assert.rejects(cgroups.createWorkerGroup('z1', 'zygote', OWNER_UID, limits), TypeError)
})

test('a stale instance of a dead server is swept, a live server\'s is kept', async () => {
  const deadPid = 99_999_999 // above the kernel's pid_max limit (2^22), so never alive
  await mkdir(path.join(base, `warden-${deadPid}/z1/w1`), { recursive: true })
  await mkdir(path.join(base, `warden-${process.pid}`))
  const detection = await detect()
  assert.ok(detection.ok)
  assert.deepEqual(detection.warnings, [])
  assert.equal(existsSync(path.join(base, `warden-${deadPid}`)), false)
  assert.ok(existsSync(path.join(base, `warden-${process.pid}`)))
})

/** Nothing was moved, enabled or created in the base: Warden left a cgroup that is not its own alone. */
async function assertUntouched (dir: string): Promise<void> {
  assert.equal(existsSync(path.join(dir, 'warden-server')), false, 'no process was moved')
  assert.equal(await readFile(path.join(dir, 'cgroup.subtree_control'), 'utf8'), '', 'no controller was enabled')
  assert.equal(existsSync(path.join(dir, INSTANCE)), false, 'no instance was created')
}

// F1, F5 of the deployment issue: without Delegate=yes, systemd stopped Warden's unit at the first OOM
// kill, and a Warden started from an ssh login moved ssh.service's processes into its own tree
test('a systemd unit without Delegate=yes (ssh.service of a login shell) is refused, saying what to set, and left untouched', async () => {
  const ssh = path.join(fsRoot, 'system.slice/ssh.service')
  await makeGroup(ssh, { 'cgroup.procs': '612\n4242\n' })
  const asked: string[] = []
  const detection = await detect('0::/system.slice/ssh.service\n', '/', {
    delegateXattr: async (dir) => { asked.push(dir); return null },
    unitDelegate: async (unit) => { asked.push(unit); return false },
    isOwnProcess: () => true,
  })
  assert.equal(detection.ok, false)
  const reason = detection.ok ? '' : detection.reason
  assert.match(reason, /systemd unit ssh\.service, which has Delegate=no/)
  assert.match(reason, /Delegate=yes \(deploy\/warden\.service/)
  assert.match(reason, /its own cgroup namespace/)
  assert.doesNotMatch(reason, /cgroup v1|--privileged/, 'no fallback to v1 and no generic fix')
  assert.deepEqual(asked, [ssh, 'ssh.service'])
  await assertUntouched(ssh)
})

test('a unit systemd did not mark with the user.delegate attribute is refused even where systemctl cannot answer', async () => {
  const detection = await detect('0::/system.slice/warden.service\n', '/', { ...DELEGATED, delegateXattr: async () => null, unitDelegate: async () => null })
  assert.equal(detection.ok, false)
  assert.match(detection.ok ? '' : detection.reason, /warden\.service, which is not marked as delegated/)
  await assertUntouched(base)
})

test('a unit an older systemd reports as Delegate=yes only through systemctl is divided', async () => {
  const detection = await detect('0::/system.slice/warden.service\n', '/', { ...DELEGATED, delegateXattr: async () => null })
  assert.ok(detection.ok, detection.ok ? '' : detection.reason)
})

test('a transient scope (systemd-run --scope) is a unit too: refused without Delegate=yes', async () => {
  const scope = path.join(fsRoot, 'user.slice/user-0.slice/session-3.scope')
  await makeGroup(scope)
  const detection = await detect('0::/user.slice/user-0.slice/session-3.scope\n', '/', { ...DELEGATED, delegateXattr: async () => null, unitDelegate: async () => false })
  assert.match(detection.ok ? '' : detection.reason, /systemd unit session-3\.scope, which has Delegate=no/)
  await assertUntouched(scope)
})

test('a server restarted inside warden-server of a unit that lost Delegate=yes is refused too', async () => {
  await makeGroup(path.join(base, 'warden-server'))
  const detection = await detect('0::/system.slice/warden.service/warden-server\n', '/', { ...DELEGATED, delegateXattr: async () => null, unitDelegate: async () => false })
  assert.match(detection.ok ? '' : detection.reason, /Warden's cgroup \/system\.slice\/warden\.service belongs to the systemd unit warden\.service/)
})

test('the root of Warden\'s cgroup namespace (a container\'s own) is divided without asking systemd', async () => {
  await makeGroup(fsRoot, { 'cgroup.procs': '1\n7\n' })
  const nobody = async (): Promise<never> => { throw new Error('systemd was asked about a namespace root') }
  const detection = await detect('0::/\n', '/', { delegateXattr: nobody, unitDelegate: nobody, isOwnProcess: () => false })
  assert.ok(detection.ok, detection.ok ? '' : detection.reason)
})

test('a cgroup outside systemd is divided when only Warden\'s own processes are in it, refused when a stranger shares it', async () => {
  const plain = path.join(fsRoot, 'apps/warden')
  await makeGroup(plain, { 'cgroup.procs': '4242\n4243\n' })
  const own = await detect('0::/apps/warden\n', '/', { ...DELEGATED, isOwnProcess: (pid) => pid === 4242 || pid === 4243 })
  assert.ok(own.ok, own.ok ? '' : own.reason)

  const shared = path.join(fsRoot, 'apps/shared')
  await makeGroup(shared, { 'cgroup.procs': '4242\n999\n' })
  const detection = await detect('0::/apps/shared\n', '/', { ...DELEGATED, isOwnProcess: (pid) => pid === 4242 })
  assert.equal(detection.ok, false)
  assert.match(detection.ok ? '' : detection.reason, /cgroup \/apps\/shared also holds processes that are not Warden's \(pids 999\)/)
  await assertUntouched(shared)
})

test('a missing controller is reported by name, with the fix, and nothing is created', async () => {
  await writeFile(path.join(base, 'cgroup.controllers'), 'cpu io memory\n')
  const detection = await detect()
  assert.equal(detection.ok, false)
  assert.match(detection.ok ? '' : detection.reason, /cgroup v2 at .*warden\.service: pids missing from cgroup\.controllers/)
  assert.match(detection.ok ? '' : detection.reason, /CGROUPS=off/)
  assert.equal(existsSync(path.join(base, INSTANCE)), false)
})

test('CGROUPS=off and an unreadable mount table are reasons, not exceptions', async () => {
  assert.deepEqual(await detectCgroups({ instance: INSTANCE, mode: 'off' }), { ok: false, reason: 'disabled by CGROUPS=off' })
  const detection = await detectCgroups({ instance: INSTANCE, mode: 'auto', mountInfoPath: path.join(root, 'missing') })
  assert.equal(detection.ok, false)
  assert.match(detection.ok ? '' : detection.reason, /cannot read the mount table/)
})

test('Warden\'s own processes are itself and what it started, not the shell or init that started it', async () => {
  const child = spawn('sleep', ['100'], { stdio: 'ignore' })
  try {
    assert.equal(isSelfOrDescendant(process.pid, process.pid), true)
    assert.equal(isSelfOrDescendant(child.pid as number, process.pid), true)
    assert.equal(isSelfOrDescendant(process.ppid, process.pid), false)
    assert.equal(isSelfOrDescendant(1, process.pid), false)
  } finally {
    child.kill('SIGKILL')
  }
})
