import { execFile } from 'node:child_process'
import { promisify } from 'node:util'
import { JAIL_PATHS, SLOT_INSIDE_UID_BASE, type JailDriver, type JailLaunch, type JailSpec } from './jail-spec.ts'

const run = promisify(execFile)

/**
 * nsjail with the repository's nsjail.cfg as the base jail; the server adds only per-zygote flags, as
 * snekbox does. nsjail runs as root and writes the id maps itself, so it maps the slot uids directly.
 */
export async function createNsjailDriver (nsjailPath: string, configPath: string): Promise<JailDriver> {
  const version = await readVersion(nsjailPath)
  return {
    name: 'nsjail',
    version,
    launch: (spec) => launchNsjail(nsjailPath, configPath, spec),
  }
}

/** nsjail prints no version; confirm the binary runs and report its path instead. */
async function readVersion (nsjailPath: string): Promise<string> {
  const { stdout, stderr } = await run(nsjailPath, ['--help']).catch((error: { stdout?: string, stderr?: string }) => ({
    stdout: error.stdout ?? '',
    stderr: error.stderr ?? '',
  }))
  if (!/Usage: .*nsjail/.test(stdout + stderr)) throw new Error(`${nsjailPath} --help did not print nsjail usage`)
  return `unversioned (${nsjailPath})`
}

function launchNsjail (nsjailPath: string, configPath: string, spec: JailSpec): JailLaunch {
  const idMaps = (flag: string) => [
    flag, `0:${spec.zygoteUid}:1`,
    flag, `${SLOT_INSIDE_UID_BASE}:${spec.slotUidBase}:${spec.slotCount}`,
  ]
  const passFds: string[] = []
  for (let fd = 3; fd < 3 + spec.inheritedFdCount; fd++) passFds.push('--pass_fd', String(fd))
  const argv = [
    nsjailPath, '--config', configPath,
    ...idMaps('-u'), ...idMaps('-g'),
    ...passFds,
    '--bindmount_ro', `${spec.sandboxDir}:${JAIL_PATHS.sandbox}`,
    ...spec.binds.flatMap((bind) => ['--bindmount', `${bind.hostPath}:${bind.jailPath}`]),
    '--', spec.pythonPath, '-I', `${JAIL_PATHS.sandbox}/zygote.py`,
  ]
  return { argv, driverFdCount: 0, afterSpawn: async () => {} }
}
