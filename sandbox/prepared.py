"""An interpreter started before its program is known: a prepared worker (sandbox/README.md).

The server may ask a warm worker to prepare a language. The worker then starts that language's
interpreter at once, exactly as a run would (its own process group, the run's stdout and stderr, stdin on
/dev/null, cwd /mnt/data, the worker's isolation, uid and limits), and the interpreter loads what it can
before it has a program: Node starts, the TypeScript compiler loads, R loads its base packages. It then
waits for its program on a FIFO in the worker's private /tmp. The worker is still single-use: the
interpreter runs the one program of the job that follows, and the worker exits after it.

The program reaches the interpreter one of two ways (the language's descriptor says which):
- `job`: a bootstrap reads the source path, the program's target (what the last step's argv names just
  before the args: Node's script, Java's main class) and the args, each ended by a NUL, from {dir}/job,
  and runs the target as its main program (Node's Module.runMain), the source having been written as in
  a cold run;
- `source`: the source file is itself the FIFO, which the interpreter reads its program from as it would
  read the file (Rscript main.R); the worker writes the `prefix` (which hands over the args) and the code.

Either way the interpreter writes `L` to {dir}/signal once loaded and `S` when the program itself starts.
A failure before `S` is the compile step's (TypeScript's transpile), after it the program's.
"""

from __future__ import annotations

import json
import os
import resource
import select
import signal
import time

import runners

LOAD_TIMEOUT_S = 60.0


class PrepareFailed(Exception):
    pass


