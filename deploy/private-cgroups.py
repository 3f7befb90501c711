"""Run a command (the Warden server, or `warden doctor`) with a writable view of this container's own cgroups.

Docker mounts /sys/fs/cgroup read-only in a container that is not --privileged, and Warden needs to
create a cgroup per jail and per worker. Binding the host's whole tree read-write (--cgroupns=host
-v /sys/fs/cgroup:/sys/fs/cgroup:rw) works, but lets root in the container rewrite any cgroup on the host.
Instead, as the container's root, this enters
  - a new user namespace mapping every id to itself (written by a forked helper that keeps CAP_SETUID and
    CAP_SETGID in the container's namespace; mapping root needs CAP_SETFCAP there too, since Linux 5.12),
  - a new mount namespace, and
  - a new cgroup namespace, rooted at the cgroup the container already is in,
and mounts the cgroup file systems there again, read-write: cgroup2 on a v2 host, the memory, pids and cpu
hierarchies on a v1 host. Only the container's own subtree is visible; under nsdelegate (systemd's default)
the kernel also refuses writes to the limits of the namespace's root, i.e. the container's own.

The command then runs as root of that user namespace with no more than the container's capabilities: the
bounding set, which entering a user namespace fills, is put back before exec. Nothing is gained but the mount. Its pid is recorded, so that a
later `docker exec … warden doctor` joins the same view instead of making a second one.

The tree is already writable (--privileged, or the host tree bound read-write): the command runs as is.
Uses sandbox/linux.py's ctypes wrappers. Standard library only.
"""

from __future__ import annotations

import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "sandbox"))
import linux  # noqa: E402  (sandbox/linux.py)

CGROUP_ROOT = "/sys/fs/cgroup"
PID_FILE = "/run/warden-private-cgroups.pid"
V1_CONTROLLERS = ("memory", "pids", "cpu", "cpuacct")
MS_RELATIME = 1 << 21
NAMESPACES = (("user", linux.CLONE_NEWUSER), ("mnt", linux.CLONE_NEWNS), ("cgroup", linux.CLONE_NEWCGROUP))


def cgroup_mounts() -> list[tuple[str, str, list[str], bool]]:
    """(mount point, fs type, super options, read-only) of each cgroup mount under /sys/fs/cgroup."""
    mounts = []
    with open("/proc/self/mountinfo") as f:
        for line in f:
            fields = line.split()
            dash = fields.index("-")
            point, options = fields[4], fields[5].split(",")
            fstype, super_options = fields[dash + 1], fields[dash + 3].split(",")
            if fstype in ("cgroup", "cgroup2") and (point == CGROUP_ROOT or point.startswith(CGROUP_ROOT + "/")):
                mounts.append((point, fstype, super_options, "ro" in options))
    return mounts


def v1_hierarchies(mounts: list[tuple[str, str, list[str], bool]]) -> list[tuple[str, list[str]]]:
    """The v1 hierarchies Warden uses, once each: (mount point, controllers), e.g. cpu,cpuacct co-mounted."""
    found: dict[tuple[str, ...], str] = {}
    for point, fstype, super_options, _ in mounts:
        controllers = tuple(c for c in super_options if c in V1_CONTROLLERS)
        if fstype == "cgroup" and controllers and controllers not in found:
            found[controllers] = point
    return [(point, list(controllers)) for controllers, point in found.items()]


def needs_private_view(mounts: list[tuple[str, str, list[str], bool]]) -> bool:
    v2 = [m for m in mounts if m[1] == "cgroup2" and m[0] == CGROUP_ROOT]
    if v2:
        return v2[0][3]
    return any(read_only for point, fstype, _, read_only in mounts if fstype == "cgroup" and point != CGROUP_ROOT)


def recorded_view() -> int | None:
    """The pid whose namespaces hold the view, when it still runs in namespaces other than ours."""
    try:
        with open(PID_FILE) as f:
            pid = int(f.read().strip())
        if os.readlink(f"/proc/{pid}/ns/user") != os.readlink("/proc/self/ns/user"):
            return pid
    except (OSError, ValueError):
        pass
    return None


