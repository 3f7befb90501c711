"""The zygote: a warm interpreter inside the jail that forks one isolated worker per request of the server.

It speaks JSON lines with the server on fd 3 and never runs user code itself, nor touches a worker's
channels: each worker opens its own connections to the server (channel.py) before it isolates itself.
So nothing a worker does to its descriptors reaches the zygote, and the zygote's only reason to exit is
the server closing fd 3. Every operation on a worker's behalf handles its own errors.

See sandbox/README.md for the protocol.
"""

from __future__ import annotations

import fcntl
import gc
import json
import os
import selectors
import signal
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import channel  # noqa: E402
import isolation  # noqa: E402
import linux  # noqa: E402
import preload  # noqa: E402
import seccomp  # noqa: E402
import worker  # noqa: E402

CONTROL_FD = 3


class Zygote:
    def __init__(self, config: dict, pending: bytes) -> None:
        self.config = config
        self.worker_config = worker.WorkerConfig.from_zygote(config)
        self.slots: dict[int, int] = {}  # slot -> worker pid
        self.pid_namespace = os.open("/proc/self/ns/pid", os.O_RDONLY | os.O_CLOEXEC)
        self.seccomp_program = seccomp.build_filter()
        self.pending = pending
        self.wakeup_r, self.wakeup_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        signal.set_wakeup_fd(self.wakeup_w)
        signal.signal(signal.SIGCHLD, lambda *_: None)

    def send(self, message: dict) -> None:
        # the only channel the zygote writes to: a failure here means the server is gone
        line = (json.dumps(message, separators=(",", ":")) + "\n").encode()
        view = memoryview(line)
        while view:
            view = view[os.write(CONTROL_FD, view) :]

    def isolation_config(self, slot: int) -> isolation.IsolationConfig:
        c = self.config
        return isolation.IsolationConfig(
            slot_uid=int(c["slot_uid_base"]) + slot,
            workdir_bytes=int(c["workdir_bytes"]),
            tmp_bytes=int(c["tmp_bytes"]),
            shm_bytes=int(c["shm_bytes"]),
            hidden_paths=tuple(c["hidden_paths"]),
            nofile=int(c["nofile"]),
            file_size_bytes=int(c["file_size_bytes"]),
            nproc=int(c["nproc"]),
            seccomp_program=self.seccomp_program,
        )

    def spawn(self, slot: int, token: bytes, cgroup_procs: list[str]) -> None:
        if slot in self.slots:
            self.send({"ev": "spawn_failed", "slot": slot, "message": "slot is busy"})
            return
        # the next child becomes pid 1 of a new pid namespace; switch back right after the fork
        linux.unshare(linux.CLONE_NEWPID)
        try:
            pid = os.fork()
        except OSError as error:
            linux.setns(self.pid_namespace, linux.CLONE_NEWPID)
            self.send({"ev": "spawn_failed", "slot": slot, "message": f"fork failed: {error.strerror}"})
            return
        if pid == 0:
            self.become_worker(slot, token, cgroup_procs)  # never returns
        linux.setns(self.pid_namespace, linux.CLONE_NEWPID)
        self.slots[slot] = pid
        self.send({"ev": "spawned", "slot": slot, "pid": pid})

    def become_worker(self, slot: int, token: bytes, cgroup_procs: list[str]) -> None:
        started = time.monotonic()
        status = 70
        try:
            # first let go of everything of the zygote: its control socket, its wakeup pipe
            signal.set_wakeup_fd(-1)
            for signum in (signal.SIGCHLD, signal.SIGTERM):
                signal.signal(signum, signal.SIG_DFL)
            os.closerange(CONTROL_FD, 1 << 20)
            # Into the slot's cgroup before the real work, so no user byte runs unaccounted. The worker
            # moves itself: a cgroup move waits for an RCU grace period (about 10 ms here), which would
            # otherwise stall the zygote and every spawn behind it.
            for path in cgroup_procs:
                with open(path, "w") as f:
                    f.write("0")
            # park the new sockets above the fds they go to, then put them in place
            ctl, out, err = (_park(fd) for fd in channel.connect(token))
            os.dup2(os.open("/dev/null", os.O_RDONLY), 0)
            os.dup2(out, 1)
            os.dup2(err, 2)
            os.dup2(ctl, worker.CTL_FD, inheritable=False)
            os.dup2(out, worker.OUT_FD, inheritable=False)
            os.dup2(err, worker.ERR_FD, inheritable=False)
            os.closerange(worker.ERR_FD + 1, 1 << 20)
            try:
                isolation.isolate(self.isolation_config(slot))
            except OSError as error:
                worker.fail(f"worker isolation failed: {error}")
                os._exit(72)
            linux.prctl(linux.PR_SET_PDEATHSIG, signal.SIGKILL)
            worker.serve(self.worker_config, (time.monotonic() - started) * 1000)
            status = 0
        except BaseException as error:  # noqa: BLE001 - report, then die; never fall back into the zygote loop
            worker.fail(f"worker error: {type(error).__name__}: {error}")
            try:
                os.write(2, f"worker error: {type(error).__name__}: {error}\n".encode())
            except OSError:
                pass
        finally:
            os._exit(status)

    def reap(self) -> None:
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            slot = next((s for s, p in self.slots.items() if p == pid), None)
            if slot is None:
                continue
            del self.slots[slot]
            self.send(
                {
                    "ev": "exited",
                    "slot": slot,
                    "code": os.WEXITSTATUS(status) if os.WIFEXITED(status) else None,
                    "signal": os.WTERMSIG(status) if os.WIFSIGNALED(status) else None,
                }
            )

    def signal_worker(self, slot: int, signum: int) -> None:
        pid = self.slots.get(slot)
        if pid is not None:
            try:
                os.kill(pid, signum)
            except ProcessLookupError:
                pass

    def handle(self, message: dict) -> None:
        op = message.get("op")
        slot = message.get("slot")
        if not isinstance(slot, int) or slot < 0:
            self.send({"ev": "error", "message": f"bad slot in {op!r}"})
        elif op == "spawn":
            token = bytes.fromhex(str(message.get("token", "")))
            self.spawn(slot, token, [str(path) for path in message.get("cgroup_procs", [])])
        elif op == "kill":
            self.signal_worker(slot, signal.SIGKILL)
        elif op == "interrupt":
            self.signal_worker(slot, signal.SIGINT)
        else:
            self.send({"ev": "error", "message": f"unknown op {op!r}"})

    def read_control(self) -> bool:
        try:
            chunk = os.read(CONTROL_FD, 65536)
        except InterruptedError:
            return True
        if not chunk:
            return False
        self.pending += chunk
        self.handle_pending()
        return True

    def handle_pending(self) -> None:
        while b"\n" in self.pending:
            line, self.pending = self.pending.split(b"\n", 1)
            if not line.strip():
                continue
            try:
                message = json.loads(line)
                if not isinstance(message, dict):
                    raise ValueError("not an object")
            except ValueError as error:
                self.send({"ev": "error", "message": f"unreadable control line: {error}"})
                continue
            try:
                self.handle(message)
            except (ValueError, OSError) as error:
                # one request failing (a bad token, an unshare refused) must not end the others
                self.send({"ev": "error", "message": f"{message.get('op')!r} failed: {error}"})

    def run(self) -> None:
        selector = selectors.DefaultSelector()
        selector.register(CONTROL_FD, selectors.EVENT_READ, "control")
        selector.register(self.wakeup_r, selectors.EVENT_READ, "signal")
        self.send({"ev": "ready", "pid": os.getpid(), "python": sys.version.split()[0], "preloaded": self.config["preload"]})
        self.handle_pending()
        while True:
            for key, _ in selector.select():
                if key.data == "signal":
                    try:
                        os.read(self.wakeup_r, 4096)
                    except BlockingIOError:
                        pass
                    self.reap()
                elif not self.read_control():
                    return  # the server went away: leaving ends the jail and every worker in it
            self.reap()


def _park(fd: int) -> int:
    parked = fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, 64)
    os.close(fd)
    return parked


def read_config() -> tuple[dict, bytes]:
    """The first control line configures the zygote; bytes after it are already the next messages."""
    buffer = b""
    while b"\n" not in buffer:
        chunk = os.read(CONTROL_FD, 65536)
        if not chunk:
            raise SystemExit("control channel closed before configuration")
        buffer += chunk
    line, rest = buffer.split(b"\n", 1)
    return json.loads(line), rest


def main() -> None:
    os.environ.update(worker.ENV)
    config, pending = read_config()
    os.makedirs(worker.ENV["MPLCONFIGDIR"], exist_ok=True)
    preload.seed_matplotlib_cache(worker.ENV["MPLCONFIGDIR"])
    preload.preload(config["preload"])
    gc.freeze()  # keep the warm heap out of the collector, so forked workers do not copy it page by page
    try:
        Zygote(config, pending).run()
    except BrokenPipeError:
        pass  # the server went away while the zygote reported to it


if __name__ == "__main__":
    main()
