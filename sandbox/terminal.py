"""A terminal: one run of a worker that lasts as long as an Open WebUI user's terminal (src/terminal/).

Inside the user's jail this loop starts commands and interactive shells, each on a pseudo-terminal it
opens itself (the worker's own devpts), keeps the commands' output, does the file operations, and moves
bytes over the worker's own control connection as `T` frames (channel number, bytes). Every byte stream
is flow-controlled by credits the server grants: a shell whose output nobody reads stops being read here
(so it blocks on its own terminal), and input waits in the server until the terminal takes it.

The server treats all of this as untrusted: it runs with the user's privileges, next to the user's own
processes. sandbox/README.md describes the messages.
"""

from __future__ import annotations

import codecs
import errno
import fcntl
import json
import os
import resource
import select
import signal
import struct
import termios
import time
from dataclasses import dataclass, field

import frames
import terminal_files
import workdir
from runners import RunOutcome

CTL_FD = 3
READ_CHUNK = 4096
MAX_PENDING_INPUT = 1 << 20
MAX_PROCESSES = 64
TASK_TIMEOUT_S = 30.0
# keystrokes written to a terminal per turn: its line discipline takes at most this much at once anyway
MAX_LINE_DISCIPLINE_WRITE = 1 << 16


@dataclass
class Process:
    """A command (its output kept here, read by offset) or an interactive shell (its output streamed)."""

    id: str
    pid: int
    master: int | None
    channel: int
    label: str
    logged: bool
    credit: int = 0
    pending: bytearray = field(default_factory=bytearray)
    entries: list[str] = field(default_factory=list)
    first_entry: int = 0  # offset of entries[0]: older entries were dropped to stay within the log size
    sealed: int = 0  # entries already read by the server stay as they are; only later ones grow
    log_bytes: int = 0
    exit_code: int | None = None
    signalled: bool = False
    timed_out: bool = False
    decoder: codecs.IncrementalDecoder = field(default_factory=lambda: codecs.getincrementaldecoder("utf-8")(errors="replace"))

    @property
    def running(self) -> bool:
        return self.exit_code is None

    @property
    def status(self) -> str:
        if self.running:
            return "running"
        return "killed" if self.signalled and self.exit_code is not None and self.exit_code < 0 else "done"


@dataclass
class Download:
    fd: int
    credit: int


@dataclass
class Task:
    """A slow file operation (grep, glob, archive) in a child process, so the loop keeps serving."""

    request: int
    pipe: int
    deadline: float
    buffer: bytearray = field(default_factory=bytearray)
    archive_fd: int | None = None
    channel: int | None = None
    window: int = 0
    exited: bool = False


