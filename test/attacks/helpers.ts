import assert from 'node:assert/strict'
import { existsSync, readdirSync, readFileSync } from 'node:fs'
import { readdir } from 'node:fs/promises'
import os from 'node:os'
import path from 'node:path'
import type { TestContext } from 'node:test'
import { setTimeout as sleep } from 'node:timers/promises'
import { api, exec, startServer, uploadFile, type Driver, type RunningServer } from '../helpers/server.ts'

/**
 * Shared pieces of the attack suites (test/attacks/*.test.ts): small limits so that every attack hits
 * a limit in well under a second or two, the assertions each attack makes (contained, explained, and
 * the server still serving), and host-side views of the server's cgroups and memory.
 */

export type Json = Record<string, any>

/**
 * The limits every attack server runs with: small, so each limit is reached fast. The time limit can be
 * raised (whole seconds) for a machine several times slower than any real one: test:host's guest under
 * software emulation, where a fork bomb alone takes longer than 4 s to reach pids.max.
 */
export const LIMITS = {
  timeoutMs: Number(process.env.ATTACK_TIMEOUT_MS ?? 4000),
  memoryMb: 256,
  pidsMax: 64,
  workdirMb: 64,
  tmpMb: 32,
  maxFileMb: 32,
  maxStdoutBytes: 65_536,
  maxStderrBytes: 65_536,
  maxOutputFiles: 10,
} as const

export const ATTACK_ENV: Record<string, string> = {
  EXEC_TIMEOUT_MS: String(LIMITS.timeoutMs),
  MEMORY_LIMIT_MB: String(LIMITS.memoryMb),
  PIDS_LIMIT: String(LIMITS.pidsMax),
  WORKDIR_LIMIT_MB: String(LIMITS.workdirMb),
  TMP_LIMIT_MB: String(LIMITS.tmpMb),
  MAX_FILE_SIZE_MB: String(LIMITS.maxFileMb),
  MAX_STDOUT_BYTES: String(LIMITS.maxStdoutBytes),
  MAX_STDERR_BYTES: String(LIMITS.maxStderrBytes),
  MAX_OUTPUT_FILES: String(LIMITS.maxOutputFiles),
}

/** The one-line explanations the server appends to stderr when a limit ends a run (src/exec/outcome.ts). */
export const EXPLANATION = {
  timeout: new RegExp(`Execution exceeded the time limit of ${LIMITS.timeoutMs / 1000} s and was stopped\\.`),
  oom: /Execution exceeded the memory limit of 256 MiB and was stopped\./,
  OL: /Output exceeded the limit of 64 KiB on stdout; it was truncated and the execution was stopped\./,
  EL: /Output exceeded the limit of 64 KiB on stderr; it was truncated and the execution was stopped\./,
} as const

/** The real server with the attack limits (plus `env`), stopped when the suite ends. */
export async function startAttackServer (suite: TestContext, driver: Driver, env: Record<string, string> = {}): Promise<RunningServer> {
  return await startServer(suite, { driver, env: { ...ATTACK_ENV, ...env } })
}

/** Strip the common indentation of a code block written inside a template literal. */
export function code (text: string): string {
  const lines = text.replace(/^\n/, '').replace(/\n\s*$/, '').split('\n')
  const indent = Math.min(...lines.filter((line) => line.trim() !== '').map((line) => /^ */.exec(line)?.[0].length ?? 0))
  return lines.map((line) => line.slice(indent)).join('\n') + '\n'
}

export interface Run { status: number, body: Json, elapsedMs: number }

/** POST /exec and insist on a 200 with a well-formed answer: an attack must never turn into a 4xx/5xx. */
export async function run (server: RunningServer, lang: 'py' | 'bash', source: string, extra: Json = {}): Promise<Run> {
  const started = performance.now()
  const { status, body } = await exec(server, { lang, code: source, ...extra })
  const elapsedMs = performance.now() - started
  assert.equal(status, 200, `POST /exec answered ${status}: ${JSON.stringify(body).slice(0, 2000)}`)
  assert.equal(typeof body.stdout, 'string')
  assert.equal(typeof body.stderr, 'string')
  assert.ok(Array.isArray(body.files))
  return { status, body, elapsedMs }
}

