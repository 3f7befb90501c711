import { readFileSync } from 'node:fs'
import { access, chown, mkdir, readdir, readFile, rmdir, writeFile } from 'node:fs/promises'
import os from 'node:os'
import path from 'node:path'
import { setTimeout as sleep } from 'node:timers/promises'
import { openCgroupsV1 } from './cgroup-v1.ts'
import { openCgroupsV2 } from './cgroup-v2.ts'
import { systemDelegationProbe, type DelegationProbe } from './cgroup-delegation.ts'
import { JAIL_PATHS, type BindMount } from './jail-spec.ts'

export type { BindMount }

/** Limits of one worker's cgroup. `cpus` is a rate in cores (1, 0.5, 2). */
export interface CgroupLimits { memoryBytes: number, pidsMax: number, cpus: number }
/** Limits of a zygote's own leaf. The weight is relative to a worker's (25 = a quarter): refills yield to executions. */
export interface ZygoteLimits { memoryBytes: number, pidsMax: number, cpuWeightPercent: number }
/** Read after a run; `null` where this kernel has no such file (e.g. memory.peak before Linux 5.19). */
export interface CgroupCounters { oomKills: number, memoryPeakBytes: number | null, cpuUsageUs: number | null, pidsPeak: number | null }
/** `launcherProcsFiles`: host paths the `sh` wrapper writes `$$` into before it execs the jail. */
export interface ZygoteCgroup { name: string, launcherProcsFiles: string[], bindMounts: BindMount[] }
/** `jailProcsFiles`: paths as seen inside the jail, where the zygote writes the worker's pid. */
export interface WorkerCgroup { name: string, jailProcsFiles: string[] }

/**
 * The cgroups of one server instance, v1 or v2 behind one shape. Names (`zygote`, `worker`) are
 * path components chosen by the caller: letters, digits, `_` and `-` only. The caller removes what it
 * creates: each worker group after its run, each zygote group after its jail exits, then `close()`.
 */
export interface Cgroups {
  readonly version: 1 | 2
  /** for /health and logs, e.g. "cgroup v1 (memory, pids, cpu, cpuacct)" */
  readonly description: string
  /** Creates `<instance>/<zygote>/` and its `zygote` leaf with `limits`; workers get chown'd procs files for `ownerUid`. */
  createZygoteGroup (zygote: string, ownerUid: number, limits: ZygoteLimits): Promise<ZygoteCgroup>
  /** Creates `<instance>/<zygote>/<worker>` with `limits`; its procs files are chown'd to `ownerUid`, the zygote's outside uid. */
  createWorkerGroup (zygote: string, worker: string, ownerUid: number, limits: CgroupLimits): Promise<WorkerCgroup>
  /** Every counter the kernel keeps for the group (doctor, tests). */
  readCounters (zygote: string, worker: string): Promise<CgroupCounters>
  /** Only its OOM kills, in one read: what a run needs, on every execution's path. */
  readOomKills (zygote: string, worker: string): Promise<number>
  listProcesses (zygote: string, worker: string): Promise<number[]>
  /** SIGKILLs every process in the worker's group; does not wait. */
  killWorkerGroup (zygote: string, worker: string): Promise<void>
  /**
   * Kills, waits until empty and resets the counters that can be reset, so the next worker of the same
   * slot can reuse the group: creating and removing a memory cgroup per execution costs ~5 ms of CPU.
   * Throws if still busy after ~2 s.
   */
  resetWorkerGroup (zygote: string, worker: string): Promise<void>
  /** Kills, waits until empty, removes in every hierarchy. Idempotent; throws if still busy after ~2 s. */
  removeWorkerGroup (zygote: string, worker: string): Promise<void>
  /** Kills everything below the zygote's group and removes it bottom-up. Idempotent. */
  removeZygoteGroup (zygote: string): Promise<void>
  /** Removes the instance directory (and anything left in it). */
  close (): Promise<void>
}

/** `warnings`: non-fatal findings for the startup log, e.g. a stale instance that could not be removed. */
export type CgroupDetection = { ok: true, cgroups: Cgroups, warnings: string[] } | { ok: false, reason: string }