class Terminal:
    def __init__(self, job: dict, reader: frames.FrameReader, base_env: dict[str, str]) -> None:
        settings = job.get("terminal", {})
        self.reader = reader
        self.env = base_env | {str(k): str(v) for k, v in settings.get("env", {}).items()}
        self.max_log_bytes = int(settings.get("max_log_bytes", 1 << 20))
        self.max_reply_bytes = int(settings.get("max_reply_bytes", 4 << 20))
        self.before = workdir.snapshot(workdir.OutputLimits(max_files=1 << 30, max_file_bytes=1 << 62, max_total_bytes=1 << 62))
        self.processes: dict[str, Process] = {}
        self.by_pid: dict[int, Process] = {}
        self.by_channel: dict[int, Process] = {}
        self.downloads: dict[int, Download] = {}
        self.uploads: dict[int, tuple[int, int, str, str | None]] = {}  # channel -> (request, fd, path, error)
        self.tasks: dict[int, Task] = {}
        self.consumed: dict[int, int] = {}
        self.closing = False
        self.wake_r, self.wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)

    # --- the loop ---------------------------------------------------------------------------------------

    def serve(self) -> RunOutcome:
        signal.set_wakeup_fd(self.wake_w)
        signal.signal(signal.SIGCHLD, lambda *_: None)
        # a file past RLIMIT_FSIZE is an error for the operation, not the end of the terminal
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        try:
            for kind, payload in self.reader.buffered_messages():
                self.on_frame(kind, payload)
            while not self.closing:
                self.turn()
        finally:
            signal.set_wakeup_fd(-1)
        return RunOutcome(exit_code=0)

    def turn(self) -> None:
        poller = select.poll()
        poller.register(CTL_FD, select.POLLIN)
        poller.register(self.wake_r, select.POLLIN)
        for process in self.processes.values():
            if process.master is None:
                continue
            events = select.POLLIN if process.logged or process.credit > 0 else 0
            if process.pending:
                events |= select.POLLOUT
            if events:
                poller.register(process.master, events)
        for task in self.tasks.values():
            if task.pipe >= 0:
                poller.register(task.pipe, select.POLLIN)
        pumping = any(download.credit > 0 for download in self.downloads.values())
        timeout_ms = 0 if pumping else (250 if self.tasks else 1000)
        for fd, events in poller.poll(timeout_ms):
            if fd == CTL_FD:
                self.read_control()
            elif fd == self.wake_r:
                self.drain_wakeups()
            else:
                self.on_fd(fd, events)
        self.reap()
        self.pump_downloads()
        self.check_tasks()
        self.send_consumed()

    def read_control(self) -> None:
        try:
            messages = self.reader.read_available()
        except frames.ChannelClosed:
            self.closing = True  # the server went away: the worker exits and its pid namespace with it
            return
        for kind, payload in messages:
            self.on_frame(kind, payload)
            if self.closing:
                return

    def on_frame(self, kind: int, payload: bytes) -> None:
        if kind == frames.TERMINAL:
            (channel,) = frames.CHANNEL.unpack_from(payload)
            self.on_channel_bytes(channel, payload[frames.CHANNEL.size :])
            return
        if kind != frames.MESSAGE:
            raise frames.ProtocolError(f"unexpected frame {chr(kind)!r} in a terminal")
        message = json.loads(payload)
        request = message.get("id")
        try:
            result = self.handle(message)
        except terminal_files.FileOpError as error:
            self.reply(request, error={"status": error.status, "detail": error.detail})
            return
        except (KeyError, TypeError, ValueError) as error:
            self.reply(request, error={"status": 400, "detail": f"bad request: {error}"})
            return
        except OSError as error:
            self.reply(request, error={"status": 400, "detail": os.strerror(error.errno or errno.EIO)})
            return
        if result is not None:
            self.reply(request, ok=result)

    def reply(self, request: object, ok: object = None, error: dict | None = None) -> None:
        if not isinstance(request, int):
            return  # a message that wants no answer (window)
        message = {"re": request, "error": error} if error is not None else {"re": request, "ok": ok}
        data = json.dumps(message, separators=(",", ":")).encode()
        if len(data) > self.max_reply_bytes:
            data = json.dumps({"re": request, "error": {"status": 413, "detail": "The answer is too large; ask for less (a line range, a tail, fewer results)."}}).encode()
        frames.send(CTL_FD, frames.MESSAGE, data)

    def event(self, message: dict) -> None:
        frames.send(CTL_FD, frames.MESSAGE, json.dumps(message, separators=(",", ":")).encode())

    # --- requests ---------------------------------------------------------------------------------------

    def handle(self, message: dict) -> object:
        op = message.get("op")
        files = FILE_OPS.get(str(op))
        if files is not None:
            return files(message)
        if op == "spawn":
            return self.spawn(message)
        if op == "status":
            return self.status(self.process(message), int(message.get("offset") or 0), message.get("tail"))
        if op == "processes":
            return [{"proc": p.id, "command": p.label, "status": p.status, "exit_code": p.exit_code} for p in self.processes.values() if p.logged]
        if op == "signal":
            return self.signal(self.process(message), int(message["signal"]), str(message.get("scope", "group")), message.get("note"))
        if op == "resize":
            process = self.process(message)
            if process.master is not None:
                fcntl.ioctl(process.master, termios.TIOCSWINSZ, struct.pack("HHHH", int(message["rows"]), int(message["cols"]), 0, 0))
            return {}
        if op == "forget":
            self.forget(self.process(message))
            return {}
        if op == "window":
            self.grant(int(message["channel"]), int(message["bytes"]))
            return None
        if op == "upload":
            path, fd = terminal_files.open_upload(message)
            self.uploads[int(message["channel"])] = (int(message["id"]), fd, path, None)
            return None  # answered at upload_end, with the size written
        if op == "upload_end":
            return self.finish_upload(int(message["channel"]), int(message["size"]))
        if op == "download":
            fd, info = terminal_files.open_download(message)
            self.downloads[int(message["channel"])] = Download(fd, int(message["window"]))
            return info
        if op == "drop_channel":
            self.drop_download(int(message["channel"]))
            return None
        if op in ("grep", "glob", "archive"):
            self.start_task(message)
            return None
        if op == "checkpoint":
            return self.checkpoint(message)
        if op == "close":
            self.close()
            return {}
        raise ValueError(f"unknown op {op!r}")

    def process(self, message: dict) -> Process:
        process = self.processes.get(str(message.get("proc")))
        if process is None:
            raise terminal_files.FileOpError(404, "Process not found")
        return process

    def spawn(self, message: dict) -> dict:
        logged = bool(message.get("logged", True))
        if len(self.processes) >= MAX_PROCESSES:
            finished = [p for p in self.processes.values() if not p.running and p.master is None]
            if not finished:
                raise terminal_files.FileOpError(429, f"{MAX_PROCESSES} processes are running or unread in this terminal; kill some first")
            self.forget(finished[0])
        cwd = terminal_files.resolve(message.get("cwd"), terminal_files.HOME)
        if not os.path.isdir(cwd):
            raise terminal_files.FileOpError(404, f"Directory not found: {cwd}")
        env = self.env | {str(k): str(v) for k, v in (message.get("env") or {}).items()} | {"PWD": cwd}
        argv = [str(item) for item in message["argv"]]
        master, slave = os.openpty()
        fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", int(message.get("rows", 24)), int(message.get("cols", 80)), 0, 0))
        pid = os.fork()
        if pid == 0:
            _exec_child(argv, env, cwd, slave, message.get("cpu_seconds"))
        os.close(slave)
        os.set_blocking(master, False)
        process = Process(id=str(message["proc"]), pid=pid, master=master, channel=int(message["channel"]), label=str(message.get("label", "")),
                          logged=logged, credit=int(message.get("window", 0)))
        self.processes[process.id] = process
        self.by_pid[pid] = process
        self.by_channel[process.channel] = process
        return {"pid": pid}

    def status(self, process: Process, offset: int, tail: object) -> dict:
        start = max(offset, process.first_entry)
        entries = process.entries[start - process.first_entry :]
        truncated = offset < process.first_entry
        if tail is not None and len(entries) > int(tail):
            entries = entries[len(entries) - int(tail) :]
            truncated = True
        next_offset = process.first_entry + len(process.entries)
        process.sealed = next_offset
        return {
            "status": process.status,
            "exit_code": process.exit_code,
            "output": entries,
            "truncated": truncated,
            "next_offset": next_offset,
            "timed_out": process.timed_out,
        }

    def signal(self, process: Process, signum: int, scope: str, note: object) -> dict:
        if not process.running:
            return {"status": process.status}
        process.signalled = process.signalled or signum in (signal.SIGTERM, signal.SIGKILL)
        if isinstance(note, str):
            process.timed_out = True
            self.append(process, f"\r\n{note}\r\n")
        if scope == "session":
            _signal_session(process.pid, signum)
        else:
            _signal_group(process.pid, signum)
        return {"status": process.status}

    def forget(self, process: Process) -> None:
        if process.running:
            _signal_session(process.pid, signal.SIGKILL)
        self.close_master(process)
        self.processes.pop(process.id, None)
        self.by_channel.pop(process.channel, None)

    def grant(self, channel: int, count: int) -> None:
        if channel in self.by_channel:
            self.by_channel[channel].credit += count
        elif channel in self.downloads:
            self.downloads[channel].credit += count

    def on_channel_bytes(self, channel: int, data: bytes) -> None:
        process = self.by_channel.get(channel)
        if process is not None:
            if process.master is not None and len(process.pending) + len(data) <= MAX_PENDING_INPUT:
                process.pending += data
            else:
                self.consumed[channel] = self.consumed.get(channel, 0) + len(data)  # gone: nothing will take it
            return
        upload = self.uploads.get(channel)
        if upload is None:
            return
        request, fd, path, error = upload
        if error is None:
            try:
                frames.write_all(fd, data)
            except OSError as failure:
                self.uploads[channel] = (request, fd, path, terminal_files.os_error(failure, path).detail)

    def finish_upload(self, channel: int, size: int) -> object:
        upload = self.uploads.pop(channel, None)
        if upload is None:
            raise terminal_files.FileOpError(400, "No such upload")
        request, fd, path, error = upload
        written = os.fstat(fd).st_size
        os.close(fd)
        if error is not None or written != size:
            try:
                os.unlink(path)
            except OSError:
                pass
            self.reply(request, error={"status": 413 if error is not None else 400, "detail": error or "The upload was cut short"})
        else:
            self.reply(request, ok={"path": path, "size": written})
        return {}

    # --- processes and their terminals ------------------------------------------------------------------

    def on_fd(self, fd: int, events: int) -> None:
        process = next((p for p in self.processes.values() if p.master == fd), None)
        if process is not None:
            if events & select.POLLOUT:
                self.write_input(process)
            if events & (select.POLLIN | select.POLLHUP | select.POLLERR):
                self.read_output(process)
            return
        task = next((t for t in self.tasks.values() if t.pipe == fd), None)
        if task is not None:
            chunk = os.read(fd, 65536)
            if chunk and len(task.buffer) < self.max_reply_bytes:
                task.buffer += chunk
            elif not chunk:
                os.close(fd)
                task.pipe = -1

    def write_input(self, process: Process) -> None:
        if process.master is None:
            return
        try:
            written = os.write(process.master, process.pending[:MAX_LINE_DISCIPLINE_WRITE])
        except BlockingIOError:
            return
        except OSError:
            written = len(process.pending)  # the terminal is gone: what waited for it is dropped
        del process.pending[:written]
        self.consumed[process.channel] = self.consumed.get(process.channel, 0) + written

    def read_output(self, process: Process, drain: bool = False) -> None:
        while process.master is not None:
            room = READ_CHUNK if process.logged else min(READ_CHUNK, process.credit)
            if room <= 0:
                return
            try:
                chunk = os.read(process.master, room)
            except BlockingIOError:
                return
            except OSError:
                chunk = b""  # EIO: every holder of the terminal's other end has closed it
            if not chunk:
                self.close_master(process)
                if not process.logged:
                    self.event({"ev": "eof", "channel": process.channel})
                return
            if process.logged:
                self.append(process, process.decoder.decode(chunk))
            else:
                process.credit -= len(chunk)
                frames.send_channel(CTL_FD, process.channel, chunk)
            if not drain:
                return

    def append(self, process: Process, text: str) -> None:
        if not text:
            return
        last = len(process.entries) - 1
        if last >= 0 and process.first_entry + last >= process.sealed and len(process.entries[last]) < READ_CHUNK:
            process.entries[last] += text
        else:
            process.entries.append(text)
        process.log_bytes += len(text)
        while process.log_bytes > self.max_log_bytes and len(process.entries) > 1:
            process.log_bytes -= len(process.entries.pop(0))
            process.first_entry += 1

    def close_master(self, process: Process) -> None:
        if process.master is not None:
            os.close(process.master)
            process.master = None

    def drain_wakeups(self) -> None:
        try:
            while os.read(self.wake_r, 4096):
                pass
        except BlockingIOError:
            pass

    def reap(self) -> None:
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            process = self.by_pid.pop(pid, None)
            if process is not None:
                process.exit_code = os.WEXITSTATUS(status) if os.WIFEXITED(status) else -os.WTERMSIG(status)
                # what the command wrote before it exited is in its terminal's buffer: take it before saying so
                if process.logged:
                    self.read_output(process, drain=True)
                self.event({"ev": "exited", "proc": process.id, "exit_code": process.exit_code, "status": process.status})
                continue
            task = self.tasks.get(pid)
            if task is not None:
                task.exited = True
            # anything else was an orphan the jail's pid 1 inherits (a nohup child): reaped, nothing to say

    # --- downloads, uploads and slow operations ---------------------------------------------------------

    def pump_downloads(self) -> None:
        for channel, download in list(self.downloads.items()):
            while download.credit > 0:
                chunk = os.read(download.fd, min(download.credit, frames.CHUNK))
                if not chunk:
                    self.drop_download(channel)
                    self.event({"ev": "eof", "channel": channel})
                    break
                download.credit -= len(chunk)
                frames.send_channel(CTL_FD, channel, chunk)

    def drop_download(self, channel: int) -> None:
        download = self.downloads.pop(channel, None)
        if download is not None:
            os.close(download.fd)

    def start_task(self, message: dict) -> None:
        archive_fd = os.memfd_create("warden-archive", os.MFD_CLOEXEC) if message["op"] == "archive" else None
        read_end, write_end = os.pipe2(os.O_CLOEXEC)
        pid = os.fork()
        if pid == 0:
            os.close(read_end)
            _run_task(message, write_end, archive_fd)
        os.close(write_end)
        self.tasks[pid] = Task(request=int(message["id"]), pipe=read_end, deadline=time.monotonic() + TASK_TIMEOUT_S,
                               archive_fd=archive_fd, channel=message.get("channel"), window=int(message.get("window", 0)))

    def check_tasks(self) -> None:
        now = time.monotonic()
        for pid, task in list(self.tasks.items()):
            if task.exited and task.pipe < 0:
                del self.tasks[pid]
                self.finish_task(task)
            elif now > task.deadline:
                os.kill(pid, signal.SIGKILL)
                task.deadline = float("inf")
                task.buffer = bytearray(json.dumps({"error": {"status": 400, "detail": f"The operation took longer than {TASK_TIMEOUT_S:.0f} s and was stopped; narrow it (a path, a simpler pattern)."}}).encode())

    def finish_task(self, task: Task) -> None:
        try:
            result = json.loads(bytes(task.buffer))
        except ValueError:
            result = {"error": {"status": 400, "detail": "The operation failed."}}
        if task.archive_fd is not None and "ok" in result and task.channel is not None:
            size = os.fstat(task.archive_fd).st_size
            os.lseek(task.archive_fd, 0, os.SEEK_SET)
            self.downloads[int(task.channel)] = Download(task.archive_fd, task.window)
            self.reply(task.request, ok={**result["ok"], "size": size, "mime": "application/zip"})
            return
        if task.archive_fd is not None:
            os.close(task.archive_fd)
        self.reply(task.request, ok=result.get("ok"), error=result.get("error"))

    def send_consumed(self) -> None:
        for channel, count in self.consumed.items():
            if count > 0:
                self.event({"ev": "consumed", "channel": channel, "bytes": count})
        self.consumed.clear()

    # --- the home, and the end ----------------------------------------------------------------------------

    def checkpoint(self, message: dict) -> dict:
        """New and changed files of the home go to the server (O/D/E frames), then the names deleted since the last one."""
        limits = workdir.OutputLimits(max_files=int(message["max_files"]), max_file_bytes=int(message["max_file_bytes"]), max_total_bytes=int(message["max_total_bytes"]))
        collected = workdir.collect_outputs(CTL_FD, self.before, limits, send=True)
        self.before = collected.seen
        return {"deleted": collected.deleted, "notes": collected.notes, "files": collected.count}

    def close(self) -> None:
        """Every process of the jail ends; the worker then reports done and exits."""
        self.closing = True
        for process in self.processes.values():
            self.close_master(process)