/** Short description of an answer for assertion messages. */
export function describeRun (body: Json): string {
  return JSON.stringify({
    status: body.status,
    exit_code: body.exit_code,
    signal: body.signal,
    stdout: String(body.stdout).slice(-1500),
    stderr: String(body.stderr).slice(-1500),
    files: body.files?.length,
    wall_time_ms: body.wall_time_ms,
  })
}

/** The run was ended by a limit: `status` is as expected and stderr carries the limit's sentence. */
export function assertStoppedBy (body: Json, status: keyof typeof EXPLANATION): void {
  assert.equal(body.status, status, describeRun(body))
  assert.match(body.stderr, EXPLANATION[status], `stderr lacks the ${status} explanation: ${describeRun(body)}`)
  if (status === 'timeout') assert.equal(body.timed_out, true)
  if (status === 'oom') assert.equal(body.oom_killed, true)
  if (status === 'OL' || status === 'EL') assert.equal(body.truncated, true)
}

/** A failed execution registers no files (spec §3.1.3). */
export function assertNoFiles (body: Json): void {
  assert.deepEqual(body.files, [], `files came back: ${JSON.stringify(body.files)}`)
}

/**
 * Right after an attack: /health answers 200 "ok" and a plain execution is correct. Every attack test
 * ends with this.
 */
export async function assertStillServing (server: RunningServer): Promise<void> {
  const started = performance.now()
  const health = await api(server, '/health')
  const report = await health.json() as Json
  assert.equal(health.status, 200, `/health answered ${health.status}: ${JSON.stringify(report).slice(0, 500)}`)
  assert.equal(report.status, 'ok', `/health says ${report.status}: ${JSON.stringify(report.warnings)}`)
  const { status, body } = await exec(server, { lang: 'py', code: 'print(6*7)' })
  assert.equal(status, 200, `print(6*7) answered ${status}: ${JSON.stringify(body).slice(0, 500)}`)
  assert.equal(body.stdout, '42\n', `print(6*7) answered ${describeRun(body)}`)
  assert.equal(body.status, 'ok')
  assert.equal(body.stderr, '')
  const elapsedMs = performance.now() - started
  assert.ok(elapsedMs < 10_000, `the server took ${Math.round(elapsedMs)} ms to answer /health and print(6*7)`)
}

/** VmRSS of a process, in bytes, read from /proc on the host. */
export function rssBytes (pid: number): number {
  const status = readFileSync(`/proc/${pid}/status`, 'utf8')
  const kb = /^VmRSS:\s+(\d+) kB/m.exec(status)?.[1]
  assert.ok(kb !== undefined, `no VmRSS for pid ${pid}`)
  return Number(kb) * 1024
}

export function serverPid (server: RunningServer): number {
  const pid = server.process.pid
  assert.ok(pid !== undefined, 'the server has no pid')
  return pid
}

/**
 * The server's instance directories in the pids hierarchy (`/sys/fs/cgroup/pids/warden-<host>-<pid>`
 * on cgroup v1), or in the unified hierarchy on v2, where the instance sits in the server's own cgroup
 * (`system.slice/warden.service/` under systemd; the server itself moved into its `warden-server` leaf).
 * Instance names end in `-<pid>` (src/jail/cgroup.ts). Finding none fails: every caller runs while the
 * server runs, and a check over nothing would pass without checking anything.
 */
export function serverPidsCgroups (server: RunningServer): string[] {
  const pid = serverPid(server)
  const isInstance = new RegExp(`^warden-(?:[\\w.-]+-)?${pid}$`)
  const v1 = '/sys/fs/cgroup/pids'
  const parent = existsSync(v1) ? v1 : serverV2Base(pid)
  const found = safeReaddir(parent).filter((entry) => isInstance.test(entry)).map((entry) => path.join(parent, entry))
  assert.ok(found.length > 0, `no pids cgroup of the server (pid ${pid}) found in ${parent}`)
  return found
}

/** The v2 cgroup the server divides: its own, as /proc/<pid>/cgroup names it, above its warden-server leaf. */
function serverV2Base (pid: number): string {
  const own = /^0::(\/.*)$/m.exec(readFileSync(`/proc/${pid}/cgroup`, 'utf8'))?.[1]
  assert.ok(own !== undefined, `no cgroup v2 line in /proc/${pid}/cgroup`)
  const dir = path.join('/sys/fs/cgroup', own)
  return path.basename(dir) === 'warden-server' ? path.dirname(dir) : dir
}