export interface DetectOptions {
  /** unique per server process and ending in `-<pid>` (e.g. `warden-1234`) so a later server can sweep it up */
  instance: string
  mode: 'auto' | 'off'
  fsRoot?: string
  mountInfoPath?: string
  selfCgroupPath?: string
  /** how a v2 cgroup's delegation is found out; the running system's by default (xattrs read with `pythonPath`) */
  delegation?: DelegationProbe
  pythonPath?: string
}

/** One line of /proc/self/mountinfo (proc(5)); `device` identifies a hierarchy across bind mounts. */
export interface Mount { device: string, root: string, mountPoint: string, fsType: string, superOptions: string[] }

export const CPU_PERIOD_US = 100_000
/** Where the zygote's delegated cgroup directories appear inside the jail. */
export const JAIL_CGROUP_DIR = JAIL_PATHS.cgroup
const REMOVE_TIMEOUT_MS = 2_000
const FIX = 'Fix: run Warden as root with a writable /sys/fs/cgroup (Docker: --privileged, or --cgroupns=host ' +
  '-v /sys/fs/cgroup:/sys/fs/cgroup:rw), or set CGROUPS=off to run without memory, pids and CPU limits.'

/**
 * Finds usable cgroups (v2 with memory, pids and cpu delegated, else v1 with writable memory, pids and
 * cpu hierarchies), sweeps stale instances of crashed servers, and creates this instance's directory
 * (removed by `close()`). Environment problems come back as `{ ok: false, reason }`, never as a throw.
 */
export async function detectCgroups (options: DetectOptions): Promise<CgroupDetection> {
  assertName(options.instance, 'instance')
  if (options.mode === 'off') return { ok: false, reason: 'disabled by CGROUPS=off' }
  const fsRoot = options.fsRoot ?? '/sys/fs/cgroup'
  let mounts: Mount[]
  try {
    mounts = parseMountInfo(await readFile(options.mountInfoPath ?? '/proc/self/mountinfo', 'utf8'))
  } catch (err) {
    return { ok: false, reason: `cannot read the mount table: ${errorText(err)}. ${FIX}` }
  }
  const selfCgroupPath = options.selfCgroupPath ?? '/proc/self/cgroup'
  const delegation = options.delegation ?? systemDelegationProbe(options.pythonPath ?? '/usr/bin/python3')
  const v2 = await openCgroupsV2(mounts, fsRoot, selfCgroupPath, options.instance, delegation).catch(probeFailed)
  if (v2.ok) return v2
  if (!v2.absent) return { ok: false, reason: v2.isAdvice === true ? v2.reason : `${v2.reason}. ${FIX}` }
  const v1 = await openCgroupsV1(mounts, fsRoot, options.instance).catch(probeFailed)
  if (v1.ok) return v1
  return { ok: false, reason: `no usable cgroups: ${v2.reason}; ${v1.reason}. ${FIX}` }
}

/**
 * One version's probe: usable, present but broken, or `absent` (then the other version is tried).
 * `isAdvice`: the reason already says what to change, so no generic fix is added to it.
 */
export type Probe = { ok: true, cgroups: Cgroups, warnings: string[] } | { ok: false, reason: string, absent: boolean, isAdvice?: boolean }

const probeFailed = (err: unknown): Probe => ({ ok: false, absent: false, reason: `cgroup setup failed: ${errorText(err)}` })

export function parseMountInfo (text: string): Mount[] {
  const unescape = (field: string) => field.replace(/\\([0-7]{3})/g, (_, octal: string) => String.fromCharCode(parseInt(octal, 8)))
  return text.split('\n').filter(Boolean).flatMap((line) => {
    const fields = line.split(' ')
    const dash = fields.indexOf('-')
    const [device, root, mountPoint] = [fields[2], fields[3], fields[4]]
    const [fsType, , superOptions] = fields.slice(dash + 1)
    if (dash < 6 || !device || !root || !mountPoint || !fsType || superOptions === undefined) return []
    return [{ device, root: unescape(root), mountPoint: unescape(mountPoint), fsType, superOptions: superOptions.split(',') }]
  })
}

/**
 * Sweeps `<parent>/warden-…-<pid>` directories whose pid is dead (a crashed server): kills their
 * processes and removes them bottom-up. A reused pid keeps its directory until that process exits.
 * Returns one warning per directory that could not be removed.
 */