def identity_map(own_map: str) -> str:
    """Every id this namespace has, mapped to itself: all 2^32 - 1 in a plain container, the pod's range in
    one with its own user namespace (Kubernetes hostUsers: false)."""
    with open(own_map) as f:
        return "".join(f"{inner} {inner} {count}\n" for inner, _, count in (line.split() for line in f if line.strip()))


def bounding_set() -> int:
    with open("/proc/self/status") as f:
        return int(next(line for line in f if line.startswith("CapBnd:")).split()[1], 16)


def restore_bounding_set(original: int) -> None:
    """Entering a user namespace grants every capability in it, and a full bounding set with them (the
    kernel's set_cred_user_ns): put the container's own back, so the command keeps no more than that."""
    with open("/proc/sys/kernel/cap_last_cap") as f:
        last = int(f.read())
    for cap in range(last + 1):
        if not original & (1 << cap):
            linux.prctl(linux.PR_CAPBSET_DROP, cap)


def join(pid: int) -> None:
    # the user namespace first: its owner (root here) then holds every capability in it, which entering
    # the mount and cgroup namespaces it owns requires
    fds = [(os.open(f"/proc/{pid}/ns/{name}", os.O_RDONLY), flag) for name, flag in NAMESPACES]
    for fd, flag in fds:
        linux.setns(fd, flag)
        os.close(fd)


def enter_new_view(mounts: list[tuple[str, str, list[str], bool]]) -> None:
    ready_r, ready_w = os.pipe()
    done_r, done_w = os.pipe()
    parent = os.getpid()
    helper = os.fork()
    if helper == 0:
        # still in the container's user namespace, with its CAP_SETUID and CAP_SETGID
        os.close(ready_w)
        os.read(ready_r, 1)
        status = 0
        try:
            for name in ("uid_map", "gid_map"):
                with open(f"/proc/{parent}/{name}", "w") as f:
                    f.write(identity_map(f"/proc/self/{name}"))
        except OSError as error:
            os.write(2, f"private-cgroups: cannot map ids into the new user namespace ({error}); "
                        "the container needs --cap-add SETUID SETGID SETFCAP\n".encode())
            status = 1
        os.write(done_w, bytes([status]))
        os._exit(status)
    os.close(ready_r)
    linux.unshare(linux.CLONE_NEWUSER | linux.CLONE_NEWNS | linux.CLONE_NEWCGROUP)
    os.write(ready_w, b"1")
    result = os.read(done_r, 1)
    os.waitpid(helper, 0)
    if result != b"\0":
        sys.exit(1)
    # the id maps are in place: this process is root of the new namespace, with every capability in it
    # until it execs the command
    linux.mount("none", "/", None, linux.MS_REC | linux.MS_PRIVATE)
    flags = linux.MS_NOSUID | linux.MS_NODEV | linux.MS_NOEXEC | MS_RELATIME
    # a tmpfs first: the kernel refuses to mount a file system on top of the same one at the same place
    # (EBUSY), which cgroup2 over Docker's read-only cgroup2 would be
    linux.mount("tmpfs", CGROUP_ROOT, "tmpfs", flags, "mode=755")
    if any(m[1] == "cgroup2" and m[0] == CGROUP_ROOT for m in mounts):
        linux.mount("cgroup2", CGROUP_ROOT, "cgroup2", flags)
        return
    for _, controllers in v1_hierarchies(mounts):
        point = os.path.join(CGROUP_ROOT, ",".join(controllers))
        os.mkdir(point)
        linux.mount("cgroup", point, "cgroup", flags, ",".join(controllers))


def main(args: list[str]) -> None:
    command = args[1:] if args[:1] == ["--"] else args
    if not command:
        sys.exit("usage: private-cgroups.py [--] command [args]")
    mounts = cgroup_mounts()
    if needs_private_view(mounts):
        original = bounding_set()
        pid = recorded_view()
        if pid is not None:
            join(pid)
        else:
            enter_new_view(mounts)
            with open(PID_FILE, "w") as f:
                f.write(str(os.getpid()))
        restore_bounding_set(original)
    os.execvp(command[0], command)


if __name__ == "__main__":
    main(sys.argv[1:])