def _exec_child(argv: list[str], env: dict[str, str], cwd: str, slave: int, cpu_seconds: object) -> None:
    """In the forked child: a session of its own whose controlling terminal is `slave`, then exec."""
    try:
        signal.set_wakeup_fd(-1)
        os.setsid()
        fcntl.ioctl(slave, termios.TIOCSCTTY, 0)
        for fd in (0, 1, 2):
            os.dup2(slave, fd)
        # the worker's connections (fds 3, 4, 5) and everything else stay with the worker
        os.closerange(3, 1 << 20)
        for signum in (signal.SIGPIPE, signal.SIGXFSZ, signal.SIGINT, signal.SIGCHLD, signal.SIGTERM, signal.SIGHUP):
            signal.signal(signum, signal.SIG_DFL)
        signal.pthread_sigmask(signal.SIG_SETMASK, [])
        os.chdir(cwd)
        if cpu_seconds is not None:
            _, hard = resource.getrlimit(resource.RLIMIT_CPU)
            seconds = int(cpu_seconds)
            resource.setrlimit(resource.RLIMIT_CPU, (min(seconds, hard) if hard != resource.RLIM_INFINITY else seconds, hard))
        os.execve(argv[0], argv, env)
    except BaseException as error:  # noqa: BLE001 - tell the terminal, never return into the loop
        try:
            os.write(2, f"{argv[0]}: {error}\r\n".encode())
        finally:
            os._exit(127)


