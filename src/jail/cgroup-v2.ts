import { access, appendFile, readFile } from 'node:fs/promises'
import path from 'node:path'
import {
  CPU_PERIOD_US, JAIL_CGROUP_DIR, ZYGOTE_LEAF, assertName, assertWorkerNames, chownFiles, cpuQuotaUs, decimal,
  errorCode, errorText, ignoreCode, isAtOrUnder, killAll, makeCgroupDir, parseKeyed, readOptional, readProcs,
  removeCgroupTree, removeStaleInstances, writeControl, writeIfPresent,
  type CgroupCounters, type CgroupLimits, type Cgroups, type Mount, type Probe, type ZygoteCgroup, type ZygoteLimits, readControlNow, killUntilEmpty,
} from './cgroup.ts'
import { checkDelegation, type DelegationProbe } from './cgroup-delegation.ts'

const CONTROLLERS = ['memory', 'pids', 'cpu'] as const
const ENABLE_CONTROLLERS = '+memory +pids +cpu'
/** Where the server's own processes go so that its cgroup may hand controllers to children. */
export const SERVER_LEAF = 'warden-server'
const DELEGATION_ATTEMPTS = 3

/**
 * Probes v2: the cgroup2 mount under `fsRoot` (the mount itself first, e.g. `/sys/fs/cgroup` rather than
 * a hybrid host's `/sys/fs/cgroup/unified`) and the server's own cgroup in it, which must offer memory,
 * pids and cpu, and must be Warden's own to divide (`checkDelegation`: the unit's Delegate=yes, a cgroup
 * namespace of its own, or no other process in it). Delegates them (moving the server's processes into
 * `warden-server`), sweeps stale instances and creates `<base>/<instance>` (removed by `close()`).
 */
export async function openCgroupsV2 (mounts: Mount[], fsRoot: string, selfCgroupPath: string, instance: string, delegation: DelegationProbe): Promise<Probe> {
  const mount = mounts
    .filter((candidate) => candidate.fsType === 'cgroup2' && isAtOrUnder(candidate.mountPoint, fsRoot))
    .sort((a, b) => a.mountPoint.length - b.mountPoint.length)[0]
  if (!mount) return { ok: false, absent: true, reason: `cgroup v2: no cgroup2 mount under ${fsRoot}` }
  const found = await findBase(mount, selfCgroupPath)
  if ('reason' in found) return { ok: false, absent: true, reason: `cgroup v2: ${found.reason}` }
  const { base, ownPath } = found
  const delegated = await checkDelegation(base, ownPath, delegation)
  const available = words(await readOptional(path.join(base, 'cgroup.controllers')) ?? '')
  const missing = CONTROLLERS.filter((controller) => !available.includes(controller))
  if (missing.length > 0) {
    // absent: a hybrid host's unified mount has no controllers, and v1 is tried next
    const why = delegated.ok ? '' : `; ${delegated.reason}`
    return { ok: false, absent: true, reason: `cgroup v2 at ${base}: ${missing.join(', ')} missing from cgroup.controllers${why}` }
  }
  if (!delegated.ok) return { ok: false, absent: false, reason: `cgroup v2: ${delegated.reason}`, isAdvice: true }
  try {
    await delegateControllers(base)
    const warnings = await removeStaleInstances([base], instance)
    await makeCgroupDir(path.join(base, instance))
    await writeControl(path.join(base, instance, 'cgroup.subtree_control'), ENABLE_CONTROLLERS)
    return { ok: true, cgroups: createCgroupsV2(base, instance), warnings }
  } catch (err) {
    return { ok: false, absent: false, reason: `cgroup v2 at ${base}: cannot delegate memory, pids and cpu: ${errorText(err)}` }
  }
}

/**
 * `<mount>/<own cgroup>` from the `0::/path` line of /proc/self/cgroup, relative to the mount's root, and
 * that path (`ownPath`) as the cgroup namespace names it.
 */
