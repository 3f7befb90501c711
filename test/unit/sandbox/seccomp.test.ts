import assert from 'node:assert/strict'
import { spawnSync } from 'node:child_process'
import { existsSync, readFileSync } from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import { test } from 'node:test'

// sandbox/seccomp.py compiles the seccomp policy to classic BPF by hand, so its numbers and jumps are
// checked three ways: against the kernel headers, by an evaluator of the program below, and by the kernel.

const sandboxDir = path.resolve(import.meta.dirname, '..', '..', '..', 'sandbox')
const python = existsSync('/usr/bin/python3') ? '/usr/bin/python3' : 'python3'
const ARCHES = ['x86_64', 'aarch64'] as const
type Arch = (typeof ARCHES)[number]

function runPython (script: string, args: string[] = []): string {
  const prelude = `import sys\nsys.path.insert(0, ${JSON.stringify(sandboxDir)})\n`
  const result = spawnSync(python, ['-c', prelude + script, ...args], { encoding: 'utf8', timeout: 60_000 })
  if (result.error) throw result.error
  assert.equal(result.status, 0, `python exited ${result.status}: ${result.stderr}`)
  return result.stdout
}

interface Policy {
  syscalls: Record<string, [number, number | null]>
  enosys: string[]
  argumentFiltered: string[]
  auditArch: Record<Arch, number>
  filters: Record<Arch, string>
}

const policy: Policy = JSON.parse(runPython(`
import json, seccomp
print(json.dumps({
  "syscalls": seccomp.SYSCALLS,
  "enosys": sorted(seccomp.ENOSYS_CALLS),
  "argumentFiltered": sorted(seccomp.ARGUMENT_FILTERED),
  "auditArch": seccomp.AUDIT_ARCH,
  "filters": {arch: seccomp.build_filter(arch).hex() for arch in ("x86_64", "aarch64")},
}))`))

const EPERM = 1
const ENOSYS = 38
const EAFNOSUPPORT = 97
const RET_ALLOW = 0x7fff0000
const RET_KILL_PROCESS = 0x80000000
const RET_ERRNO = 0x00050000
const errnoAction = (value: number) => (RET_ERRNO | value) >>> 0

function filterBytes (arch: Arch): Buffer {
  return Buffer.from(policy.filters[arch], 'hex')
}

function syscallNumber (arch: Arch, name: string): number {
  const number = policy.syscalls[name]?.[arch === 'x86_64' ? 0 : 1]
  assert.ok(typeof number === 'number', `${name} has no number on ${arch}`)
  return number
}

// ---------------------------------------------------------------------------------------------------
// A classic-BPF evaluator for the few instructions seccomp.py emits

interface Instruction { code: number, jt: number, jf: number, k: number }

function decode (program: Buffer): Instruction[] {
  const instructions: Instruction[] = []
  for (let offset = 0; offset < program.length; offset += 8) {
    instructions.push({
      code: program.readUInt16LE(offset),
      jt: program.readUInt8(offset + 2),
      jf: program.readUInt8(offset + 3),
      k: program.readUInt32LE(offset + 4),
    })
  }
  return instructions
}

/** Run the filter on a struct seccomp_data: nr at 0, arch at 4, args[0] at 16 (low half) and 20 (high half). */
function evaluate (program: Instruction[], data: { nr: number, arch: number, arg0?: bigint }): number {
  const arg0 = BigInt.asUintN(64, data.arg0 ?? 0n)
  const load = (offset: number): number => {
    switch (offset) {
      case 0: return data.nr >>> 0
      case 4: return data.arch >>> 0
      case 16: return Number(arg0 & 0xffffffffn)
      case 20: return Number(arg0 >> 32n)
      default: throw new Error(`load from unexpected offset ${offset}`)
    }
  }
  let accumulator = 0
  for (let pc = 0, steps = 0; pc < program.length && steps < 10_000; steps++) {
    const insn = program[pc]
    assert.ok(insn !== undefined)
    const jump = (condition: boolean) => { pc += 1 + (condition ? insn.jt : insn.jf) }
    switch (insn.code) {
      case 0x20: accumulator = load(insn.k); pc++; break
      case 0x15: jump(accumulator === insn.k); break
      case 0x35: jump(accumulator >= insn.k); break
      case 0x45: jump(((accumulator & insn.k) >>> 0) !== 0); break
      case 0x06: return insn.k
      default: throw new Error(`unexpected BPF opcode 0x${insn.code.toString(16)} at ${pc}`)
    }
  }
  throw new Error('the program ran off its end without returning')
}

