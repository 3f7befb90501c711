/**
 * `warden doctor` (`npm run doctor`): checks what Warden needs from this machine and says, one line per
 * check, what it found and how to fix what is missing. Exits 1 when something blocks running code.
 */
import { execFile } from 'node:child_process'
import { constants, existsSync } from 'node:fs'
import { mkdir, open, readFile, statfs } from 'node:fs/promises'
import os from 'node:os'
import path from 'node:path'
import { promisify } from 'node:util'
import { pino } from 'pino'
import { ConfigError, loadConfig, type Config } from './config.ts'
import { checkLanguages, LANGUAGES } from './exec/languages/index.ts'
import { detectCgroups, instanceName } from './jail/cgroup.ts'
import { selectJailDriver } from './jail/select-driver.ts'
import { startServices } from './services.ts'

const run = promisify(execFile)
const SANDBOX = path.resolve(import.meta.dirname, '..', 'sandbox')
const MIN_FREE_BYTES = 1024 ** 3

interface Finding { ok: boolean, warning?: boolean, name: string, detail: string, fix?: string }

function found (name: string, detail: string): Finding { return { ok: true, name, detail } }
function missing (name: string, detail: string, fix: string): Finding { return { ok: false, name, detail, fix } }
function warn (name: string, detail: string, fix: string): Finding { return { ok: true, warning: true, name, detail, fix } }

async function attempt (command: string, args: string[]): Promise<{ ok: boolean, output: string }> {
  try {
    const { stdout, stderr } = await run(command, args, { timeout: 30_000 })
    return { ok: true, output: (stdout + stderr).trim() }
  } catch (error) {
    const failure = error as { stdout?: string, stderr?: string, message: string }
    return { ok: false, output: `${failure.stdout ?? ''}${failure.stderr ?? ''}`.trim() || failure.message }
  }
}

async function checkJail (config: Config): Promise<Finding> {
  try {
    const driver = await selectJailDriver(config.jail)
    return found('jail driver', `${driver.name} ${driver.version} (JAIL=${config.jail.driver})`)
  } catch (error) {
    return missing('jail driver', (error as Error).message, 'apt-get install bubblewrap (or install nsjail), then run doctor again')
  }
}

async function checkUserNamespaces (config: Config): Promise<Finding> {
  const max = Number((await readFile('/proc/sys/user/max_user_namespaces', 'utf8').catch(() => '0')).trim())
  if (max === 0) return missing('user namespaces', 'user.max_user_namespaces is 0', 'sysctl -w user.max_user_namespaces=15000')
  const restricted = (await readFile('/proc/sys/kernel/apparmor_restrict_unprivileged_userns', 'utf8').catch(() => '0')).trim() === '1'
  // bubblewrap runs as an unprivileged uid and creates the user namespace itself: try exactly that
  const uid = String(config.jail.uidBase)
  const probe = await attempt('setpriv', [`--reuid=${uid}`, `--regid=${uid}`, '--clear-groups', '--', 'unshare', '--user', '--map-root-user', 'true'])
  if (!probe.ok) {
    return missing('user namespaces', `an unprivileged process cannot create one: ${probe.output.split('\n')[0]}`,
      restricted
        ? 'sysctl -w kernel.apparmor_restrict_unprivileged_userns=0 (Ubuntu 23.10+), or give bwrap an AppArmor profile with "userns,"'
        : 'enable unprivileged user namespaces (kernel.unprivileged_userns_clone=1 on older Debian kernels)')
  }
  return found('user namespaces', `available (max ${max}), unprivileged creation works`)
}