export async function removeStaleInstances (parents: string[], currentInstance: string): Promise<string[]> {
  const warnings: string[] = []
  const ownHost = hostPart(os.hostname())
  for (const parent of parents) {
    for (const name of await listSubdirectories(parent)) {
      const match = /^warden-(?:([\w-]+)-)?(\d+)$/.exec(name)
      const [middle, pid] = [match?.[1] ?? '', match?.[2]]
      // another container (another host name) sharing this cgroup tree has pids we cannot see: not ours
      const ours = middle === '' || middle === ownHost || middle === 'test'
      if (pid === undefined || !ours || name === currentInstance || isPidAlive(Number(pid))) continue
      await removeCgroupTree(path.join(parent, name))
        .catch((err) => warnings.push(`cannot remove stale cgroup ${path.join(parent, name)}: ${errorText(err)}`))
    }
  }
  return warnings
}

/**
 * This server's instance name, `warden-<host>-<pid>`: unique among servers sharing one cgroup tree,
 * containers included (their pids repeat; their host names, the container ids, do not).
 */
export function instanceName (pid: number = process.pid): string {
  return `warden-${hostPart(os.hostname())}-${pid}`
}

function hostPart (host: string): string {
  return host.replace(/[^\w-]/g, '-').replace(/^[^A-Za-z0-9]+/, '').slice(0, 40) || 'host'
}

/** SIGKILLs every process in `dir` and its descendants, retrying EBUSY with backoff, then rmdirs bottom-up. */
export async function removeCgroupTree (dir: string): Promise<void> {
  const deadline = Date.now() + REMOVE_TIMEOUT_MS
  for (let delayMs = 5; ; delayMs = Math.min(delayMs * 2, 200)) {
    await killCgroupTree(dir)
    try {
      return await rmdirBottomUp(dir)
    } catch (err) {
      // EBUSY: a killed process has not left the group yet (it exits asynchronously)
      if (errorCode(err) !== 'EBUSY' || Date.now() > deadline) throw err
    }
    await sleep(delayMs)
  }
}

async function killCgroupTree (dir: string): Promise<void> {
  await killAll(() => readProcs(dir))
  for (const child of await listSubdirectories(dir)) await killCgroupTree(path.join(dir, child))
}

async function rmdirBottomUp (dir: string): Promise<void> {
  for (const child of await listSubdirectories(dir)) await rmdirBottomUp(path.join(dir, child))
  await rmdir(dir).catch(ignoreCode('ENOENT'))
}

async function listSubdirectories (dir: string): Promise<string[]> {
  const entries = await readdir(dir, { withFileTypes: true }).catch(ignoreCode('ENOENT', []))
  return entries.filter((entry) => entry.isDirectory()).map((entry) => entry.name)
}

/** Pids listed in `<dir>/cgroup.procs`; none when the group is gone. Read synchronously, as readControlNow. */
export async function readProcs (dir: string): Promise<number[]> {
  const text = readControlNow(path.join(dir, 'cgroup.procs'), true) ?? ''
  return text.split('\n').filter(Boolean).map(Number)
}

function killPids (pids: Iterable<number>): void {
  for (const pid of pids) {
    try { process.kill(pid, 'SIGKILL') } catch (err) { if (errorCode(err) !== 'ESRCH') throw err }
  }
}

/**
 * SIGKILLs what `listPids` returns until it shows no pid not already killed: a process forked between
 * a read and the kill shows up in the next read. A killed process cannot fork any more, so this ends;
 * the dead may stay listed until reaped, which is why it does not wait for an empty list.
 */
export async function killAll (listPids: () => Promise<number[]>): Promise<void> {
  const killed = new Set<number>()
  for (let fresh = await listPids(); fresh.length > 0; fresh = (await listPids()).filter((pid) => !killed.has(pid))) {
    killPids(fresh)
    for (const pid of fresh) killed.add(pid)
  }
}

