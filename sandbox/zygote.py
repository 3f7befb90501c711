"""The zygote: a warm interpreter inside the jail that forks one isolated worker per execution.

It speaks JSON lines with the server on fd 3 and never runs user code itself. Each worker slot has three
sockets inherited from the server (control, stdout, stderr) starting at fd 4; a worker receives its slot's
sockets and nothing else. When a worker has exited (its whole pid namespace is gone by then), the zygote
writes a random fence on the slot's three sockets and reports it, so the server knows where that worker's
bytes end before the slot is used again.

See sandbox/README.md for the protocol.
"""

from __future__ import annotations

import errno
import gc
import io
import json
import os
import selectors
import signal
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import frames  # noqa: E402
import isolation  # noqa: E402
import job  # noqa: E402
import linux  # noqa: E402
import seccomp  # noqa: E402

CONTROL_FD = 3
FIRST_SLOT_FD = 4
# a matplotlib font cache built into the image (Dockerfile): copied into the zygote's writable config
# dir, it saves the ~1 s matplotlib otherwise spends scanning fonts at every zygote start
PREBUILT_MATPLOTLIB_CACHE = "/usr/local/share/warden/matplotlib"


def slot_fds(slot: int) -> tuple[int, int, int]:
    base = FIRST_SLOT_FD + 3 * slot
    return base, base + 1, base + 2


class Zygote:
    def __init__(self, config: dict, pending: bytes) -> None:
        self.config = config
        self.slots: dict[int, int] = {}  # slot -> worker pid
        self.pid_namespace = os.open("/proc/self/ns/pid", os.O_RDONLY | os.O_CLOEXEC)
        self.seccomp_program = seccomp.build_filter()
        self.pending = pending
        self.wakeup_r, self.wakeup_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        signal.set_wakeup_fd(self.wakeup_w)
        signal.signal(signal.SIGCHLD, lambda *_: None)

    def send(self, message: dict) -> None:
        frames.write_all(CONTROL_FD, (json.dumps(message, separators=(",", ":")) + "\n").encode())

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

    def spawn(self, slot: int, cgroup_procs: list[str]) -> None:
        if slot in self.slots:
            self.send({"ev": "spawn_failed", "slot": slot, "message": "slot is busy"})
            return
        # the next child becomes pid 1 of a new pid namespace; switch back right after the fork
        linux.unshare(linux.CLONE_NEWPID)
        pid = os.fork()
        if pid == 0:
            self.become_worker(slot, cgroup_procs)  # never returns
        linux.setns(self.pid_namespace, linux.CLONE_NEWPID)
        self.slots[slot] = pid
        self.send({"ev": "spawned", "slot": slot, "pid": pid})

    def become_worker(self, slot: int, cgroup_procs: list[str]) -> None:
        started = time.monotonic()
        status = 70
        try:
            # first let go of the zygote's sockets: nothing of this process may ever reach them
            self._take_slot_fds(slot)
            signal.set_wakeup_fd(-1)
            for signum in (signal.SIGCHLD, signal.SIGTERM, signal.SIGINT):
                signal.signal(signum, signal.SIG_DFL)
            # Into the slot's cgroup before the real work, so no user byte runs unaccounted. The worker
            # moves itself: a cgroup move waits for an RCU grace period (about 10 ms here), which would
            # otherwise stall the zygote and every spawn behind it.
            for path in cgroup_procs:
                with open(path, "w") as f:
                    f.write("0")
            try:
                isolation.isolate(self.isolation_config(slot))
            except OSError as error:
                job.fail(f"worker isolation failed: {error}")
                os._exit(72)
            linux.prctl(linux.PR_SET_PDEATHSIG, signal.SIGKILL)
            job.serve(job.job_limits_from(self.config), (time.monotonic() - started) * 1000)
            status = 0
        except BaseException as error:  # noqa: BLE001 - report, then die; never fall back into the zygote loop
            job.fail(f"worker error: {type(error).__name__}: {error}")
        finally:
            os._exit(status)

    @staticmethod
    def _take_slot_fds(slot: int) -> None:
        ctl, out, err = slot_fds(slot)
        for source, parking in ((ctl, 1000), (out, 1001), (err, 1002)):
            os.dup2(source, parking)
        null = os.open("/dev/null", os.O_RDONLY)
        os.dup2(null, 0)
        os.dup2(1001, 1)
        os.dup2(1002, 2)
        os.dup2(1000, job.CTL_FD, inheritable=False)
        os.dup2(1001, job.OUT_FD, inheritable=False)
        os.dup2(1002, job.ERR_FD, inheritable=False)
        os.closerange(job.ERR_FD + 1, 1 << 20)

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
            fence = os.urandom(16)
            for fd in slot_fds(slot):
                frames.write_all(fd, fence)
            self.send(
                {
                    "ev": "exited",
                    "slot": slot,
                    "code": os.WEXITSTATUS(status) if os.WIFEXITED(status) else None,
                    "signal": os.WTERMSIG(status) if os.WIFSIGNALED(status) else None,
                    "fence": fence.hex(),
                }
            )

    def kill(self, slot: int) -> None:
        pid = self.slots.get(slot)
        if pid is not None:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass

    def handle(self, message: dict) -> None:
        op = message.get("op")
        if op == "spawn":
            self.spawn(int(message["slot"]), list(message.get("cgroup_procs", [])))
        elif op == "kill":
            self.kill(int(message["slot"]))
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
            if line.strip():
                self.handle(json.loads(line))

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


