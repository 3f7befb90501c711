import { access, constants, rmdir } from 'node:fs/promises'
import path from 'node:path'
import {
  CPU_PERIOD_US, JAIL_CGROUP_DIR, ZYGOTE_LEAF, assertName, assertWorkerNames, chownFiles, cpuQuotaUs, errorText, isAtOrUnder, killAll,
  makeCgroupDir, killUntilEmpty, parseKeyed, readProcs, removeCgroupTree, removeStaleInstances, writeControl,
  writeIfPresent,
  type CgroupCounters, type CgroupLimits, type Cgroups, type Mount, type Probe, type ZygoteCgroup, type ZygoteLimits, readControlNow,
} from './cgroup.ts'

/** The controllers Warden uses, in the order they are named; cpuacct only reports CPU time and is optional. */
const USED_CONTROLLERS = ['memory', 'pids', 'cpu', 'cpuacct'] as const
type Controller = typeof USED_CONTROLLERS[number]

/**
 * One mounted v1 hierarchy. Co-mounted controllers (`cpu,cpuacct`) share one: one directory tree, one
 * bind into the jail, one procs file. `jailName` is its directory under JAIL_CGROUP_DIR.
 */
interface Hierarchy { mountPoint: string, controllers: Controller[], jailName: string }

interface Layout {
  instance: string
  all: Hierarchy[]
  memory: Hierarchy
  pids: Hierarchy
  cpu: Hierarchy
  cpuacct: Hierarchy | undefined
}

/**
 * Probes v1: memory, pids and cpu hierarchies mounted under `fsRoot` and writable. Sweeps stale
 * instances and creates `<mount>/<instance>` in each hierarchy (removed by `close()`).
 */
export async function openCgroupsV1 (mounts: Mount[], fsRoot: string, instance: string): Promise<Probe> {
  const all = findHierarchies(mounts, fsRoot)
  const find = (controller: Controller) => all.find((hierarchy) => hierarchy.controllers.includes(controller))
  const [memory, pids, cpu, cpuacct] = [find('memory'), find('pids'), find('cpu'), find('cpuacct')]
  if (!memory || !pids || !cpu) {
    const missing = (['memory', 'pids', 'cpu'] as const).filter((controller) => !find(controller))
    return { ok: false, absent: true, reason: `cgroup v1: no ${missing.join(', ')} hierarchy mounted under ${fsRoot}` }
  }
  const warnings = await removeStaleInstances(all.map((hierarchy) => hierarchy.mountPoint), instance)
  const created: string[] = []
  for (const hierarchy of all) {
    const dir = path.join(hierarchy.mountPoint, instance)
    try {
      await access(hierarchy.mountPoint, constants.W_OK)
      await makeCgroupDir(dir)
      created.push(dir)
    } catch (err) {
      for (const done of created) await rmdir(done).catch(() => {})
      return { ok: false, absent: false, reason: `cgroup v1: cannot create ${dir}: ${errorText(err)}` }
    }
  }
  return { ok: true, cgroups: createCgroupsV1({ instance, all, memory, pids, cpu, cpuacct }), warnings }
}

function findHierarchies (mounts: Mount[], fsRoot: string): Hierarchy[] {
  const byDevice = new Map<string, Hierarchy>() // bind mounts of one hierarchy share its device number
  for (const mount of mounts) {
    const controllers = USED_CONTROLLERS.filter((controller) => mount.superOptions.includes(controller))
    if (mount.fsType !== 'cgroup' || controllers.length === 0 || byDevice.has(mount.device)) continue
    if (!isAtOrUnder(mount.mountPoint, fsRoot)) continue
    byDevice.set(mount.device, { mountPoint: mount.mountPoint, controllers, jailName: controllers.join(',') })
  }
  const rank = (hierarchy: Hierarchy) => USED_CONTROLLERS.findIndex((controller) => hierarchy.controllers.includes(controller))
  return [...byDevice.values()].sort((a, b) => rank(a) - rank(b))
}

