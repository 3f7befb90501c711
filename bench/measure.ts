import { existsSync, readdirSync, readFileSync } from 'node:fs'
import path from 'node:path'
import { instanceName, readControlNow } from '../src/jail/cgroup.ts'

const TICK_MS = 10 // USER_HZ is 100 on Linux

/** CPU of the server process (all threads) plus its jails (the server's cgroup instance), in ms. */
export interface CpuReading { serverMs: number, jailsMs: number | null }

export interface InstanceDirs { memory: string | null, cpuUsageFile: string | null, cpuUsageUnit: 'ns' | 'usec' }

/** Where a local server keeps its cgroups (`warden-<pid>`, see src/jail/cgroup.ts). */
export function findInstanceDirs (pid: number): InstanceDirs {
  const instance = instanceName(pid)
  const v1Memory = `/sys/fs/cgroup/memory/${instance}`
  const v1Cpu = ['/sys/fs/cgroup/cpuacct', '/sys/fs/cgroup/cpu,cpuacct'].map((root) => `${root}/${instance}/cpuacct.usage`).find(existsSync)
  if (existsSync(v1Memory)) return { memory: v1Memory, cpuUsageFile: v1Cpu ?? null, cpuUsageUnit: 'ns' }
  const own = /^0::(.*)$/m.exec(readFileSync(`/proc/${pid}/cgroup`, 'utf8'))?.[1] ?? '/'
  for (const base of [own, path.dirname(own)]) {
    const dir = path.join('/sys/fs/cgroup', base, instance)
    if (existsSync(dir)) return { memory: dir, cpuUsageFile: path.join(dir, 'cpu.stat'), cpuUsageUnit: 'usec' }
  }
  return { memory: null, cpuUsageFile: null, cpuUsageUnit: 'ns' }
}

export function readCpu (pid: number, dirs: InstanceDirs): CpuReading {
  const fields = readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1]?.split(' ') ?? []
  const serverMs = (Number(fields[11]) + Number(fields[12])) * TICK_MS
  let jailsMs: number | null = null
  if (dirs.cpuUsageFile !== null && existsSync(dirs.cpuUsageFile)) {
    const text = readFileSync(dirs.cpuUsageFile, 'utf8')
    jailsMs = dirs.cpuUsageUnit === 'ns'
      ? Number(text) / 1e6
      : Number(/usage_usec (\d+)/.exec(text)?.[1] ?? 0) / 1000
  }
  return { serverMs, jailsMs }
}

export interface WorkerMemory { idleBytes: number[], busyBytes: number[], zygoteBytes: number[] }

/** Memory charged to each worker slot and zygote of the instance right now. */
export function sampleWorkerMemory (dirs: InstanceDirs): WorkerMemory {
  const sample: WorkerMemory = { idleBytes: [], busyBytes: [], zygoteBytes: [] }
  if (dirs.memory === null) return sample
  const usageFile = existsSync(path.join(dirs.memory, 'memory.usage_in_bytes')) ? 'memory.usage_in_bytes' : 'memory.current'
  for (const zygote of subdirectories(dirs.memory)) {
    for (const group of subdirectories(path.join(dirs.memory, zygote))) {
      const dir = path.join(dirs.memory, zygote, group)
      // optional: the baseline removes a jail's cgroups as soon as its execution ends, maybe since the listing
      const bytes = Number(readControlNow(path.join(dir, usageFile), true) ?? 0)
      const processes = (readControlNow(path.join(dir, 'cgroup.procs'), true) ?? '').split('\n').filter(Boolean).length
      if (group === 'zygote') sample.zygoteBytes.push(bytes)
      else if (processes === 0) continue
      // a warm worker is one process; a busy one has run user code (its usage is well past the idle ~2 MiB)
      else if (bytes < 8 * 1024 * 1024 && processes === 1) sample.idleBytes.push(bytes)
      else sample.busyBytes.push(bytes)
    }
  }
  return sample
}

function subdirectories (dir: string): string[] {
  try {
    return readdirSync(dir, { withFileTypes: true }).filter((entry) => entry.isDirectory()).map((entry) => entry.name)
  } catch {
    return []
  }
}

export function percentile (sorted: number[], p: number): number {
  if (sorted.length === 0) return Number.NaN
  return sorted[Math.min(sorted.length - 1, Math.max(0, Math.ceil(p * sorted.length) - 1))] as number
}

/** The memory the jails of a local server hold now, in bytes, from its cgroup instance (v1 or v2). */
export function jailMemoryUsage (pid: number): () => number {
  const dirs = findInstanceDirs(pid)
  if (dirs.memory === null) throw new Error('no memory cgroup of the bench server found')
  const v1 = path.join(dirs.memory, 'memory.usage_in_bytes')
  const usageFile = existsSync(v1) ? v1 : path.join(dirs.memory, 'memory.current')
  return () => Number(readFileSync(usageFile, 'utf8'))
}