def preload(modules: list[str]) -> None:
    """Import the data stack once, so that every forked worker starts with it loaded."""
    for name in modules:
        __import__(name)
    if "pandas" in modules:
        import pandas

        pandas.DataFrame({"a": [1, 2]}).describe()
    if "matplotlib" in modules:
        warm_plotting(with_pandas="pandas" in modules)


def warm_plotting(with_pandas: bool) -> None:
    """Draw one small plot with text into a PNG in memory.

    The first plot of a process loads pandas' plotting module, the text layout and the PNG writer: about
    20 ms of every worker's first `savefig`, paid here once instead.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.font_manager
    import matplotlib.pyplot as plt

    # A cached font keeps its file open, and a worker closes every descriptor it did not get from its
    # slot: a font cached here would then be read through a closed (or reused) descriptor. Warm up only
    # where the cache can be emptied again (a private matplotlib API, so checked, not assumed).
    clear_font_cache = getattr(getattr(matplotlib.font_manager, "_get_font", None), "cache_clear", None)
    if clear_font_cache is None:
        return
    try:
        figure, axes = plt.subplots()
        if with_pandas:
            import pandas

            pandas.DataFrame({"a": [1, 2]}).plot(ax=axes, title="warm")
        else:
            axes.plot([1, 2])
            axes.set_title("warm")
        figure.savefig(io.BytesIO(), format="png")
    finally:
        plt.close("all")
        clear_font_cache()
        gc.collect()


def seed_matplotlib_cache(config_dir: str) -> None:
    if not os.path.isdir(PREBUILT_MATPLOTLIB_CACHE):
        return
    import shutil

    for name in os.listdir(PREBUILT_MATPLOTLIB_CACHE):
        if name.startswith("fontlist") and name.endswith(".json"):
            shutil.copyfile(os.path.join(PREBUILT_MATPLOTLIB_CACHE, name), os.path.join(config_dir, name))


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
    os.environ.update(job.ENV)
    config, pending = read_config()
    os.makedirs(job.ENV["MPLCONFIGDIR"], exist_ok=True)
    seed_matplotlib_cache(job.ENV["MPLCONFIGDIR"])
    preload(config["preload"])
    gc.freeze()  # keep the warm heap out of the collector, so forked workers do not copy it page by page
    zygote = Zygote(config, pending)
    try:
        zygote.run()
    except OSError as error:
        if error.errno != errno.EPIPE:
            raise


if __name__ == "__main__":
    main()
