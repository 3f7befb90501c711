"""One execution inside an isolated worker: receive the job, stage inputs, run, collect outputs, report.

Everything after the user's code starts runs with exactly the user's privileges, so a tampered collector can
only send what the code could have written to /mnt/data itself; the server validates every frame anyway.
"""

from __future__ import annotations

import io
import linecache
import os
import resource
import signal
import stat
import sys
import time
import traceback
import types
from dataclasses import dataclass, field

import frames

WORKDIR = "/mnt/data"
CTL_FD, OUT_FD, ERR_FD = 3, 4, 5  # private dups: user code closing fd 1 or 2 cannot hide the fence
BASH = "/bin/bash"
ENV = {
    "PATH": "/usr/local/bin:/usr/bin:/bin",
    "HOME": "/tmp",
    "TMPDIR": "/tmp",
    "LANG": "C.UTF-8",
    "PWD": WORKDIR,
    "SHELL": BASH,
    "USER": "nobody",
    "LOGNAME": "nobody",
    "MPLBACKEND": "Agg",
    "MPLCONFIGDIR": "/tmp/.config/matplotlib",
    "XDG_CACHE_HOME": "/tmp/.cache",
    "PYTHONDONTWRITEBYTECODE": "1",
    "PYTHONUNBUFFERED": "1",
    "OPENBLAS_NUM_THREADS": "1",
    "OMP_NUM_THREADS": "1",
    "MKL_NUM_THREADS": "1",
}


@dataclass(frozen=True)
class OutputLimits:
    max_files: int
    max_file_bytes: int
    max_total_bytes: int
    max_depth: int = 32
    max_entries: int = 20_000


@dataclass
class Collected:
    deleted: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    count: int = 0
    total_bytes: int = 0


def _valid_relative_name(name: str) -> bool:
    if not name or name.startswith("/"):
        return False
    # the same rules as the server's (src/storage/file-names.ts): a name it would refuse must not use up
    # an output slot here
    if any(ord(ch) < 0x20 or ord(ch) == 0x7F for ch in name) or "\\" in name or len(name.encode("utf-8", "surrogatepass")) > 1024:
        return False
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return all(part not in ("", ".", "..") and len(part.encode()) <= 255 for part in name.split("/"))


def stage_inputs(reader: frames.FrameReader, files: list[dict]) -> dict[str, tuple[int, int, int]]:
    """Write each announced input under /mnt/data from the DATA frames that follow the job."""
    snapshot: dict[str, tuple[int, int, int]] = {}
    for entry in files:
        name, size = entry["name"], int(entry["size"])
        if not _valid_relative_name(name):
            raise frames.ProtocolError(f"invalid input name {name!r}")
        path = os.path.join(WORKDIR, name)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644)
        try:
            remaining = size
            while remaining > 0:
                kind, payload = reader.read()
                if kind != frames.DATA or len(payload) > remaining:
                    raise frames.ProtocolError(f"bad data for input {name!r}")
                frames.write_all(fd, payload)
                remaining -= len(payload)
            st = os.fstat(fd)
        finally:
            os.close(fd)
        snapshot[name] = (st.st_ino, st.st_size, st.st_mtime_ns)
    return snapshot


def _reset_std_streams() -> None:
    def stream(fd: int) -> io.TextIOWrapper:
        raw = io.FileIO(fd, "w", closefd=False)
        return io.TextIOWrapper(io.BufferedWriter(raw), encoding="utf-8", errors="backslashreplace", line_buffering=True)

    sys.stdin = sys.__stdin__ = io.TextIOWrapper(io.FileIO(0, "r", closefd=False), encoding="utf-8")
    sys.stdout = sys.__stdout__ = stream(1)
    sys.stderr = sys.__stderr__ = stream(2)


def _limit_cpu(seconds: int) -> None:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    budget = int(usage.ru_utime + usage.ru_stime) + seconds
    resource.setrlimit(resource.RLIMIT_CPU, (budget, budget))


