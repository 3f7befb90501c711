import { execFile } from 'node:child_process'
import { readFile } from 'node:fs/promises'
import path from 'node:path'
import type { Readable, Writable } from 'node:stream'
import { promisify } from 'node:util'
import { JAIL_PATHS, idMapLines, type JailDriver, type JailLaunch, type JailSpec } from './jail-spec.ts'
import { SYSTEM_MOUNTS } from './mounts.ts'

const run = promisify(execFile)

const SYNTHETIC_FILES = SYSTEM_MOUNTS.filter((mount) => mount.kind === 'file')

/**
 * bubblewrap, run unprivileged as the zygote's outside uid (setpriv), so the jail is nobody's root
 * outside and bwrap's own root-only code paths never run. bwrap can map only one id itself; with
 * --userns-block-fd it waits while the server (root) writes a map that also covers the slot uids,
 * which gives every worker its own outside uid.
 */
export async function createBubblewrapDriver (bwrapPath: string): Promise<JailDriver> {
  const { stdout } = await run(bwrapPath, ['--version'])
  return {
    name: 'bwrap',
    version: stdout.trim().replace(/^bubblewrap\s*/, ''),
    launch: (spec) => launchBubblewrap(bwrapPath, spec),
  }
}

function launchBubblewrap (bwrapPath: string, spec: JailSpec): JailLaunch {
  const infoFd = 3 + spec.inheritedFdCount
  const blockFd = infoFd + 1
  const uid = String(spec.zygoteUid)
  const argv = [
    'setpriv', `--reuid=${uid}`, `--regid=${uid}`, '--clear-groups', '--',
    bwrapPath,
    // every namespace but the cgroup one: the zygote must see its delegated cgroup directory from
    // outside, or a cgroup2 mount with nsdelegate refuses the moves into worker groups; each worker
    // gets its own cgroup namespace instead
    '--unshare-user', '--unshare-ipc', '--unshare-pid', '--unshare-net', '--unshare-uts', '--cap-add', 'ALL',
    '--info-fd', String(infoFd), '--userns-block-fd', String(blockFd),
    '--die-with-parent', '--new-session', '--hostname', 'sandbox', '--clearenv',
    '--setenv', 'PATH', '/usr/local/bin:/usr/bin:/bin', '--setenv', 'HOME', '/tmp', '--setenv', 'LANG', 'C.UTF-8',
    // bwrap creates missing parents of a bind target 0700, which would hide /etc from the workers'
    // uid: create them readable first
    '--dir', '/etc', '--dir', '/opt', '--dir', '/run',
    ...SYSTEM_MOUNTS.flatMap((mount) => {
      if (mount.kind === 'ro-bind') return [mount.optional === true ? '--ro-bind-try' : '--ro-bind', mount.path, mount.path]
      if (mount.kind === 'symlink') return ['--symlink', mount.target, mount.path]
      return []
    }),
    // copied in through fds rather than bound from the run dir: no host path shows in the jail's mountinfo
    ...SYNTHETIC_FILES.flatMap((mount, index) => ['--perms', '0644', '--ro-bind-data', String(blockFd + 1 + index), mount.path]),
    // procfs of the jail's pid namespace; bwrap adds no over-mounts when unprivileged, which a
    // worker needs to mount its own procfs on top
    '--proc', '/proc', '--dev', '/dev', '--tmpfs', '/dev/shm',
    '--size', String(64 * 1024 * 1024), '--tmpfs', '/tmp',
    '--dir', '/mnt/data',
    '--ro-bind', spec.sandboxDir, JAIL_PATHS.sandbox,
    ...spec.binds.flatMap((bind) => ['--bind', bind.hostPath, bind.jailPath]),
    '--remount-ro', '/', '--chdir', '/',
    spec.pythonPath, '-I', `${JAIL_PATHS.sandbox}/zygote.py`,
  ]
  return {
    argv,
    driverFdCount: 2 + SYNTHETIC_FILES.length,
    afterSpawn: async (child, firstDriverFd) => {
      const info = child.stdio[firstDriverFd] as Readable
      const block = child.stdio[firstDriverFd + 1] as Writable
      for (const [index, mount] of SYNTHETIC_FILES.entries()) {
        (child.stdio[firstDriverFd + 2 + index] as Writable).end(await readFile(path.join(spec.etcDir, path.basename(mount.path))))
      }
      await writeIdMaps(await readChildPid(info), idMapLines(spec), uid)
      block.end('1')
    },
  }
}

/**
 * Writes the jail's uid and gid maps as the zygote's uid, which owns bwrap's user namespace and so has
 * every capability in it, keeping CAP_SETUID and CAP_SETGID (ambient) for the ranges beyond its own id.
 * Root writing them itself would need CAP_SYS_ADMIN over that namespace (user_namespaces(7), map_write),
 * which Docker's --cap-drop ALL takes away: EPERM, the jail never starts.
 */
async function writeIdMaps (pid: number, maps: string, ownerUid: string): Promise<void> {
  const script = 'printf %s "$1" > "/proc/$2/uid_map" && printf %s "$1" > "/proc/$2/gid_map"'
  try {
    await run('setpriv', [
      `--reuid=${ownerUid}`, `--regid=${ownerUid}`, '--clear-groups',
      '--inh-caps=-all,+setuid,+setgid', '--ambient-caps=-all,+setuid,+setgid',
      '--', 'sh', '-c', script, 'sh', maps, String(pid),
    ])
  } catch (error) {
    const stderr = String((error as { stderr?: unknown }).stderr ?? '').trim()
    throw new Error(`cannot write the uid and gid maps of bwrap's user namespace (needs CAP_SETUID and CAP_SETGID): ${stderr || (error as Error).message}`)
  }
}

/** bwrap writes `{"child-pid": N, ...}` on its info fd and closes it. */
async function readChildPid (info: Readable): Promise<number> {
  let text = ''
  for await (const chunk of info) text += String(chunk)
  const pid = (JSON.parse(text) as { 'child-pid'?: unknown })['child-pid']
  if (typeof pid !== 'number') throw new Error('bubblewrap did not report its child pid')
  return pid
}
