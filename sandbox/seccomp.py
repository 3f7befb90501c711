"""The seccomp policy every execution runs under, compiled to classic BPF without libseccomp.

The jail's isolation comes from namespaces, cgroups and a read-only filesystem; this filter cuts the kernel
attack surface left inside them. It is a deny-list (default ALLOW) so ordinary programs, numpy's threads,
subprocesses and multiprocessing keep working. Denied calls fail with an errno rather than killing the
process, so the program gets an ordinary error it can report (`PermissionError`), and the execution's
explanation stays readable. The table is documented in SECURITY.md.
"""

from __future__ import annotations

import errno
import platform
import struct

# (x86_64 number, aarch64 number or None when the call does not exist there)
SYSCALLS: dict[str, tuple[int, int | None]] = {
    # debugging and reading other processes
    "ptrace": (101, 117),
    "process_vm_readv": (310, 270),
    "process_vm_writev": (311, 271),
    "process_madvise": (440, 440),
    "pidfd_getfd": (438, 438),
    "kcmp": (312, 272),
    # namespaces and mounts: the jail is built before user code; nothing may rebuild it
    "unshare": (272, 97),
    "setns": (308, 268),
    "mount": (165, 40),
    "umount2": (166, 39),
    "pivot_root": (155, 41),
    "chroot": (161, 51),
    "open_tree": (428, 428),
    "move_mount": (429, 429),
    "fsopen": (430, 430),
    "fsconfig": (431, 431),
    "fsmount": (432, 432),
    "fspick": (433, 433),
    "mount_setattr": (442, 442),
    "open_tree_attr": (467, 467),
    "name_to_handle_at": (303, 264),
    "open_by_handle_at": (304, 265),
    "sethostname": (170, 161),
    "setdomainname": (171, 162),
    # kernel-wide state: modules, kexec, reboot, swap, clocks, accounting, logs, quotas
    "init_module": (175, 105),
    "finit_module": (313, 273),
    "delete_module": (176, 106),
    "kexec_load": (246, 104),
    "kexec_file_load": (320, 294),
    "reboot": (169, 142),
    "swapon": (167, 224),
    "swapoff": (168, 225),
    "acct": (163, 89),
    "settimeofday": (164, 170),
    "clock_settime": (227, 112),
    "clock_adjtime": (305, 266),
    "adjtimex": (159, 171),
    "syslog": (103, 116),
    "vhangup": (153, 58),
    "quotactl": (179, 60),
    "quotactl_fd": (443, 443),
    "nfsservctl": (180, 42),
    "lookup_dcookie": (212, 18),
    "fanotify_init": (300, 262),
    "uselib": (134, None),
    "iopl": (172, None),
    "ioperm": (173, None),
    "modify_ldt": (154, None),
    "_sysctl": (156, None),
    "create_module": (174, None),
    "get_kernel_syms": (177, None),
    "query_module": (178, None),
    # the kernel's largest recent attack surfaces
    "bpf": (321, 280),
    "perf_event_open": (298, 241),
    "userfaultfd": (323, 282),
    "add_key": (248, 217),
    "request_key": (249, 218),
    "keyctl": (250, 219),
    "io_uring_setup": (425, 425),
    "io_uring_enter": (426, 426),
    "io_uring_register": (427, 427),
    # filtered by argument below
    "clone": (56, 220),
    "clone3": (435, 435),
    "socket": (41, 198),
    "socketpair": (53, 199),
    "personality": (135, 92),
}

# io_uring and clone3 answer ENOSYS so libraries (liburing users, glibc's clone3 path) fall back quietly.
ENOSYS_CALLS = {"io_uring_setup", "io_uring_enter", "io_uring_register", "clone3"}
ARGUMENT_FILTERED = {"clone", "socket", "socketpair", "personality"}

NAMESPACE_CLONE_FLAGS = 0x7E020000  # NEWNS|NEWCGROUP|NEWUTS|NEWIPC|NEWUSER|NEWPID|NEWNET
ALLOWED_SOCKET_FAMILIES = (1, 2, 10)  # AF_UNIX, AF_INET, AF_INET6: no netlink, packet, vsock, alg, ...
# a pair of connected sockets only makes sense for AF_UNIX; any other family reaching the kernel would be
# attack surface the policy did not choose (found by an outside attack run)
ALLOWED_SOCKETPAIR_FAMILIES = (1,)
ALLOWED_PERSONALITIES = (0, 0xFFFFFFFF)  # PER_LINUX and "query"; ADDR_NO_RANDOMIZE & co. are refused