async function checkCgroups (config: Config): Promise<Finding> {
  const detection = await detectCgroups({ instance: instanceName(), mode: config.jail.cgroups, pythonPath: config.jail.pythonPath })
  if (!detection.ok) {
    return config.jail.cgroups === 'off'
      ? warn('cgroups', 'off (CGROUPS=off): no memory, pids or CPU limits', 'unset CGROUPS to have limits')
      : missing('cgroups', detection.reason, 'see the reason; or CGROUPS=off to run without limits')
  }
  const { cgroups } = detection
  try {
    await cgroups.createZygoteGroup('z0', config.jail.uidBase, { memoryBytes: 256 * 1024 ** 2, pidsMax: 64, cpuWeightPercent: 25 })
    await cgroups.createWorkerGroup('z0', 's0', config.jail.uidBase, { memoryBytes: config.limits.memoryBytes, pidsMax: config.limits.pidsMax, cpus: config.limits.cpus })
    await cgroups.readCounters('z0', 's0')
    return found('cgroups', `${cgroups.description}: groups created, memory, pids and CPU limits written, counters read`)
  } catch (error) {
    return missing('cgroups', `${cgroups.description} found, but limits cannot be written: ${(error as Error).message}`,
      'run Warden as root with a writable cgroup tree (Docker: see README "Deployment")')
  } finally {
    await cgroups.removeZygoteGroup('z0').catch(() => {})
    await cgroups.close().catch(() => {})
  }
}

async function checkSeccomp (config: Config): Promise<Finding> {
  const status = await readFile('/proc/self/status', 'utf8')
  if (!/^Seccomp:/m.test(status)) return missing('seccomp', 'this kernel has no seccomp', 'use a kernel built with CONFIG_SECCOMP_FILTER')
  const build = await attempt(config.jail.pythonPath, ['-c', `import sys; sys.path.insert(0, ${JSON.stringify(SANDBOX)}); import seccomp; print(len(seccomp.build_filter()) // 8, seccomp.machine())`])
  if (!build.ok && /ENOENT/.test(build.output)) return missing('seccomp', `cannot run ${config.jail.pythonPath} to build the worker filter`, 'see the python line')
  if (!build.ok) return missing('seccomp', `the worker filter does not build: ${build.output.split('\n').at(-1)}`, 'this architecture has no policy yet (x86_64 and aarch64 do)')
  const [instructions, arch] = build.output.split(' ')
  return found('seccomp', `kernel support present; the worker filter builds for ${arch} (${instructions} instructions)`)
}

async function checkPython (config: Config): Promise<Finding> {
  const modules = config.jail.preloadModules
  const probe = await attempt(config.jail.pythonPath, ['-c', `import importlib, sys; print(sys.version.split()[0], ${JSON.stringify(modules)} and ' '.join(m + '=' + importlib.import_module(m).__version__ for m in ${JSON.stringify(modules)}))`])
  if (!probe.ok) {
    return missing('python', `${config.jail.pythonPath} cannot import ${modules.join(', ')}: ${probe.output.split('\n').at(-1)}`,
      'apt-get install python3 python3-numpy python3-pandas python3-matplotlib, or set PYTHON_PATH')
  }
  const [version, ...packages] = probe.output.split(' ')
  return found('python', `${config.jail.pythonPath} ${version}; ${packages.join(', ')}`)
}

/** The languages whose runtimes are installed, as /health lists them; a missing one is a warning, not a failure. */
async function checkRuntimes (): Promise<Finding> {
  const { available, missing } = checkLanguages()
  const detail = `${available.length} of ${LANGUAGES.length}: ${available.map((language) => language.id).join(', ')}`
  if (missing.length === 0) return found('languages', detail)
  const absent = missing.map(({ language, executables }) => `${language.id} (${executables.join(', ')})`).join(', ')
  return warn('languages', `${detail}; not installed: ${absent}`, `install ${missing.map(({ language }) => language.install).join('; ')}`)
}

async function checkDisk (config: Config): Promise<Finding> {
  await mkdir(config.dataDir, { recursive: true })
  const stats = await statfs(config.dataDir)
  const free = stats.bavail * stats.bsize
  const gib = (free / 1024 ** 3).toFixed(1)
  return free < MIN_FREE_BYTES
    ? warn('disk', `${gib} GiB free in DATA_DIR ${config.dataDir}`, 'free some space or point DATA_DIR elsewhere: uploads and outputs live there')
    : found('disk', `${gib} GiB free in DATA_DIR ${config.dataDir}`)
}