// ---------------------------------------------------------------------------------------------------
// Shape

for (const arch of ARCHES) {
  test(`the ${arch} filter is whole 8-byte instructions, within the kernel's 4096, and every jump lands inside it`, () => {
    const bytes = filterBytes(arch)
    assert.ok(bytes.length > 0)
    assert.equal(bytes.length % 8, 0)
    const program = decode(bytes)
    assert.ok(program.length <= 4096, `${program.length} instructions`)
    program.forEach((insn, pc) => {
      if ((insn.code & 0x07) === 0x05) { // BPF_JMP
        assert.ok(pc + 1 + Math.max(insn.jt, insn.jf) < program.length, `jump at ${pc} leaves the program`)
      }
    })
    assert.deepEqual(program[0], { code: 0x20, jt: 0, jf: 0, k: 4 }, 'first loads the architecture')
    assert.deepEqual(program.at(-1), { code: 0x06, jt: 0, jf: 0, k: RET_ALLOW }, 'ends allowing (a deny-list)')
  })
}

test('build_filter refuses an architecture it has no policy for', () => {
  const out = runPython(`
import seccomp
try:
    seccomp.build_filter("riscv64")
    print("built")
except ValueError as error:
    print("refused:", error)
`)
  assert.match(out, /^refused: .*riscv64/)
})

// ---------------------------------------------------------------------------------------------------
// Numbers against the kernel headers