function safeReaddir (dir: string): string[] {
  try {
    return readdirSync(dir, { withFileTypes: true }).filter((entry) => entry.isDirectory()).map((entry) => entry.name)
  } catch {
    return []
  }
}

/** Every cgroup directory below `root` (itself included). */
export function cgroupDirs (root: string): string[] {
  const dirs = [root]
  for (let i = 0; i < dirs.length; i++) {
    for (const entry of safeReaddir(dirs[i] as string)) dirs.push(path.join(dirs[i] as string, entry))
  }
  return dirs
}

export interface JailProcess {
  pid: number
  cgroup: string
  comm: string
  cmdline: string
  /** the process's pid in each nested pid namespace, outermost first (NSpid in /proc/<pid>/status) */
  nsPids: number[]
}

/** Every process in the server's cgroup tree, as the host sees them; at least its zygote, or this fails. */
export function jailProcesses (server: RunningServer): JailProcess[] {
  const processes: JailProcess[] = []
  for (const root of serverPidsCgroups(server)) {
    for (const dir of cgroupDirs(root)) {
      let procs = ''
      try {
        procs = readFileSync(path.join(dir, 'cgroup.procs'), 'utf8')
      } catch {
        continue
      }
      for (const pid of procs.split('\n').filter(Boolean).map(Number)) {
        try {
          const status = readFileSync(`/proc/${pid}/status`, 'utf8')
          processes.push({
            pid,
            cgroup: path.relative(root, dir),
            comm: readFileSync(`/proc/${pid}/comm`, 'utf8').trim(),
            cmdline: readFileSync(`/proc/${pid}/cmdline`, 'utf8').replaceAll('\0', ' ').trim(),
            nsPids: (/^NSpid:\s+(.*)$/m.exec(status)?.[1] ?? '').split(/\s+/).map(Number),
          })
        } catch {
          // exited between the listing and the read
        }
      }
    }
  }
  assert.ok(processes.some((process) => path.basename(process.cgroup) === 'zygote'), 'no zygote found in the server\'s cgroup tree')
  return processes
}

/**
 * Processes in the server's cgroup tree that are neither the jail launchers and zygote (in a
 * `zygote` leaf) nor an idle warm worker: a warm worker is the init (pid 1) of its own pid namespace,
 * alone in its slot's group. Anything else is a leftover of an execution.
 */
export function leftoverProcesses (server: RunningServer): JailProcess[] {
  const processes = jailProcesses(server)
  const perGroup = new Map<string, number>()
  for (const process of processes) perGroup.set(process.cgroup, (perGroup.get(process.cgroup) ?? 0) + 1)
  return processes.filter((process) => {
    if (path.basename(process.cgroup) === 'zygote') return false
    const isNamespaceInit = process.nsPids.at(-1) === 1 && process.nsPids.length > 1
    return !(isNamespaceInit && perGroup.get(process.cgroup) === 1 && process.cmdline.includes('zygote.py'))
  })
}

/** Wait until the server's cgroup tree holds no leftover process (at most `timeoutMs`), and return what remains. */
export async function settleLeftovers (server: RunningServer, timeoutMs = 5000): Promise<JailProcess[]> {
  const deadline = Date.now() + timeoutMs
  for (;;) {
    const leftovers = leftoverProcesses(server)
    if (leftovers.length === 0 || Date.now() > deadline) return leftovers
    await sleep(50)
  }
}

/** Sample the highest pids.current of any worker group while `during` runs. */
export async function peakWorkerPids<T> (server: RunningServer, during: () => Promise<T>): Promise<{ result: T, peak: number, limits: number[] }> {
  const roots = serverPidsCgroups(server)
  assert.ok(roots.length > 0, 'no pids cgroup of the server found')
  // the worker groups: leaves other than the zygote's (a parent's pids.current sums its children)
  const groups = roots.flatMap(cgroupDirs)
    .filter((dir) => path.basename(dir) !== 'zygote' && cgroupDirs(dir).length === 1 && existsSync(path.join(dir, 'pids.max')))
  let peak = 0
  const state = { sampling: true }
  const sampler = (async () => {
    while (state.sampling) {
      for (const dir of groups) {
        try {
          peak = Math.max(peak, Number(readFileSync(path.join(dir, 'pids.current'), 'utf8')))
        } catch {
          // a group removed under us
        }
      }
      await sleep(5)
    }
  })()
  try {
    const result = await during()
    return { result, peak, limits: pidsLimits(groups) }
  } finally {
    state.sampling = false
    await sampler
  }
}