/** Kills what `listPids` returns until the group is empty (the killed leave it when they are reaped). */
export async function killUntilEmpty (listPids: () => Promise<number[]>): Promise<void> {
  const deadline = Date.now() + REMOVE_TIMEOUT_MS
  for (let delayMs = 2; ; delayMs = Math.min(delayMs * 2, 100)) {
    await killAll(listPids)
    if ((await listPids()).length === 0) return
    if (Date.now() > deadline) throw new Error('the cgroup still has processes after being killed')
    await sleep(delayMs)
  }
}

/** Writes a control file. Numbers must be safe non-negative integers, written in decimal. */
export async function writeControl (file: string, value: number | string): Promise<void> {
  await writeFile(file, typeof value === 'number' ? decimal(value) : value)
}

/** Writes a control file only when this kernel has it (memory.swap.max, cgroup.kill); true if written. */
export async function writeIfPresent (file: string, value: number | string): Promise<boolean> {
  if (!await access(file).then(() => true, ignoreCode('ENOENT', false))) return false
  await writeControl(file, value)
  return true
}

/** mkdir of one cgroup; an existing one is reused (names are the server's own, under root-owned parents). */
export async function makeCgroupDir (dir: string): Promise<void> {
  await mkdir(dir).catch(ignoreCode('EEXIST'))
}

/** Hands control files to the zygote's outside uid; the group stays root's. */
export async function chownFiles (files: string[], ownerUid: number): Promise<void> {
  for (const file of files) await chown(file, ownerUid, -1)
}

export function isAtOrUnder (dir: string, root: string): boolean {
  return dir === root || dir.startsWith(root.endsWith('/') ? root : `${root}/`)
}

/** A control file's text, or `null` when this kernel does not have it. */
export async function readOptional (file: string): Promise<string | null> {
  return await readFile(file, 'utf8').catch(ignoreCode('ENOENT', null))
}

/**
 * Synchronous read of a small control file, for counters read on a request's path: cgroupfs answers
 * in microseconds, while an async read waits in libuv's thread pool behind slow rmdirs of other
 * groups (measured: 1–10 ms per read under refill load).
 */
export function readControlNow (file: string, optional: boolean): string | null {
  try {
    return readFileSync(file, 'utf8')
  } catch (err) {
    if (optional && errorCode(err) === 'ENOENT') return null
    throw err
  }
}

/** Parses "key value" lines (memory.events, cpu.stat, memory.oom_control). */
export function parseKeyed (text: string): Map<string, number> {
  return new Map(text.split('\n').filter(Boolean).map((line) => {
    const [key = '', value = ''] = line.split(' ')
    return [key, Number(value)]
  }))
}

export function cpuQuotaUs (cpus: number): number {
  if (!(cpus > 0)) throw new RangeError(`cpus must be positive, got ${cpus}`)
  return Math.max(1000, Math.round(cpus * CPU_PERIOD_US)) // the kernel refuses quotas under 1 ms
}

export function decimal (value: number): string {
  if (!Number.isSafeInteger(value) || value < 0) throw new RangeError(`expected a non-negative integer, got ${value}`)
  return String(value)
}

/** Names become path components next to control files (which all contain a dot), so no dots or slashes. */
export function assertName (name: string, what: string): void {
  if (!/^[A-Za-z0-9][\w-]{0,99}$/.test(name)) throw new TypeError(`invalid cgroup ${what} name: ${JSON.stringify(name)}`)
}

/** The leaf that holds a zygote's own process, next to its workers' groups. */
export const ZYGOTE_LEAF = 'zygote'

export function assertWorkerNames (zygote: string, worker: string): void {
  assertName(zygote, 'zygote')
  assertName(worker, 'worker')
  if (worker === ZYGOTE_LEAF) throw new TypeError(`a worker cannot be named "${ZYGOTE_LEAF}": that is the zygote's own leaf`)
}

export function isPidAlive (pid: number): boolean {
  try {
    process.kill(pid, 0)
    return true
  } catch (err) {
    return errorCode(err) !== 'ESRCH'
  }
}

export function ignoreCode<T = void> (code: string, value?: T): (err: unknown) => T {
  return (err) => { if (errorCode(err) === code) return value as T; throw err }
}

export function errorCode (err: unknown): string | undefined {
  return (err as NodeJS.ErrnoException | null)?.code
}

export function errorText (err: unknown): string {
  return err instanceof Error ? err.message : String(err)
}