AUDIT_ARCH = {"x86_64": 0xC000003E, "aarch64": 0xC00000B7}

_LD_W_ABS = 0x20
_JEQ_K = 0x15
_JGE_K = 0x35
_JSET_K = 0x45
_RET_K = 0x06

RET_ALLOW = 0x7FFF0000
RET_KILL_PROCESS = 0x80000000
RET_ERRNO = 0x00050000

_OFFSET_NR = 0
_OFFSET_ARCH = 4
_OFFSET_ARG0 = 16  # low 32 bits of args[0] on little-endian machines
X32_SYSCALL_BIT = 0x40000000


def _insn(code: int, k: int, jt: int = 0, jf: int = 0) -> bytes:
    return struct.pack("<HBBI", code, jt, jf, k)


def _errno(value: int) -> int:
    return RET_ERRNO | value


def machine() -> str:
    name = platform.machine()
    return "aarch64" if name in ("aarch64", "arm64") else name


def denied_syscalls(arch: str) -> dict[str, int]:
    column = 0 if arch == "x86_64" else 1
    return {name: numbers[column] for name, numbers in SYSCALLS.items() if numbers[column] is not None}


def build_filter(arch: str | None = None) -> bytes:
    """Return the BPF program (sock_filter records) for `arch` (default: this machine)."""
    arch = arch or machine()
    if arch not in AUDIT_ARCH:
        raise ValueError(f"no seccomp policy for architecture {arch}")
    numbers = denied_syscalls(arch)
    program: list[bytes] = [
        _insn(_LD_W_ABS, _OFFSET_ARCH),
        # a foreign ABI (i386 on x86_64, arm32 on aarch64) would bypass every number below: kill it
        _insn(_JEQ_K, AUDIT_ARCH[arch], jt=1),
        _insn(_RET_K, RET_KILL_PROCESS),
        _insn(_LD_W_ABS, _OFFSET_NR),
    ]
    if arch == "x86_64":
        program += [_insn(_JGE_K, X32_SYSCALL_BIT, jf=1), _insn(_RET_K, RET_KILL_PROCESS)]

    for name, number in numbers.items():
        if name in ARGUMENT_FILTERED:
            continue
        action = _errno(errno.ENOSYS if name in ENOSYS_CALLS else errno.EPERM)
        program += [_insn(_JEQ_K, number, jf=1), _insn(_RET_K, action)]

    # clone: refuse any namespace flag (threads and fork use clone without them)
    program += [
        _insn(_JEQ_K, numbers["clone"], jf=4),
        _insn(_LD_W_ABS, _OFFSET_ARG0),
        _insn(_JSET_K, NAMESPACE_CLONE_FLAGS, jf=1),
        _insn(_RET_K, _errno(errno.EPERM)),
        _insn(_RET_K, RET_ALLOW),
    ]
    program += _allow_only_values(numbers["socket"], ALLOWED_SOCKET_FAMILIES, errno.EAFNOSUPPORT)
    program += _allow_only_values(numbers["socketpair"], ALLOWED_SOCKETPAIR_FAMILIES, errno.EAFNOSUPPORT)
    program += _allow_only_values(numbers["personality"], ALLOWED_PERSONALITIES, errno.EPERM)
    program.append(_insn(_RET_K, RET_ALLOW))
    return b"".join(program)


def _allow_only_values(number: int, allowed: tuple[int, ...], error: int) -> list[bytes]:
    """For syscall `number`, allow when args[0] is one of `allowed`, else fail with `error`.

    Expects the syscall number in the accumulator and leaves it there for the next check when the
    call is a different one.
    """
    body: list[bytes] = [_insn(_LD_W_ABS, _OFFSET_ARG0)]
    for index, value in enumerate(allowed):
        remaining = len(allowed) - index - 1
        body.append(_insn(_JEQ_K, value, jt=remaining + 1))
    body.append(_insn(_RET_K, _errno(error)))
    body.append(_insn(_RET_K, RET_ALLOW))
    return [_insn(_JEQ_K, number, jf=len(body)), *body]


if __name__ == "__main__":
    import sys

    sys.stdout.buffer.write(build_filter(sys.argv[1] if len(sys.argv) > 1 else None))