def _run_task(message: dict, out: int, archive_fd: int | None) -> None:
    try:
        signal.set_wakeup_fd(-1)
        op = message["op"]
        if op == "grep":
            result: dict = {"ok": terminal_files.grep(message)}
        elif op == "glob":
            result = {"ok": terminal_files.glob_search(message)}
        else:
            result = {"ok": terminal_files.archive(message, archive_fd if archive_fd is not None else -1)}
    except terminal_files.FileOpError as error:
        result = {"error": {"status": error.status, "detail": error.detail}}
    except OSError as error:
        failure = terminal_files.os_error(error, str(getattr(error, "filename", "") or ""))
        result = {"error": {"status": failure.status, "detail": failure.detail}}
    except BaseException as error:  # noqa: BLE001
        result = {"error": {"status": 400, "detail": f"{type(error).__name__}: {error}"}}
    try:
        frames.write_all(out, json.dumps(result, separators=(",", ":")).encode())
    finally:
        os._exit(0)


def _signal_group(pid: int, signum: int) -> None:
    try:
        os.killpg(pid, signum)
    except ProcessLookupError:
        pass


def _signal_session(sid: int, signum: int) -> None:
    """Every process of the session `sid` (a shell and the jobs it put in process groups of their own)."""
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat", "rb") as f:
                fields = f.read().rsplit(b")", 1)[1].split()
            if int(fields[3]) == sid:
                os.kill(int(name), signum)
        except (OSError, IndexError, ValueError):
            continue


FILE_OPS = {
    "list_dir": terminal_files.list_dir,
    "is_directory": terminal_files.is_directory,
    "stat": terminal_files.stat_file,
    "display": terminal_files.display,
    "read_text": terminal_files.read_text,
    "write": terminal_files.write,
    "replace": terminal_files.replace,
    "mkdir": terminal_files.make_dir,
    "delete": terminal_files.delete,
    "move": terminal_files.move,
}


def serve(job: dict, reader: frames.FrameReader, base_env: dict[str, str]) -> RunOutcome:
    return Terminal(job, reader, base_env).serve()
