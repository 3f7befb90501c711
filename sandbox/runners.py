"""How a worker runs the code of one job: Python in this warm interpreter, anything else as argv steps.

Python is exec'd as `__main__` of the already warm process (the data stack is imported, so this is what
makes it fast). Every other language is a list of steps (compile, then run), each its own process with its
own time limit, as the language's descriptor on the server says (src/exec/languages/).
"""

from __future__ import annotations

import ast
import asyncio
import inspect
import linecache
import os
import resource
import select
import signal
import sys
import time
import traceback
import types
from dataclasses import dataclass
from typing import Any

WORKDIR = "/mnt/data"
# private to the worker's own /tmp: source files and build products, never collected as outputs
SOURCE_DIR = "/tmp/.warden"


@dataclass
class RunOutcome:
    exit_code: int
    signal: int | None = None
    # the step that failed ("compile", "run", ...) for argv jobs; None when every step succeeded
    failed_step: str | None = None
    interrupted: bool = False
    step_timed_out: bool = False
    # the program ran in an interpreter started before the job (prepared.py)
    prepared: bool = False


class Interrupts:
    """SIGINT from the server (through the zygote) interrupts the running code, never the worker.

    A worker is pid 1 of its pid namespace, so a signal reaches it only if it has a handler: it keeps one
    for SIGINT all its life, and what the handler does depends on what is running.
    """

    def __init__(self) -> None:
        self.child_group: int | None = None
        self.python_running = False
        self.pending = False
        signal.signal(signal.SIGINT, self._handle)

    def _handle(self, _signum: int, _frame: object) -> None:
        if self.child_group is not None:
            try:
                os.killpg(self.child_group, signal.SIGINT)
            except ProcessLookupError:
                pass
        elif self.python_running:
            raise KeyboardInterrupt
        else:
            self.pending = True  # between runs: nothing to interrupt


def limit_cpu(seconds: int, keep_hard_limit: bool) -> None:
    """RLIMIT_CPU `seconds` from now. A live worker keeps its hard limit so the next run can set its own."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    budget = int(usage.ru_utime + usage.ru_stime) + seconds
    _, hard = resource.getrlimit(resource.RLIMIT_CPU)
    resource.setrlimit(resource.RLIMIT_CPU, (budget, hard if keep_hard_limit else budget))


def new_main_module() -> types.ModuleType:
    main = types.ModuleType("__main__")
    main.__dict__["__builtins__"] = __builtins__
    return main


def run_code(code: types.CodeType, namespace: dict) -> Any:
    """Evaluate compiled code; code with a top-level `await` (compiled as a coroutine) runs in a fresh event loop."""
    result = eval(code, namespace)
    if code.co_flags & inspect.CO_COROUTINE:
        return asyncio.run(result)
    return result


def run_python(code: str, args: list[str], main: types.ModuleType, interrupts: Interrupts) -> RunOutcome:
    """Run the code as __main__ of this warm interpreter; a top-level `await` works, as in a notebook."""
    filename = "<string>"
    linecache.cache[filename] = (len(code), None, code.splitlines(True), filename)
    sys.modules["__main__"] = main
    sys.argv = ["-c", *args]
    outcome = RunOutcome(exit_code=0)
    try:
        compiled = compile(code, filename, "exec", flags=ast.PyCF_ALLOW_TOP_LEVEL_AWAIT)
        interrupts.python_running = True
        try:
            run_code(compiled, main.__dict__)
        finally:
            interrupts.python_running = False
    except SystemExit as stop:
        outcome.exit_code = system_exit_code(stop)
    except BaseException as error:  # noqa: BLE001 - the user's exception is the program's outcome
        outcome.interrupted = isinstance(error, KeyboardInterrupt)
        traceback.print_exception(type(error), error, _user_frames(error.__traceback__))
        outcome.exit_code = 1
    flush_std_streams()
    return outcome


def _user_frames(tb: types.TracebackType | None) -> types.TracebackType | None:
    """The traceback from the user's code on: this module's own frames (run_python, run_code) are not theirs."""
    while tb is not None and tb.tb_frame.f_code.co_filename == __file__:
        tb = tb.tb_next
    return tb


def flush_std_streams() -> None:
    for stream in (sys.stdout, sys.stderr, sys.__stdout__, sys.__stderr__):
        try:
            stream.flush()
        except Exception:  # noqa: BLE001 - user code may have closed or replaced it
            pass


def system_exit_code(stop: SystemExit) -> int:
    if stop.code is None:
        return 0
    if isinstance(stop.code, int):
        return stop.code & 0xFF
    print(stop.code, file=sys.stderr)
    return 1


def write_source(source_file: str, code: str) -> str:
    os.makedirs(SOURCE_DIR, mode=0o700, exist_ok=True)
    path = os.path.join(SOURCE_DIR, source_file)
    with open(path, "w", encoding="utf-8", errors="surrogateescape") as f:
        f.write(code)
    return path


def expand(argv: list[str], args: list[str], source: str) -> list[str]:
    """`{args}` becomes the user's arguments, `{source}` the source file, `{dir}` its folder."""
    expanded: list[str] = []
    for item in argv:
        if item == "{args}":
            expanded.extend(args)
        else:
            expanded.append(item.replace("{source}", source).replace("{dir}", SOURCE_DIR))
    return expanded


