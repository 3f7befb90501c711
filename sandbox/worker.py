"""A worker's life after it isolated itself: report ready, then serve jobs on its control socket.

A job's `keep` says whether the worker waits for another job afterwards (a live worker: a Jupyter kernel, a
paused tool-calling run) or exits (a single-use worker: every /exec). Each run ends with a DONE frame and a
fresh random marker written on stdout and stderr after the run's last byte, which tells the server where
the run's output ends. Everything after the user's code started runs with the user's privileges, so the
server treats these frames as untrusted.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import signal
import sys
import time
from dataclasses import dataclass

import artifacts
import cells
import frames
import prepared
import runners
import terminal
import tools
import workdir

CTL_FD, OUT_FD, ERR_FD = 3, 4, 5  # private dups: user code closing fd 1 or 2 cannot hide the run's end
BASH = "/bin/bash"
ENV = {
    "PATH": "/usr/local/bin:/usr/bin:/bin",
    "HOME": "/tmp",
    "TMPDIR": "/tmp",
    "LANG": "C.UTF-8",
    "PWD": workdir.WORKDIR,
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
class WorkerConfig:
    limits: workdir.OutputLimits
    max_message_bytes: int

    @staticmethod
    def from_zygote(config: dict) -> "WorkerConfig":
        return WorkerConfig(
            limits=workdir.OutputLimits(
                max_files=int(config["max_output_files"]),
                max_file_bytes=int(config["max_output_file_bytes"]),
                max_total_bytes=int(config["max_output_total_bytes"]),
            ),
            max_message_bytes=int(config["max_message_bytes"]),
        )


def _reset_std_streams() -> None:
    def stream(fd: int) -> io.TextIOWrapper:
        raw = io.FileIO(fd, "w", closefd=False)
        return io.TextIOWrapper(io.BufferedWriter(raw), encoding="utf-8", errors="backslashreplace", line_buffering=True)

    sys.stdin = sys.__stdin__ = io.TextIOWrapper(io.FileIO(0, "r", closefd=False), encoding="utf-8")
    sys.stdout = sys.__stdout__ = stream(1)
    sys.stderr = sys.__stderr__ = stream(2)


def prepare_process() -> None:
    """Everything that does not depend on a job, done before the worker reports ready."""
    os.chdir(workdir.WORKDIR)
    os.makedirs(ENV["MPLCONFIGDIR"], exist_ok=True)
    os.environ.clear()
    os.environ.update(ENV)
    sys.dont_write_bytecode = True
    _reset_std_streams()


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


def serve(config: WorkerConfig, setup_ms: float) -> None:
    """Report ready, then run jobs until one says it is the last or the server closes the channel."""
    prepare_process()
    interrupts = runners.Interrupts()
    reader = frames.FrameReader(CTL_FD, config.max_message_bytes)
    frames.send_json(CTL_FD, frames.READY, {"setup_ms": round(setup_ms, 2)})
    main = runners.new_main_module()
    interpreter: prepared.Prepared | None = None
    while True:
        try:
            job = reader.read_json(frames.JOB)
        except frames.ChannelClosed:
            return
        if job["runner"] == "prepare":
            # an interpreter started ahead of the one job that follows (prepared.py); no user code yet
            interpreter = prepared.Prepared(job["prepare"], ENV | job.get("env", {}))
            frames.send_json(CTL_FD, frames.PREPARED, {"prepare_ms": round(interpreter.prepare_ms, 2)})
            continue
        run_job(job, reader, config, main, interrupts, interpreter)
        if not job.get("keep"):
            return


def run_job(job: dict, reader: frames.FrameReader, config: WorkerConfig, main, interrupts: runners.Interrupts, interpreter: prepared.Prepared | None = None) -> None:
    started = time.monotonic()
    keep = bool(job.get("keep"))
    workdir.stage_inputs(reader, job.get("files", []))
    exchange = job.get("artifacts") or {}
    artifacts.stage(reader, exchange.get("provide") or [])
    before = workdir.snapshot(config.limits) if job.get("collect", True) else {}
    frames.send(CTL_FD, frames.STARTED)
    runners.limit_cpu(int(job["cpu_seconds"]), keep_hard_limit=keep)
    interrupts.pending = False
    args = [str(arg) for arg in job.get("args", [])]
    tool_list = job.get("tools") or []
    broker = tools.Broker(send_message, reader) if tool_list else None
    if job["runner"] == "python" and broker is not None:
        tools.install_python_stubs(main.__dict__, tool_list, broker)
        outcome = runners.run_python(job["code"], args, main, interrupts)
    elif job["runner"] == "steps" and broker is not None:
        env = ENV | job.get("env", {}) | tools.prepare_bash_stubs(tool_list)
        server = tools.BashToolServer(broker, tool_list)
        try:
            outcome = runners.run_steps(job["steps"], job["code"], job["source_file"], args, env, interrupts, server)
        finally:
            server.close()
    elif job["runner"] == "terminal":
        # an Open WebUI user's terminal: commands, shells and file operations until the server closes it
        outcome = terminal.serve(job, reader, ENV | {"HOME": workdir.WORKDIR})
    elif job["runner"] == "python" and job.get("cell"):
        sync = SyncedSender(bytes.fromhex(str(job["sync_seed"])))
        outcome = cells.run_cell(job["code"], main, interrupts, sync.send, int(job.get("execution_count", 0)))
    elif job["runner"] == "python":
        outcome = runners.run_python(job["code"], args, main, interrupts)
    elif job["runner"] == "steps" and interpreter is not None and interpreter.takes(job):
        outcome = interpreter.run(job["code"], job["source_file"], args, job["steps"], int(job["cpu_seconds"]), interrupts)
    elif job["runner"] == "steps":
        capture = exchange.get("capture")
        after_build = None if not capture else lambda: artifacts.capture(CTL_FD, [str(name) for name in capture], int(exchange["max_bytes"]))
        outcome = runners.run_steps(job["steps"], job["code"], job["source_file"], args, ENV | job.get("env", {}), interrupts, after_build=after_build)
    else:
        raise frames.ProtocolError(f"unknown runner {job['runner']!r}")
    if not keep:
        stop_leftover_processes()
    succeeded = outcome.exit_code == 0 and outcome.signal is None
    # a kernel's files stay in its /mnt/data between cells; nothing is collected after each one
    collected = workdir.collect_outputs(CTL_FD, before, config.limits, send=succeeded) if job.get("collect", True) else workdir.Collected()
    # the server chose this run's marker and watches for it: the run's output ends where it appears
    marker = bytes.fromhex(str(job["marker"]))
    frames.send_json(
        CTL_FD,
        frames.DONE,
        {
            "exit_code": outcome.exit_code,
            "signal": outcome.signal,
            "failed_step": outcome.failed_step,
            "step_timed_out": outcome.step_timed_out,
            "prepared": outcome.prepared,
            "interrupted": outcome.interrupted,
            "deleted": collected.deleted if succeeded else [],
            "notes": collected.notes,
            "discarded": 0 if succeeded else collected.count,
            "run_ms": round((time.monotonic() - started) * 1000, 2),
            "marker": marker.hex(),
        },
    )
    for fd in (OUT_FD, ERR_FD):
        try:
            frames.write_all(fd, marker)
        except OSError:
            pass  # the code shut its own stream: only its own run loses the rest of its output


def fail(message: str) -> None:
    try:
        frames.send_json(CTL_FD, frames.FAILED, {"message": message})
    except OSError:
        pass


class SyncedSender:
    """Messages that keep their place among stdout and stderr.

    Output and messages travel on different connections, so before each message the i-th sync marker of
    the run goes on stdout and stderr, and the message names i: the server puts the message after the
    output written before it (src/pool/protocol.ts syncMarker derives the same markers from the seed).
    """

    def __init__(self, seed: bytes) -> None:
        self.seed = seed
        self.index = 0

    def send(self, message: dict) -> None:
        runners.flush_std_streams()
        marker = hashlib.sha256(self.seed + self.index.to_bytes(4, "big")).digest()[:16]
        for fd in (OUT_FD, ERR_FD):
            try:
                frames.write_all(fd, marker)
            except OSError:
                pass
        send_message({**message, "sync": self.index})
        self.index += 1


def send_message(message: dict) -> None:
    """A JSON message from the running code to the server (tool calls, display data)."""
    frames.send(CTL_FD, frames.MESSAGE, json.dumps(message, separators=(",", ":")).encode())
