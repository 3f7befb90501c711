import { execFile } from 'node:child_process'
import { readFileSync } from 'node:fs'
import path from 'node:path'
import { promisify } from 'node:util'
import { readProcs } from './cgroup.ts'

const run = promisify(execFile)

/**
 * What tells Warden whether the cgroup it was started in is its own to divide. Injected so unit tests
 * can describe a host with a fake cgroup tree.
 */
export interface DelegationProbe {
  /**
   * The `user.delegate` (or `trusted.delegate`) extended attribute systemd (251 and later) sets on the
   * cgroup of a unit with `Delegate=yes`, Docker's container scopes included; `null` when unset.
   */
  delegateXattr (dir: string): Promise<string | null>
  /** `systemctl show -p Delegate` of a unit: what an older systemd says; `null` when there is no answer */
  unitDelegate (unit: string): Promise<boolean | null>
  /** The server itself or a process it started. */
  isOwnProcess (pid: number): boolean
}

export type Delegation = { ok: true } | { ok: false, reason: string }

const SYSTEMD_UNIT = /\.(service|scope)$/
const HOW_TO = 'Run Warden as its own systemd service with Delegate=yes (deploy/warden.service; or ' +
  '`systemd-run --unit=warden -p Delegate=yes …`), or in a container with its own cgroup namespace ' +
  '(README "Deployment")'

/**
 * Decides whether `dir` (Warden's own v2 cgroup, `ownPath` as /proc/self/cgroup names it) was delegated
 * to it, before Warden moves its processes and enables controllers there. Dividing a cgroup that is not
 * its own does harm (F1, F5 of the deployment issue): the processes Warden moves belong to someone else
 * (an ssh login's shell in `ssh.service`), and a worker's OOM kill counts in that unit's memory.events,
 * which systemd's default OOMPolicy=stop answers by stopping the whole unit.
 * - the root of Warden's cgroup namespace: a container runtime made it for this container alone;
 * - a systemd unit (`*.service`, `*.scope`): only with Delegate=yes;
 * - anything else: only when no process but Warden and its children is in it (not even the shell or
 *   init that started it: on a host without systemd, that is how F5 would look).
 */
export async function checkDelegation (dir: string, ownPath: string, probe: DelegationProbe): Promise<Delegation> {
  if (ownPath === '/') return { ok: true }
  const unit = path.basename(ownPath)
  if (SYSTEMD_UNIT.test(unit)) {
    const xattr = await probe.delegateXattr(dir)
    if (xattr === '1') return { ok: true }
    const delegate = await probe.unitDelegate(unit)
    if (delegate === true) return { ok: true }
    const what = delegate === false ? 'has Delegate=no' : 'is not marked as delegated (no user.delegate attribute)'
    return {
      ok: false,
      reason: `Warden's cgroup ${ownPath} belongs to the systemd unit ${unit}, which ${what}: dividing it would ` +
        'move that unit\'s processes and count every worker\'s OOM kill against it (systemd\'s default ' +
        `OOMPolicy=stop then stops the unit). ${HOW_TO}`,
    }
  }
  const strangers = (await readProcs(dir)).filter((pid) => !probe.isOwnProcess(pid))
  if (strangers.length === 0) return { ok: true }
  return {
    ok: false,
    reason: `Warden's cgroup ${ownPath} also holds processes that are not Warden's (pids ${strangers.slice(0, 5).join(', ')}), ` +
      `so it is not Warden's to divide. ${HOW_TO}`,
  }
}

/** The probe of the running system: xattrs read by Python (Node has no getxattr), systemctl, /proc. */
export function systemDelegationProbe (pythonPath: string): DelegationProbe {
  return {
    async delegateXattr (dir) {
      const script = 'import os, sys\n' +
        'for name in ("user.delegate", "trusted.delegate"):\n' +
        '    try:\n        print(os.getxattr(sys.argv[1], name).decode()); break\n' +
        '    except OSError:\n        pass\n'
      const answer = await run(pythonPath, ['-I', '-c', script, dir]).then(({ stdout }) => stdout.trim(), () => '')
      return answer === '' ? null : answer
    },
    async unitDelegate (unit) {
      const answer = await run('systemctl', ['show', '--property=Delegate', '--value', '--', unit], { timeout: 10_000 })
        .then(({ stdout }) => stdout.trim(), () => '')
      return answer === 'yes' ? true : answer === 'no' ? false : null
    },
    isOwnProcess: (pid) => isSelfOrDescendant(pid, process.pid),
  }
}

/** True when `pid` is `self` or one of its descendants (by the ppid chain in /proc). */
export function isSelfOrDescendant (pid: number, self: number): boolean {
  for (let current = pid, steps = 0; current > 0 && steps < 1000; current = parentOf(current), steps++) {
    if (current === self) return true
  }
  return false
}

function parentOf (pid: number): number {
  try {
    // the comm field may hold spaces and parentheses: the ppid is the second field after the last ')'
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8')
    return Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[1])
  } catch {
    return 0
  }
}