def run_python(code: str, args: list[str], cpu_seconds: int) -> tuple[int, int | None]:
    """Run the code as __main__ of this already warm interpreter; return (exit code, signal)."""
    filename = "<string>"
    linecache.cache[filename] = (len(code), None, code.splitlines(True), filename)
    main = types.ModuleType("__main__")
    main.__dict__["__builtins__"] = __builtins__
    sys.modules["__main__"] = main
    sys.argv = ["-c", *args]
    _limit_cpu(cpu_seconds)
    exit_code = 0
    try:
        exec(compile(code, filename, "exec"), main.__dict__)
    except SystemExit as stop:
        exit_code = _system_exit_code(stop)
    except BaseException as error:  # noqa: BLE001 - the user's exception is the program's outcome
        traceback.print_exception(type(error), error, error.__traceback__.tb_next if error.__traceback__ else None)
        exit_code = 1
    for stream in (sys.stdout, sys.stderr, sys.__stdout__, sys.__stderr__):
        try:
            stream.flush()
        except Exception:  # noqa: BLE001 - user code may have closed or replaced it
            pass
    return exit_code, None


def _system_exit_code(stop: SystemExit) -> int:
    if stop.code is None:
        return 0
    if isinstance(stop.code, int):
        return stop.code & 0xFF
    print(stop.code, file=sys.stderr)
    return 1


def run_bash(code: str, args: list[str], cpu_seconds: int) -> tuple[int, int | None]:
    _limit_cpu(cpu_seconds)
    pid = os.posix_spawn(
        BASH,
        ["bash", "-c", code, "bash", *args],
        ENV,
        setsigdef=(signal.SIGPIPE, signal.SIGXFSZ, signal.SIGCHLD, signal.SIGINT, signal.SIGTERM),
    )
    while True:
        try:
            _, status = os.waitpid(pid, 0)
            break
        except InterruptedError:
            continue
    if os.WIFSIGNALED(status):
        return 128 + os.WTERMSIG(status), os.WTERMSIG(status)
    return os.WEXITSTATUS(status), None


def stop_leftover_processes() -> None:
    """As pid 1 of the worker's pid namespace, kill everything the code left running, then reap it."""
    try:
        os.kill(-1, signal.SIGKILL)
    except ProcessLookupError:
        pass
    while True:
        try:
            os.waitpid(-1, 0)
        except ChildProcessError:
            return
        except InterruptedError:
            continue


def collect_outputs(ctl: int, snapshot: dict[str, tuple[int, int, int]], limits: OutputLimits, send: bool) -> Collected:
    """Send every new or modified regular file under /mnt/data; never follow a link.

    With `send` false (the code failed) the files are only counted: failed executions register nothing.
    """
    result = Collected()
    seen: set[str] = set()
    skipped_names = 0
    skipped_special = 0
    skipped_over_limit = 0
    too_deep = 0
    entries = 0
    stack: list[tuple[str, int]] = [("", 0)]
    while stack:
        relative_dir, depth = stack.pop()
        try:
            with os.scandir(os.path.join(WORKDIR, relative_dir) if relative_dir else WORKDIR) as it:
                listing = sorted(it, key=lambda e: e.name)
        except OSError:
            continue
        for entry in listing:
            entries += 1
            if entries > limits.max_entries:
                result.notes.append(f"stopped scanning /mnt/data after {limits.max_entries} entries")
                stack.clear()
                break
            name = f"{relative_dir}/{entry.name}" if relative_dir else entry.name
            if entry.is_dir(follow_symlinks=False):
                if depth + 1 < limits.max_depth:
                    stack.append((name, depth + 1))
                else:
                    too_deep += 1
                continue
            if not entry.is_file(follow_symlinks=False):
                skipped_special += 1
                continue
            seen.add(name)
            if not _valid_relative_name(name):
                skipped_names += 1
                continue
            fd = _open_regular(entry.path)
            if fd is None:
                skipped_special += 1
                continue
            try:
                st = os.fstat(fd)
                if snapshot.get(name) == (st.st_ino, st.st_size, st.st_mtime_ns):
                    continue  # an input the code did not touch
                if not send:
                    result.count += 1
                    continue
                if (
                    result.count >= limits.max_files
                    or st.st_size > limits.max_file_bytes
                    or result.total_bytes + st.st_size > limits.max_total_bytes
                ):
                    skipped_over_limit += 1
                    continue
                result.total_bytes += _send_file(ctl, fd, name, limits.max_file_bytes)
                result.count += 1
            finally:
                os.close(fd)
    result.deleted = sorted(name for name in snapshot if name not in seen)
    if skipped_over_limit:
        result.notes.append(
            f"{skipped_over_limit} output file(s) were not kept: the limits are {limits.max_files} files, "
            f"{limits.max_file_bytes} bytes per file and {limits.max_total_bytes} bytes in all"
        )
    if skipped_special:
        result.notes.append(f"{skipped_special} symlink(s) or special file(s) in /mnt/data were not kept")
    if too_deep:
        result.notes.append(f"{too_deep} folder(s) more than {limits.max_depth} levels deep in /mnt/data were not searched for files")
    if skipped_names:
        result.notes.append(f"{skipped_names} file(s) with control characters, a backslash or invalid UTF-8 in the name were not kept")
    return result