function createCgroupsV1 (layout: Layout): Cgroups {
  const { instance, all, memory, pids, cpu, cpuacct } = layout
  const dirOf = (hierarchy: Hierarchy, ...names: string[]) => path.join(hierarchy.mountPoint, instance, ...names)
  const processesOf = async (zygote: string, worker: string) => {
    assertWorkerNames(zygote, worker)
    const lists = await Promise.all(all.map((hierarchy) => readProcs(dirOf(hierarchy, zygote, worker))))
    return [...new Set(lists.flat())].sort((a, b) => a - b)
  }

  return {
    version: 1,
    description: `cgroup v1 (${all.map((hierarchy) => hierarchy.jailName).join(', ')})`,

    async createZygoteGroup (zygote: string, _ownerUid: number, limits: ZygoteLimits): Promise<ZygoteCgroup> {
      assertName(zygote, 'zygote')
      for (const hierarchy of all) {
        await makeCgroupDir(dirOf(hierarchy, zygote))
        await makeCgroupDir(dirOf(hierarchy, zygote, ZYGOTE_LEAF))
      }
      await writeMemoryLimit(dirOf(memory, zygote, ZYGOTE_LEAF), limits.memoryBytes)
      await writeControl(path.join(dirOf(pids, zygote, ZYGOTE_LEAF), 'pids.max'), limits.pidsMax)
      // cpu.shares: 1024 is a worker's share; the kernel's minimum is 2
      const shares = Math.max(2, Math.round((1024 * limits.cpuWeightPercent) / 100))
      await writeControl(path.join(dirOf(cpu, zygote, ZYGOTE_LEAF), 'cpu.shares'), shares)
      return {
        name: zygote,
        launcherProcsFiles: all.map((hierarchy) => path.join(dirOf(hierarchy, zygote, ZYGOTE_LEAF), 'cgroup.procs')),
        bindMounts: all.map((hierarchy) => ({
          hostPath: dirOf(hierarchy, zygote),
          jailPath: path.posix.join(JAIL_CGROUP_DIR, hierarchy.jailName),
        })),
      }
    },

    async createWorkerGroup (zygote, worker, ownerUid, limits: CgroupLimits) {
      assertWorkerNames(zygote, worker)
      for (const hierarchy of all) await makeCgroupDir(dirOf(hierarchy, zygote, worker))
      await writeMemoryLimit(dirOf(memory, zygote, worker), limits.memoryBytes)
      await writeControl(path.join(dirOf(pids, zygote, worker), 'pids.max'), limits.pidsMax)
      await writeControl(path.join(dirOf(cpu, zygote, worker), 'cpu.cfs_period_us'), CPU_PERIOD_US)
      await writeControl(path.join(dirOf(cpu, zygote, worker), 'cpu.cfs_quota_us'), cpuQuotaUs(limits.cpus))
      // v1 lets a non-root writer move a process only if it owns the destination file and the process
      // has its uid (cgroup1_procs_write); the zygote writes cgroup.procs, `tasks` is the per-thread twin
      const files = all.flatMap((hierarchy) => ['cgroup.procs', 'tasks'].map((file) => path.join(dirOf(hierarchy, zygote, worker), file)))
      await chownFiles(files, ownerUid)
      return {
        name: worker,
        jailProcsFiles: all.map((hierarchy) => path.posix.join(JAIL_CGROUP_DIR, hierarchy.jailName, worker, 'cgroup.procs')),
      }
    },

    async readCounters (zygote, worker): Promise<CgroupCounters> {
      assertWorkerNames(zygote, worker)
      const memoryDir = dirOf(memory, zygote, worker)
      // oom_kill in memory.oom_control is per group, not hierarchical (sandbox-research.md §8.1); since 4.13
      const oomControl = parseKeyed(readControlNow(path.join(memoryDir, 'memory.oom_control'), false) ?? '')
      const usageNs = cpuacct ? readControlNow(path.join(dirOf(cpuacct, zygote, worker), 'cpuacct.usage'), true) : null
      const pidsPeak = readControlNow(path.join(dirOf(pids, zygote, worker), 'pids.peak'), true)
      return {
        oomKills: oomControl.get('oom_kill') ?? 0,
        memoryPeakBytes: Number(readControlNow(path.join(memoryDir, 'memory.max_usage_in_bytes'), false)),
        cpuUsageUs: usageNs === null ? null : Math.round(Number(usageNs) / 1000),
        pidsPeak: pidsPeak === null ? null : Number(pidsPeak),
      }
    },

    async readOomKills (zygote, worker): Promise<number> {
      assertWorkerNames(zygote, worker)
      return parseKeyed(readControlNow(path.join(dirOf(memory, zygote, worker), 'memory.oom_control'), false) ?? '').get('oom_kill') ?? 0
    },

    listProcesses: processesOf,

    async killWorkerGroup (zygote, worker) {
      await killAll(() => processesOf(zygote, worker))
    },

    async resetWorkerGroup (zygote, worker) {
      // every process of a worker is in every hierarchy (it joined them all before it ran a line of user
      // code), so one empty list is enough on the common path; anything found is hunted in all of them
      assertWorkerNames(zygote, worker)
      if ((await readProcs(dirOf(memory, zygote, worker))).length > 0) await killUntilEmpty(() => processesOf(zygote, worker))
      // runs count differences (Run reads its OOM kills before and after), so no counter needs a reset
    },

    async removeWorkerGroup (zygote, worker) {
      await killAll(() => processesOf(zygote, worker))
      for (const hierarchy of all) await removeCgroupTree(dirOf(hierarchy, zygote, worker))
    },

    async removeZygoteGroup (zygote) {
      assertName(zygote, 'zygote')
      for (const hierarchy of all) await removeCgroupTree(dirOf(hierarchy, zygote))
    },

    async close () {
      for (const hierarchy of all) await removeCgroupTree(path.join(hierarchy.mountPoint, instance))
    },
  }
}

/**
 * memsw (memory + swap) equal to memory means no swap; memory first, as memsw may never be below it.
 * v1 charges TCP buffers to a group only once it has a TCP limit: without one, loopback connections held
 * three times the memory limit in the host's shared TCP memory (test/attacks). v1 counts them apart from
 * memory.limit, so they get a quarter of it on top (each socket may still keep its minimum buffer);
 * v2 charges them to the memory limit itself.
 */
async function writeMemoryLimit (dir: string, memoryBytes: number): Promise<void> {
  await writeControl(path.join(dir, 'memory.limit_in_bytes'), memoryBytes)
  await writeIfPresent(path.join(dir, 'memory.memsw.limit_in_bytes'), memoryBytes) // absent without swap accounting
  await writeIfPresent(path.join(dir, 'memory.kmem.tcp.limit_in_bytes'), Math.floor(memoryBytes / 4))
}