async function findBase (mount: Mount, selfCgroupPath: string): Promise<{ base: string, ownPath: string } | { reason: string }> {
  const text = await readOptional(selfCgroupPath)
  const line = text?.split('\n').find((candidate) => candidate.startsWith('0::'))?.slice(3)
  if (line === undefined) return { reason: `no "0::" line in ${selfCgroupPath}` }
  if (!isAtOrUnder(line, mount.root)) return { reason: `own cgroup ${line} is outside the mount's root ${mount.root}` }
  // a server restarted after delegation already lives in <base>/warden-server: its parent is the base
  const ownPath = path.posix.basename(line) === SERVER_LEAF ? path.posix.dirname(line) : line
  return { base: path.join(mount.mountPoint, path.relative(mount.root, ownPath)), ownPath }
}

/**
 * Enables memory, pids and cpu in `<base>/cgroup.subtree_control`. The "no internal processes" rule
 * (cgroup-v2.rst) refuses that while `base` holds processes, so they move to `<base>/warden-server`
 * first; the root cgroup (it alone has no cgroup.type) is exempt and its processes stay.
 */
async function delegateControllers (base: string): Promise<void> {
  const enabled = words(await readFile(path.join(base, 'cgroup.subtree_control'), 'utf8')).map((word) => word.replace(/^\+/, ''))
  if (CONTROLLERS.every((controller) => enabled.includes(controller))) return
  const isRoot = !await access(path.join(base, 'cgroup.type')).then(() => true, ignoreCode('ENOENT', false))
  for (let attempt = 1; ; attempt++) {
    if (!isRoot) await moveProcesses(base, path.join(base, SERVER_LEAF))
    try {
      return await writeControl(path.join(base, 'cgroup.subtree_control'), ENABLE_CONTROLLERS)
    } catch (err) {
      // EBUSY: a process was forked into base while we moved the others
      if (errorCode(err) !== 'EBUSY' || attempt === DELEGATION_ATTEMPTS) throw err
    }
  }
}

async function moveProcesses (from: string, to: string): Promise<void> {
  const pids = await readProcs(from)
  if (pids.length === 0) return
  await makeCgroupDir(to)
  // one pid per write, as the kernel reads them; a process that exited meanwhile answers ESRCH
  for (const pid of pids) await appendFile(path.join(to, 'cgroup.procs'), `${decimal(pid)}\n`).catch(ignoreCode('ESRCH'))
}