function pidsLimits (groups: string[]): number[] {
  return groups.flatMap((dir) => {
    try {
      const text = readFileSync(path.join(dir, 'pids.max'), 'utf8').trim()
      return text === 'max' ? [Number.POSITIVE_INFINITY] : [Number(text)]
    } catch {
      return []
    }
  })
}

/** Upload one file (LibreChat style) and return its ids. */
export async function upload (server: RunningServer, name: string, data: string | Uint8Array): Promise<{ sessionId: string, fileId: string }> {
  return await uploadFile(server, name, data, 'attack-user')
}

/** GET /download/:sid/:fid; the body as bytes. */
export async function download (server: RunningServer, sessionId: string, fileId: string): Promise<{ status: number, headers: Headers, bytes: Buffer }> {
  const response = await api(server, `/download/${sessionId}/${fileId}`)
  return { status: response.status, headers: response.headers, bytes: Buffer.from(await response.arrayBuffer()) }
}

/** A 21-character id in the alphabet the server uses (nanoid's url-safe set). */
export function randomId (): string {
  const alphabet = 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-'
  return Array.from({ length: 21 }, () => alphabet[Math.floor(Math.random() * alphabet.length)]).join('')
}

/** Every file below `dir` on the host (the server's DATA_DIR), relative paths. */
export async function listFiles (dir: string): Promise<string[]> {
  const found: string[] = []
  const walk = async (relative: string) => {
    for (const entry of await readdir(path.join(dir, relative), { withFileTypes: true }).catch(() => [])) {
      const name = path.join(relative, entry.name)
      if (entry.isDirectory()) await walk(name)
      else found.push(name)
    }
  }
  await walk('')
  return found
}

/** The default RUN_DIR of a server (src/config.ts): `<tmpdir>/warden-<pid>`. */
export function defaultRunDir (server: RunningServer): string {
  return path.join(os.tmpdir(), `warden-${serverPid(server)}`)
}

export function median (values: number[]): number {
  const sorted = [...values].sort((a, b) => a - b)
  const middle = Math.floor(sorted.length / 2)
  return sorted.length % 2 === 1 ? sorted[middle] as number : ((sorted[middle - 1] as number) + (sorted[middle] as number)) / 2
}

/** The server's JAIL_UID_BASE, read from its environment on the host. */
export function jailUidBase (server: RunningServer): number {
  const environ = readFileSync(`/proc/${serverPid(server)}/environ`, 'utf8').split('\0')
  const value = environ.find((entry) => entry.startsWith('JAIL_UID_BASE='))?.split('=')[1]
  assert.ok(value !== undefined, 'the server has no JAIL_UID_BASE in its environment')
  return Number(value)
}

/**
 * Every process on the host running as one of this server's jail uids (the test helper gives each
 * server 1000 of them), wherever it is: a process that slipped out of the cgroup tree shows here.
 */
export function hostProcessesOfJail (server: RunningServer): Array<{ pid: number, uid: number, comm: string, cmdline: string }> {
  const base = jailUidBase(server)
  const found: Array<{ pid: number, uid: number, comm: string, cmdline: string }> = []
  for (const entry of readdirSync('/proc')) {
    if (!/^\d+$/.test(entry)) continue
    try {
      const status = readFileSync(`/proc/${entry}/status`, 'utf8')
      const uid = Number(/^Uid:\s+(\d+)/m.exec(status)?.[1])
      if (uid < base || uid >= base + 1000) continue
      found.push({
        pid: Number(entry),
        uid,
        comm: readFileSync(`/proc/${entry}/comm`, 'utf8').trim(),
        cmdline: readFileSync(`/proc/${entry}/cmdline`, 'utf8').replaceAll('\0', ' ').trim(),
      })
    } catch {
      // gone
    }
  }
  // the zygote runs as the first of these uids: finding nothing means this looked in the wrong place
  assert.ok(found.some((process) => process.uid === base), `no process of the jail uids ${base}.. found, not even the zygote`)
  return found
}