/**
 * In a container: whether its root can write the host's sysctls. `systempaths=unconfined` (a jail's fresh
 * /proc needs it) also lifts Docker's read-only /proc/sys, and root may then set e.g. kernel.core_pattern,
 * which makes the kernel run a program of its choosing as the host's root; only an LSM profile
 * (deploy/warden.apparmor) stops that. Write access is decided at open(2): opening changes nothing.
 */
async function checkHostSysctls (): Promise<Finding> {
  const name = 'host sysctls'
  if (!['/.dockerenv', '/run/.containerenv'].some((marker) => existsSync(marker)) && process.env.KUBERNETES_SERVICE_HOST === undefined) {
    return found(name, 'not in a container (natively the server is the host\'s root by design)')
  }
  const file = await open('/proc/sys/kernel/core_pattern', constants.O_WRONLY).catch(() => null)
  if (file === null) return found(name, 'the container\'s root cannot write /proc/sys (kernel.core_pattern)')
  await file.close()
  return warn(name, 'the container\'s root CAN write the host\'s /proc/sys (kernel.core_pattern): a compromised server would be the host\'s root',
    'load deploy/warden.apparmor and run with --security-opt apparmor=warden (SECURITY.md, "The container and its host")')
}

/** The real thing: start the jail as the server would (JAIL=auto falling back included) and run the canaries. */
async function checkCanary (config: Config): Promise<Finding[]> {
  const services = await startServices(config, pino({ level: 'silent' })).catch((error: Error) => error)
  if (services instanceof Error) return [missing('canary execution', services.message, jailStartFix(config))]
  try {
    const fallback = services.driverFailures.map((failure) =>
      warn('jail start', `${failure}; ${services.driver.name} is used instead`, jailStartFix(config)))
    const report = await services.selfTest(9)
    const failed = report.checks.filter((check) => !check.ok)
    return [...fallback, failed.length === 0
      ? found('canary execution', `${report.checks.length} checks passed in a real ${services.driver.name} jail in ${report.durationMs} ms`)
      : missing('canary execution', failed.map((check) => `${check.name}: ${check.detail}`).join('; '), 'see SECURITY.md for what each check needs')]
  } finally {
    await services.close()
  }
}

function jailStartFix (config: Config): string {
  return config.jail.driver === 'auto'
    ? 'fix the findings above first; in a container, use the options of README "Deployment"'
    : 'fix the findings above first; in a container, use the options of README "Deployment"; or JAIL=auto to use whichever driver starts'
}

async function main (): Promise<void> {
  let config: Config
  try {
    // The doctor serves nothing: it needs no API key. Its jail gets a runtime directory of its own: it
    // runs beside a live server (`docker exec warden … doctor`, where RUN_DIR is the server's) and removes
    // that directory when done, which took the server's channel sockets with it.
    const runDir = path.join(os.tmpdir(), `warden-doctor-${process.pid}`)
    config = loadConfig({ ...process.env, AUTH: process.env.AUTH ?? 'none', HOST: '127.0.0.1', RUN_DIR: runDir })
  } catch (error) {
    if (!(error instanceof ConfigError)) throw error
    process.stdout.write(`✗ configuration: ${error.message}\n`)
    process.exit(1)
  }
  const findings: Finding[] = []
  for (const check of [checkJail, checkUserNamespaces, checkCgroups, checkSeccomp, checkPython, checkRuntimes, checkDisk, checkHostSysctls]) {
    const finding = await check(config)
    findings.push(finding)
    print(finding)
  }
  const canary = findings.every((finding) => finding.ok)
    ? await checkCanary(config)
    : [missing('canary execution', 'skipped', 'fix the findings above first')]
  findings.push(...canary)
  canary.forEach(print)
  process.exit(findings.every((finding) => finding.ok) ? 0 : 1)
}

function print (finding: Finding): void {
  const mark = !finding.ok ? '✗' : finding.warning === true ? '!' : '✓'
  const fix = finding.fix !== undefined && (!finding.ok || finding.warning === true) ? ` — fix: ${finding.fix}` : ''
  process.stdout.write(`${mark} ${finding.name}: ${finding.detail}${fix}\n`)
}

await main()