def run_steps(steps: list[dict], code: str, source_file: str, args: list[str], env: dict[str, str], interrupts: Interrupts, server: Any = None, after_build: Any = None) -> RunOutcome:
    """Run each step as its own process until one fails; the last step is the program itself.

    `server` (a tool server: fileno() and serve_round()) is served while a step runs. `after_build` is
    called once every step before the last succeeded, before the last starts (the compile cache's capture).
    """
    source = write_source(source_file, code)
    for index, step in enumerate(steps):
        if index == len(steps) - 1 and index > 0 and after_build is not None:
            after_build()
        argv = expand(list(step["argv"]), args, source)
        timeout_s = step.get("timeout_ms")
        stdout_to_stderr = bool(step.get("stdout_to_stderr"))
        status, timed_out = _spawn_and_wait(argv, {**env, **step.get("env", {})}, interrupts, None if timeout_s is None else timeout_s / 1000, server, stdout_to_stderr)
        if os.WIFSIGNALED(status):
            return RunOutcome(exit_code=128 + os.WTERMSIG(status), signal=os.WTERMSIG(status), failed_step=step["name"], step_timed_out=timed_out)
        code_ = os.WEXITSTATUS(status)
        if code_ != 0:
            return RunOutcome(exit_code=code_, failed_step=step["name"], step_timed_out=timed_out)
    return RunOutcome(exit_code=0)


def _spawn_and_wait(argv: list[str], env: dict[str, str], interrupts: Interrupts, timeout_s: float | None, server: Any = None, stdout_to_stderr: bool = False) -> tuple[int, bool]:
    """Spawn in its own process group (an interrupt reaches the whole group); kill the group at the timeout."""
    try:
        pid = os.posix_spawn(
            argv[0],
            argv,
            env,
            # a compiler that prints its messages on stdout (Go's): they are the run's stderr
            file_actions=[(os.POSIX_SPAWN_DUP2, 2, 1)] if stdout_to_stderr else None,
            setpgroup=0,
            setsigdef=(signal.SIGPIPE, signal.SIGXFSZ, signal.SIGCHLD, signal.SIGINT, signal.SIGTERM),
        )
    except OSError as error:
        print(f"{argv[0]}: {error.strerror}", file=sys.stderr)
        flush_std_streams()
        return 127 << 8, False
    interrupts.child_group = pid
    timed_out = False
    try:
        pidfd = os.pidfd_open(pid)
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        try:
            while True:
                remaining = None if deadline is None else max(0.0, deadline - time.monotonic())
                ready, _, _ = select.select([pidfd] if server is None else [pidfd, server], [], [], remaining)
                if pidfd in ready or not ready:
                    break
                server.serve_round()
            if not ready:
                timed_out = True
                os.killpg(pid, signal.SIGKILL)
        finally:
            os.close(pidfd)
        while True:
            try:
                _, status = os.waitpid(pid, 0)
                return status, timed_out
            except InterruptedError:
                continue
    finally:
        interrupts.child_group = None