function headerNumbers (file: string): Map<string, number> {
  const numbers = new Map<string, number>()
  for (const match of readFileSync(file, 'utf8').matchAll(/^#define\s+__NR_(\w+)\s+(\d+)\s*$/gm)) {
    numbers.set(match[1] ?? '', Number(match[2]))
  }
  return numbers
}

const HEADERS: Record<Arch, string> = {
  x86_64: '/usr/include/x86_64-linux-gnu/asm/unistd_64.h',
  aarch64: '/usr/include/asm-generic/unistd.h',
}

for (const arch of ARCHES) {
  const header = HEADERS[arch]
  test(`the ${arch} syscall numbers in SYSCALLS match ${header}`, { skip: existsSync(header) ? false : `${header} is not installed` }, (t) => {
    const numbers = headerNumbers(header)
    assert.ok(numbers.size > 200, `only ${numbers.size} __NR_ definitions found: has the header's format changed?`)
    const missing: string[] = []
    let checked = 0
    for (const [name, pair] of Object.entries(policy.syscalls)) {
      const ours = pair[arch === 'x86_64' ? 0 : 1]
      const theirs = numbers.get(name)
      if (ours === null) {
        assert.equal(theirs, undefined, `${name} is marked absent on ${arch} but the header defines it as ${theirs}`)
      } else if (theirs === undefined) {
        missing.push(name)
      } else {
        assert.equal(ours, theirs, `${name} on ${arch}`)
        checked++
      }
    }
    if (missing.length > 0) t.diagnostic(`newer than this header, not checked: ${missing.join(', ')}`)
    const listed = Object.values(policy.syscalls).filter((pair) => pair[arch === 'x86_64' ? 0 : 1] !== null).length
    assert.ok(checked >= listed - 3, `only ${checked} of ${listed} numbers could be checked`)
  })
}

// ---------------------------------------------------------------------------------------------------
// The program's decisions, evaluated for both architectures

const FOREIGN_ARCH: Record<Arch, number> = { x86_64: 0x40000003 /* i386 */, aarch64: 0x40000028 /* arm */ }
const ORDINARY: Record<Arch, Record<string, number>> = {
  x86_64: { read: 0, write: 1, openat: 257, mmap: 9, execve: 59, wait4: 61, exit_group: 231 },
  aarch64: { read: 63, write: 64, openat: 56, mmap: 222, execve: 221, wait4: 260, exit_group: 94 },
}
const CLONE_NEW_FLAGS = { NEWNS: 0x20000, NEWCGROUP: 0x2000000, NEWUTS: 0x4000000, NEWIPC: 0x8000000, NEWUSER: 0x10000000, NEWPID: 0x20000000, NEWNET: 0x40000000 }
const THREAD_CLONE_FLAGS = 0x3d0f00 // VM|FS|FILES|SIGHAND|THREAD|SYSVSEM|SETTLS|PARENT_SETTID|CHILD_CLEARTID

for (const arch of ARCHES) {
  const program = decode(filterBytes(arch))
  const auditArch = policy.auditArch[arch]
  const run = (nr: number, arg0?: bigint) => evaluate(program, { nr, arch: auditArch, arg0 })

  test(`${arch}: a call from a foreign ABI kills the process whatever its number`, () => {
    for (const nr of [0, 1, 59, 101, 272, 1000]) {
      assert.equal(evaluate(program, { nr, arch: FOREIGN_ARCH[arch] }), RET_KILL_PROCESS, `nr ${nr}`)
    }
  })

  if (arch === 'x86_64') {
    test('x86_64: an x32 syscall number kills the process', () => {
      assert.equal(run(0x40000000 + 101), RET_KILL_PROCESS)
      assert.equal(run(0x40000000), RET_KILL_PROCESS)
    })
  }

  test(`${arch}: every listed syscall is refused with EPERM, io_uring and clone3 with ENOSYS`, () => {
    for (const name of Object.keys(policy.syscalls)) {
      if (policy.argumentFiltered.includes(name)) continue
      const number = policy.syscalls[name]?.[arch === 'x86_64' ? 0 : 1]
      if (number === null || number === undefined) continue
      const expectedErrno = policy.enosys.includes(name) ? ENOSYS : EPERM
      assert.equal(run(number, 0n), errnoAction(expectedErrno), name)
      assert.equal(run(number, 0xffffffffffffffffn), errnoAction(expectedErrno), `${name} with other arguments`)
    }
    assert.deepEqual(policy.enosys, ['clone3', 'io_uring_enter', 'io_uring_register', 'io_uring_setup'])
  })

  test(`${arch}: ordinary syscalls and every unlisted number up to 600 are allowed`, () => {
    for (const [name, nr] of Object.entries(ORDINARY[arch])) assert.equal(run(nr), RET_ALLOW, name)
    const listed = new Set(Object.values(policy.syscalls).map((pair) => pair[arch === 'x86_64' ? 0 : 1]))
    for (let nr = 0; nr < 600; nr++) {
      if (!listed.has(nr)) assert.equal(run(nr, 0xdeadbeefn), RET_ALLOW, `nr ${nr}`)
    }
  })

  test(`${arch}: clone with any namespace flag is refused with EPERM; fork and thread clones are allowed`, () => {
    const clone = syscallNumber(arch, 'clone')
    for (const [flag, value] of Object.entries(CLONE_NEW_FLAGS)) {
      assert.equal(run(clone, BigInt(value | 17)), errnoAction(EPERM), `CLONE_${flag}`)
    }
    assert.equal(run(clone, 17n), RET_ALLOW, 'fork: SIGCHLD only')
    assert.equal(run(clone, BigInt(THREAD_CLONE_FLAGS)), RET_ALLOW, 'pthread_create')
    assert.equal(run(clone, BigInt(0x4000 | 0x100 | 17)), RET_ALLOW, 'vfork: VFORK|VM|SIGCHLD')
  })

  test(`${arch}: socket allows AF_UNIX, AF_INET and AF_INET6 and refuses other families with EAFNOSUPPORT`, () => {
    const socket = syscallNumber(arch, 'socket')
    for (const family of [1, 2, 10]) assert.equal(run(socket, BigInt(family)), RET_ALLOW, `family ${family}`)
    for (const family of [0, 3, 4, 5, 16 /* netlink */, 17 /* packet */, 38 /* alg */, 40 /* vsock */, 44 /* xdp */, 1 << 16]) {
      assert.equal(run(socket, BigInt(family)), errnoAction(EAFNOSUPPORT), `family ${family}`)
    }
  })

  test(`${arch}: socketpair allows AF_UNIX only and refuses every other family with EAFNOSUPPORT (issue 9, finding 7)`, () => {
    const socketpair = syscallNumber(arch, 'socketpair')
    assert.equal(run(socketpair, 1n), RET_ALLOW, 'AF_UNIX')
    for (const family of [0, 2, 10, 16 /* netlink */, 17 /* packet */, 30 /* tipc */, 38 /* alg */, 40 /* vsock */, 1 << 16]) {
      assert.equal(run(socketpair, BigInt(family)), errnoAction(EAFNOSUPPORT), `family ${family}`)
    }
  })

  test(`${arch}: personality allows PER_LINUX and the query 0xffffffff and refuses ADDR_NO_RANDOMIZE with EPERM`, () => {
    const personality = syscallNumber(arch, 'personality')
    assert.equal(run(personality, 0n), RET_ALLOW)
    assert.equal(run(personality, 0xffffffffn), RET_ALLOW)
    for (const persona of [0x0040000 /* ADDR_NO_RANDOMIZE */, 0x0400000 /* READ_IMPLIES_EXEC */, 0x0006 /* PER_BSD */, 1]) {
      assert.equal(run(personality, BigInt(persona)), errnoAction(EPERM), `0x${persona.toString(16)}`)
    }
  })
}

// ---------------------------------------------------------------------------------------------------
// The kernel's answers: a Python child installs the filter as sandbox/job.py's worker does

const PROBE = String.raw`
import ctypes, errno, json, os, socket, subprocess, sys, threading
import linux, seccomp

libc = ctypes.CDLL(None, use_errno=True)
libc.syscall.restype = ctypes.c_long

def name(code):
    return "ok" if code == 0 else errno.errorcode.get(code, str(code))

def raw(nr, *args):
    ctypes.set_errno(0)
    result = libc.syscall(ctypes.c_long(nr), *[ctypes.c_ulong(a) for a in args])
    return (0 if result != -1 else ctypes.get_errno()), result

def attempt(fn):
    try:
        fn()
        return "ok"
    except OSError as error:
        return name(error.errno)

def open_socket(family, kind):
    socket.socket(family, kind).close()

def ptrace_own_child():
    child = os.fork()
    if child == 0:
        import time
        time.sleep(30)
        os._exit(0)
    try:
        code, _ = raw(101, 16, child, 0, 0)  # PTRACE_ATTACH
        return name(code)
    finally:
        os.kill(child, 9)
        os.waitpid(child, 0)

def clone_new_user():
    code, result = raw(56, linux.CLONE_NEWUSER | 17, 0, 0, 0, 0)
    if result == 0:
        os._exit(0)
    if result > 0:
        os.waitpid(result, 0)
    return name(code)

def fork_works():
    child = os.fork()
    if child == 0:
        os._exit(7)
    _, status = os.waitpid(child, 0)
    return "ok" if os.WEXITSTATUS(status) == 7 else "bad status %d" % status

def thread_works():
    box = []
    thread = threading.Thread(target=lambda: box.append(threading.get_ident()))
    thread.start()
    thread.join()
    return "ok" if box and box[0] != threading.get_ident() else "no thread ran"

if sys.argv[1] == "filtered":
    linux.prctl(linux.PR_SET_NO_NEW_PRIVS, 1)
    linux.install_seccomp(seccomp.build_filter("x86_64"))

out = {
    # before unshare: without the filter, unshare leaves this process unmapped in a new user namespace
    "clone_newuser": clone_new_user(),
    "unshare": attempt(lambda: linux.unshare(linux.CLONE_NEWUSER | linux.CLONE_NEWNS)),
    # a bad source pointer: EFAULT from the kernel itself, before any permission check
    "mount": name(raw(165, 1, 1, 1, 0, 0)[0]),
    "ptrace": ptrace_own_child(),
    "socket_netlink": attempt(lambda: open_socket(socket.AF_NETLINK, socket.SOCK_RAW)),
    "socket_packet": attempt(lambda: open_socket(socket.AF_PACKET, socket.SOCK_DGRAM)),
    "socketpair_inet": attempt(lambda: [s.close() for s in socket.socketpair(socket.AF_INET, socket.SOCK_STREAM)]),
    "socketpair_tipc": name(raw(53, 30, 1, 0, 0)[0]),
    "socketpair_unix": attempt(lambda: [s.close() for s in socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)]),
    "io_uring_setup": name(raw(425, 1, 0)[0]),
    "clone3": name(raw(435, 0, 0)[0]),
    "personality_no_randomize": name(raw(135, 0x0040000)[0]),
    "personality_query": name(raw(135, 0xFFFFFFFF)[0]),
    "fork": fork_works(),
    "thread": thread_works(),
    "socket_inet": attempt(lambda: open_socket(socket.AF_INET, socket.SOCK_STREAM)),
    "socket_unix": attempt(lambda: open_socket(socket.AF_UNIX, socket.SOCK_STREAM)),
    "subprocess": "ok" if subprocess.run(["true"]).returncode == 0 else "failed",
}
print(json.dumps(out))
`

function seccompUnavailable (): string | false {
  if (os.arch() !== 'x64') return `the kernel check runs on x86_64 only (this is ${os.arch()})`
  const status = readFileSync('/proc/self/status', 'utf8')
  if (!/^Seccomp:/m.test(status)) return 'this kernel has no seccomp'
  return false
}

function probe (mode: 'filtered' | 'control'): Record<string, string> {
  return JSON.parse(runPython(PROBE, [mode]))
}

test('under the installed x86_64 filter the kernel refuses what the policy denies and allows ordinary work', { skip: seccompUnavailable() }, (t) => {
  const filtered = probe('filtered')
  const expected: Record<string, string> = {
    unshare: 'EPERM',
    mount: 'EPERM',
    ptrace: 'EPERM',
    clone_newuser: 'EPERM',
    socket_netlink: 'EAFNOSUPPORT',
    socket_packet: 'EAFNOSUPPORT',
    socketpair_inet: 'EAFNOSUPPORT',
    socketpair_tipc: 'EAFNOSUPPORT',
    socketpair_unix: 'ok',
    io_uring_setup: 'ENOSYS',
    clone3: 'ENOSYS',
    personality_no_randomize: 'EPERM',
    personality_query: 'ok',
    fork: 'ok',
    thread: 'ok',
    socket_inet: 'ok',
    socket_unix: 'ok',
    subprocess: 'ok',
  }
  assert.deepEqual(filtered, expected)

  // the same probes without the filter show the answers above are the filter's, not this machine's
  if (/^Seccomp:\s+0$/m.test(readFileSync('/proc/self/status', 'utf8'))) {
    const control = probe('control')
    for (const name of ['unshare', 'mount', 'ptrace', 'clone_newuser', 'socket_netlink', 'io_uring_setup', 'clone3', 'personality_no_randomize']) {
      if (control[name] === expected[name]) t.diagnostic(`${name} answers ${control[name]} even without the filter here`)
    }
    assert.equal(control.mount, 'EFAULT', 'without the filter a bad mount pointer is EFAULT')
    assert.equal(control.personality_no_randomize, 'ok')
  } else {
    t.diagnostic('this process already runs under a seccomp filter: the control run is skipped')
  }
})