class Prepared:
    def __init__(self, spec: dict, env: dict[str, str]) -> None:
        started = time.monotonic()
        self.key = str(spec["key"])
        self.handoff = str(spec["handoff"])
        self.prefix = str(spec.get("prefix", ""))
        # only the `source` handoff names a file, and the name is the language's: nothing of a request is
        # known yet (a prepared worker holds nothing of anyone until its one job)
        self.source = os.path.join(runners.SOURCE_DIR, os.path.basename(str(spec["source_file"]))) if self.handoff == "source" else None
        os.makedirs(runners.SOURCE_DIR, mode=0o700, exist_ok=True)
        for name, content in dict(spec.get("files", {})).items():
            with open(os.path.join(runners.SOURCE_DIR, os.path.basename(name)), "w", encoding="utf-8") as f:
                f.write(str(content))
        signal_path = os.path.join(runners.SOURCE_DIR, "signal")
        os.mkfifo(signal_path, 0o600)
        self.signal_fd = os.open(signal_path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
        # a writer of our own, so the interpreter opening and closing it never makes the FIFO read as ended
        self.signal_keep = os.open(signal_path, os.O_WRONLY | os.O_NONBLOCK | os.O_CLOEXEC)
        # held open for reading and writing: the interpreter's open never blocks, and it reads until we close
        feed = self.source or os.path.join(runners.SOURCE_DIR, "job")
        os.mkfifo(feed, 0o600)
        self.feed_fd: int | None = os.open(feed, os.O_RDWR | os.O_NONBLOCK | os.O_CLOEXEC)
        # a line or two the interpreter runs as soon as it is up (R's `L`): far below a pipe's 64 KiB
        warmup = str(spec.get("warmup", "")).encode()
        if os.write(self.feed_fd, warmup) != len(warmup):
            raise PrepareFailed("the warm-up does not fit the FIFO")
        argv = runners.expand(list(spec["argv"]), [], self.source or "")
        self.pid = os.posix_spawn(
            argv[0],
            argv,
            {**env, **dict(spec.get("env", {}))},
            setpgroup=0,
            setsigdef=(signal.SIGPIPE, signal.SIGXFSZ, signal.SIGCHLD, signal.SIGINT, signal.SIGTERM),
        )
        self.pidfd = os.pidfd_open(self.pid)
        self.signals = b""
        if not self._await_signal(b"L", LOAD_TIMEOUT_S):
            raise PrepareFailed(f"{argv[0]} did not load within {LOAD_TIMEOUT_S:.0f} s or exited")
        self.prepare_ms = (time.monotonic() - started) * 1000

    def is_alive(self) -> bool:
        ready, _, _ = select.select([self.pidfd], [], [], 0)
        return not ready

    def takes(self, job: dict) -> bool:
        """Whether this interpreter runs `job`; if not (another language, or it died), it is cleared away
        so that the job runs as cold steps in a /tmp/.warden without our FIFOs."""
        if self.key == dict(job.get("prepare") or {}).get("key") and self.is_alive():
            return True
        os.killpg(self.pid, signal.SIGKILL)
        _waitpid(self.pid)
        for fd in (self.pidfd, self.signal_fd, self.signal_keep, self.feed_fd):
            if fd is not None:
                os.close(fd)
        for name in ("signal", "job", *([os.path.basename(self.source)] if self.source else [])):
            path = os.path.join(runners.SOURCE_DIR, name)
            if os.path.exists(path) and not os.path.isfile(path):
                os.unlink(path)
        return False

    def run(self, code: str, source_file: str, args: list[str], steps: list[dict], cpu_seconds: int, interrupts: runners.Interrupts) -> runners.RunOutcome:
        """Hand the program over and wait for the interpreter's end, as run_steps waits for a step's."""
        self._limit_cpu(cpu_seconds)
        interrupts.child_group = self.pid
        try:
            if self.handoff == "source":
                payload = self.prefix.replace("{args_items}", ", ".join(json.dumps(arg, ensure_ascii=False) for arg in args)) + code
            else:
                source = runners.write_source(source_file, code)
                run_argv = list(steps[-1]["argv"])
                target = runners.expand(run_argv[run_argv.index("{args}") - 1 : run_argv.index("{args}")], [], source)
                payload = "".join(field + "\0" for field in [source, *target, *args])
            self._write(payload.encode("utf-8", errors="surrogateescape"))
            os.close(self.feed_fd)  # type: ignore[arg-type]
            self.feed_fd = None
            build_timeout = steps[0].get("timeout_ms") if len(steps) > 1 else None
            timed_out = not self._await_signal(b"S", None if build_timeout is None else build_timeout / 1000) and self.is_alive()
            run_timeout = steps[-1].get("timeout_ms")
            if not timed_out:
                timed_out = not _wait_exit(self.pidfd, None if run_timeout is None else run_timeout / 1000)
            if timed_out:
                os.killpg(self.pid, signal.SIGKILL)
            _, status = _waitpid(self.pid)
        finally:
            interrupts.child_group = None
            for fd in (self.pidfd, self.signal_fd, self.signal_keep):
                os.close(fd)
        step = str((steps[-1] if b"S" in self.signals else steps[0])["name"])
        if os.WIFSIGNALED(status):
            return runners.RunOutcome(exit_code=128 + os.WTERMSIG(status), signal=os.WTERMSIG(status), failed_step=step, step_timed_out=timed_out, prepared=True)
        exit_code = os.WEXITSTATUS(status)
        return runners.RunOutcome(exit_code=exit_code, failed_step=step if exit_code != 0 else None, step_timed_out=timed_out, prepared=True)

    def _limit_cpu(self, seconds: int) -> None:
        """RLIMIT_CPU of the interpreter: what it used loading, plus the job's budget."""
        with open(f"/proc/{self.pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        used = (int(fields[11]) + int(fields[12])) // os.sysconf("SC_CLK_TCK")
        try:
            resource.prlimit(self.pid, resource.RLIMIT_CPU, (used + seconds, used + seconds))
        except ProcessLookupError:
            pass

    def _write(self, data: bytes) -> None:
        """All of `data` into the feed, as fast as the interpreter reads it; stops early if it exits."""
        view = memoryview(data)
        while view and self.feed_fd is not None:
            try:
                view = view[os.write(self.feed_fd, view) :]
            except BlockingIOError:
                exited, _, _ = select.select([self.pidfd], [self.feed_fd], [])
                if exited:
                    return  # the interpreter is gone: nobody reads the rest

    def _await_signal(self, wanted: bytes, timeout_s: float | None) -> bool:
        """Wait until the interpreter wrote `wanted` on the signal FIFO; False at the timeout or its exit."""
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        while wanted not in self.signals:
            remaining = None if deadline is None else max(0.0, deadline - time.monotonic())
            ready, _, _ = select.select([self.signal_fd, self.pidfd], [], [], remaining)
            if self.signal_fd in ready:
                try:
                    self.signals += os.read(self.signal_fd, 64)
                except BlockingIOError:
                    pass
                continue
            if ready or remaining == 0.0:
                return wanted in self.signals
        return True


def _wait_exit(pidfd: int, timeout_s: float | None) -> bool:
    while True:
        try:
            ready, _, _ = select.select([pidfd], [], [], timeout_s)
            return bool(ready)
        except InterruptedError:
            continue


def _waitpid(pid: int) -> tuple[int, int]:
    while True:
        try:
            return os.waitpid(pid, 0)
        except InterruptedError:
            continue
