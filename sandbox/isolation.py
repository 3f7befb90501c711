"""Re-isolation of a freshly forked worker, before it may ever run user code.

The zygote is one long-lived jail (bubblewrap or nsjail) holding a warm interpreter. It forks one worker per
execution; the worker starts as pid 1 of a new pid namespace (the zygote arranges that) and then, in this
order:

1. its own mount namespace, with fresh tmpfs on /tmp, /dev/shm and /mnt/data, a procfs for its own pid
   namespace, a devpts instance of its own (pseudo-terminals), and an empty read-only tmpfs over the zygote's private paths (cgroup delegation);
2. its own outside uid: it switches to the slot's uid and unshares a user namespace that maps only
   65534 to it, so two workers never share an uid, inside or outside;
3. fresh network (loopback only), IPC, UTS and cgroup namespaces, owned by that user namespace;
4. no capabilities, no_new_privs, resource limits, then the seccomp filter.

Mounts are made while the worker still holds the zygote's capabilities, so the mount namespace belongs to
the zygote's user namespace: the worker, once inside its own user namespace, cannot change a single mount.
"""

from __future__ import annotations

import os
import resource
from dataclasses import dataclass

import linux

INSIDE_ID = 65534
# pseudo-terminals one worker may hold: a terminal's commands (64), its shells and what the user opens
MAX_PTYS = 128


@dataclass(frozen=True)
class IsolationConfig:
    slot_uid: int  # uid (and gid) in the zygote's user namespace; the jail maps it to a distinct outside id
    workdir_bytes: int
    tmp_bytes: int
    shm_bytes: int
    hidden_paths: tuple[str, ...]  # zygote-only paths covered before user code (cgroup delegation, sandbox code)
    nofile: int
    file_size_bytes: int
    nproc: int
    seccomp_program: bytes


def _tmpfs(target: str, size: int, mode: str, owner: int | None = None, readonly: bool = False) -> None:
    options = f"size={size},mode={mode}"
    if owner is not None:
        options += f",uid={owner},gid={owner}"
    flags = linux.MS_NOSUID | linux.MS_NODEV | (linux.MS_RDONLY if readonly else 0)
    linux.mount("tmpfs", target, "tmpfs", flags, options)


def _mounts_under(path: str) -> list[str]:
    """Mount points at or below `path`, deepest first."""
    prefix = path.rstrip("/") + "/"
    with open("/proc/self/mountinfo") as f:
        points = [line.split()[4] for line in f]
    inside = {point for point in points if point == path or point.startswith(prefix)}
    return sorted(inside, key=lambda point: point.count("/"), reverse=True)


def build_filesystem(config: IsolationConfig) -> None:
    linux.unshare(linux.CLONE_NEWNS)
    linux.mount("none", "/", None, linux.MS_REC | linux.MS_PRIVATE)
    # a procfs of this worker's own pid namespace: other executions' processes do not exist here
    linux.mount("proc", "/proc", "proc", linux.MS_NOSUID | linux.MS_NODEV | linux.MS_NOEXEC)
    _tmpfs("/tmp", config.tmp_bytes, "1777")
    _tmpfs("/dev/shm", config.shm_bytes, "1777")
    # the work directory is a tmpfs of the session quota: ENOSPC at the quota, gone with the worker
    _tmpfs("/mnt/data", config.workdir_bytes, "0755", owner=config.slot_uid)
    # a devpts instance of its own: the terminals a worker opens (sandbox/terminal.py) are not even
    # listed in another worker's /dev/pts, which the jail's devpts (bubblewrap's --dev) would share. At most
    # MAX_PTYS of them: every devpts instance but the host's draws on one host-wide pool (kernel.pty.max
    # minus kernel.pty.reserve, 3072 by default), and one worker opened 510 before its fds ran out
    linux.mount("devpts", "/dev/pts", "devpts", linux.MS_NOSUID | linux.MS_NOEXEC, f"newinstance,ptmxmode=0666,mode=0620,max={MAX_PTYS}")
    # detach the zygote's private mounts (sandbox code, delegated cgroups): not merely covered, gone,
    # so not even /proc/self/mountinfo names their host paths. The mount namespace belongs to the
    # zygote's user namespace, so these copies are not locked and can be unmounted.
    for path in config.hidden_paths:
        for mount_point in _mounts_under(path):
            linux.umount(mount_point, linux.MNT_DETACH)


def enter_own_user_namespace(slot_uid: int) -> None:
    os.setgroups([])
    os.setresgid(slot_uid, slot_uid, slot_uid)
    os.setresuid(slot_uid, slot_uid, slot_uid)  # drops every capability held in the zygote's namespace
    # changing uid made the process non-dumpable, which hands /proc/self/* to root; take them back
    linux.prctl(linux.PR_SET_DUMPABLE, 1)
    linux.unshare(linux.CLONE_NEWUSER)
    with open("/proc/self/setgroups", "w") as f:
        f.write("deny")
    with open("/proc/self/uid_map", "w") as f:
        f.write(f"{INSIDE_ID} {slot_uid} 1")
    with open("/proc/self/gid_map", "w") as f:
        f.write(f"{INSIDE_ID} {slot_uid} 1")
    os.setresgid(INSIDE_ID, INSIDE_ID, INSIDE_ID)
    os.setresuid(INSIDE_ID, INSIDE_ID, INSIDE_ID)


def enter_private_namespaces() -> None:
    linux.unshare(linux.CLONE_NEWNET | linux.CLONE_NEWIPC | linux.CLONE_NEWUTS | linux.CLONE_NEWCGROUP)
    linux.bring_loopback_up()
    linux.sethostname("sandbox")


def drop_privileges(config: IsolationConfig) -> None:
    linux.prctl(linux.PR_SET_NO_NEW_PRIVS, 1)
    linux.drop_all_capabilities()
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    resource.setrlimit(resource.RLIMIT_NOFILE, (config.nofile, config.nofile))
    resource.setrlimit(resource.RLIMIT_FSIZE, (config.file_size_bytes, config.file_size_bytes))
    # counted per outside uid, and every worker has its own: a backstop for pids.max
    resource.setrlimit(resource.RLIMIT_NPROC, (config.nproc, config.nproc))
    linux.install_seccomp(config.seccomp_program)


def isolate(config: IsolationConfig) -> None:
    build_filesystem(config)
    enter_own_user_namespace(config.slot_uid)
    enter_private_namespaces()
    drop_privileges(config)
