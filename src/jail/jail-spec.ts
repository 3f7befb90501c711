import type { ChildProcess } from 'node:child_process'

/** A read-write or read-only bind of a host path into the jail. */
export interface BindMount { hostPath: string, jailPath: string }

/** Where things are inside every jail, whatever the driver. */
export const JAIL_PATHS = {
  sandbox: '/opt/warden/sandbox',
  cgroup: '/run/warden/cgroup',
  /** the zygote's channel listener (src/pool/channels.ts), which workers connect to before isolating */
  channel: '/run/warden/channel',
  /** paths a worker covers with an empty tmpfs before user code: the zygote's private view */
  hidden: ['/run/warden', '/opt/warden'],
} as const

/**
 * One zygote jail: the same namespaces, mounts and ids on every driver. The jail's own process gets
 * inside uid 0 (outside `zygoteUid`) and the worker slots inside uids 1000.. (outside `slotUidBase`..).
 */
export interface JailSpec {
  /** host directory with the sandbox code (runtime copy), bound read-only at JAIL_PATHS.sandbox */
  sandboxDir: string
  /** host directory with the synthetic /etc files (passwd, group, hosts, nsswitch.conf) */
  etcDir: string
  pythonPath: string
  zygoteUid: number
  slotUidBase: number
  slotCount: number
  binds: BindMount[]
  /** inherited fds after stdin/stdout/stderr: the zygote's control socket */
  inheritedFdCount: number
}

/** Inside-the-jail uid of slot 0; must match sandbox/zygote.py's `slot_uid_base`. */
export const SLOT_INSIDE_UID_BASE = 1000

export interface JailLaunch {
  /** argv of the jail program itself (the server prefixes the cgroup wrapper) */
  argv: string[]
  /** extra stdio entries the driver needs after the inherited sockets (e.g. bubblewrap's info fd) */
  driverFdCount: number
  /** called once the process is spawned, before the zygote is configured (bubblewrap writes uid maps here) */
  afterSpawn: (child: ChildProcess, firstDriverFd: number) => Promise<void>
}

export interface JailDriver {
  readonly name: 'nsjail' | 'bwrap'
  readonly version: string
  launch (spec: JailSpec): JailLaunch
}

/** The id maps of a zygote jail, in /proc/<pid>/uid_map syntax. */
export function idMapLines (spec: JailSpec): string {
  return `0 ${spec.zygoteUid} 1\n${SLOT_INSIDE_UID_BASE} ${spec.slotUidBase} ${spec.slotCount}\n`
}