function createCgroupsV2 (base: string, instance: string): Cgroups {
  const dirOf = (...names: string[]) => path.join(base, instance, ...names)
  const processesOf = async (zygote: string, worker: string) => {
    assertWorkerNames(zygote, worker)
    return await readProcs(dirOf(zygote, worker))
  }
  const killGroup = async (dir: string) => {
    // cgroup.kill (Linux 5.14) kills the whole subtree at once, forks included
    if (!await writeIfPresent(path.join(dir, 'cgroup.kill'), 1)) await killAll(() => readProcs(dir))
  }

  return {
    version: 2,
    description: `cgroup v2 (memory, pids, cpu) at ${base}`,

    async createZygoteGroup (zygote: string, ownerUid: number, limits: ZygoteLimits): Promise<ZygoteCgroup> {
      assertName(zygote, 'zygote')
      const leaf = dirOf(zygote, ZYGOTE_LEAF)
      await makeCgroupDir(dirOf(zygote))
      await writeControl(dirOf(zygote, 'cgroup.subtree_control'), ENABLE_CONTROLLERS)
      await makeCgroupDir(leaf)
      await writeMemoryAndPids(leaf, limits.memoryBytes, limits.pidsMax)
      // cpu.weight: 100 is a worker's (the default), range 1..10000
      const weight = Math.min(10_000, Math.max(1, Math.round(limits.cpuWeightPercent)))
      await writeControl(path.join(leaf, 'cpu.weight'), weight)
      // A worker moving itself out of the leaf needs write access to the common ancestor's cgroup.procs
      // (cgroup-v2.rst "Delegation Containment"); the leaf's own stays root's, because the root `sh`
      // wrapper writes it, and root without CAP_DAC_OVERRIDE (Docker's --cap-drop ALL) may write only
      // files it owns
      await chownFiles([dirOf(zygote, 'cgroup.procs')], ownerUid)
      return {
        name: zygote,
        launcherProcsFiles: [path.join(leaf, 'cgroup.procs')],
        bindMounts: [{ hostPath: dirOf(zygote), jailPath: JAIL_CGROUP_DIR }],
      }
    },

    async createWorkerGroup (zygote, worker, ownerUid, limits: CgroupLimits) {
      assertWorkerNames(zygote, worker)
      const dir = dirOf(zygote, worker)
      await makeCgroupDir(dir)
      await writeMemoryAndPids(dir, limits.memoryBytes, limits.pidsMax)
      await writeControl(path.join(dir, 'cpu.max'), `${cpuQuotaUs(limits.cpus)} ${CPU_PERIOD_US}`)
      await chownFiles([path.join(dir, 'cgroup.procs')], ownerUid)
      return { name: worker, jailProcsFiles: [path.posix.join(JAIL_CGROUP_DIR, worker, 'cgroup.procs')] }
    },

    async readCounters (zygote, worker): Promise<CgroupCounters> {
      assertWorkerNames(zygote, worker)
      const dir = dirOf(zygote, worker)
      // memory.events is hierarchical, but a worker's group is a leaf, so it counts this worker alone
      const events = parseKeyed(readControlNow(path.join(dir, 'memory.events'), false) ?? '')
      const cpuStat = parseKeyed(readControlNow(path.join(dir, 'cpu.stat'), false) ?? '')
      const memoryPeak = readControlNow(path.join(dir, 'memory.peak'), true) // Linux 5.19
      const pidsPeak = readControlNow(path.join(dir, 'pids.peak'), true) // Linux 6.1
      return {
        oomKills: events.get('oom_kill') ?? 0,
        memoryPeakBytes: memoryPeak === null ? null : Number(memoryPeak),
        cpuUsageUs: cpuStat.get('usage_usec') ?? null,
        pidsPeak: pidsPeak === null ? null : Number(pidsPeak),
      }
    },

    async readOomKills (zygote, worker): Promise<number> {
      assertWorkerNames(zygote, worker)
      return parseKeyed(readControlNow(path.join(dirOf(zygote, worker), 'memory.events'), false) ?? '').get('oom_kill') ?? 0
    },

    listProcesses: processesOf,

    async killWorkerGroup (zygote, worker) {
      assertWorkerNames(zygote, worker)
      await killGroup(dirOf(zygote, worker))
    },

    async resetWorkerGroup (zygote, worker) {
      assertWorkerNames(zygote, worker)
      // memory.peak cannot be reset for everyone (only per open fd, Linux 6.12): it stays a slot maximum
      await killGroup(dirOf(zygote, worker))
      await killUntilEmpty(() => readProcs(dirOf(zygote, worker)))
    },

    async removeWorkerGroup (zygote, worker) {
      assertWorkerNames(zygote, worker)
      await killGroup(dirOf(zygote, worker))
      await removeCgroupTree(dirOf(zygote, worker))
    },

    async removeZygoteGroup (zygote) {
      assertName(zygote, 'zygote')
      await killGroup(dirOf(zygote))
      await removeCgroupTree(dirOf(zygote))
    },

    async close () {
      await removeCgroupTree(dirOf())
    },
  }
}

/** memory.swap.max 0: no swap, so the memory limit is the limit (absent without swap accounting). */
async function writeMemoryAndPids (dir: string, memoryBytes: number, pidsMax: number): Promise<void> {
  await writeControl(path.join(dir, 'memory.max'), memoryBytes)
  await writeIfPresent(path.join(dir, 'memory.swap.max'), 0)
  await writeControl(path.join(dir, 'pids.max'), pidsMax)
}

function words (text: string): string[] {
  return text.split(/\s+/).filter(Boolean)
}