def _open_regular(path: str) -> int | None:
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError:
        return None
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        return None
    return fd


def _send_file(ctl: int, fd: int, name: str, max_bytes: int) -> int:
    frames.send_json(ctl, frames.OUTPUT, {"name": name})
    sent = 0
    while sent < max_bytes:
        chunk = os.read(fd, min(frames.CHUNK, max_bytes - sent))
        if not chunk:
            break
        frames.send(ctl, frames.DATA, chunk)
        sent += len(chunk)
    frames.send_json(ctl, frames.OUTPUT_END, {"size": sent})
    return sent


def prepare_process() -> None:
    """Everything that does not depend on the job, done before the worker reports ready."""
    os.chdir(WORKDIR)
    os.makedirs(ENV["MPLCONFIGDIR"], exist_ok=True)
    os.environ.clear()
    os.environ.update(ENV)
    sys.dont_write_bytecode = True
    _reset_std_streams()


def serve(limits: OutputLimits, setup_ms: float) -> None:
    """Report ready, run exactly one job, report done, exit."""
    prepare_process()
    reader = frames.FrameReader(CTL_FD)
    frames.send_json(CTL_FD, frames.READY, {"setup_ms": round(setup_ms, 2)})
    job = reader.read_json(frames.JOB)
    started = time.monotonic()
    snapshot = stage_inputs(reader, job.get("files", []))
    frames.send(CTL_FD, frames.STARTED)
    run = run_bash if job["lang"] == "bash" else run_python
    exit_code, signal_number = run(job["code"], list(job.get("args", [])), int(job["cpu_seconds"]))
    stop_leftover_processes()
    succeeded = exit_code == 0 and signal_number is None
    collected = collect_outputs(CTL_FD, snapshot, limits, send=succeeded)
    fence = os.urandom(16)
    frames.send_json(
        CTL_FD,
        frames.DONE,
        {
            "exit_code": exit_code,
            "signal": signal_number,
            "deleted": collected.deleted if succeeded else [],
            "notes": collected.notes,
            "discarded": 0 if succeeded else collected.count,
            "run_ms": round((time.monotonic() - started) * 1000, 2),
            "fence": fence.hex(),
        },
    )
    # on the control socket too: the server holds back a stream's last bytes until more arrive
    for fd in (CTL_FD, OUT_FD, ERR_FD):
        try:
            frames.write_all(fd, fence)
        except OSError:
            pass


def fail(message: str) -> None:
    try:
        frames.send_json(CTL_FD, frames.FAILED, {"message": message})
    except OSError:
        pass


def job_limits_from(config: dict) -> OutputLimits:
    return OutputLimits(
        max_files=int(config["max_output_files"]),
        max_file_bytes=int(config["max_output_file_bytes"]),
        max_total_bytes=int(config["max_output_total_bytes"]),
    )

