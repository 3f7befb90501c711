"""Programmatic tool calling inside the worker: the running code calls the agent's tools.

Each tool is a stub (an async Python function, or a Bash function) that asks the server for a call. Calls
made in the same moment (`asyncio.gather`, Bash background jobs) travel as one `tool_calls` message; the
run then waits, blocked, until the server sends the `tool_results` the client supplied, and each caller
gets its own result (an error result raises in Python, fails the function in Bash).
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import select
import time
from typing import Any, Callable, NamedTuple

import frames

TOOLS_DIR = "/tmp/.warden"
STUBS_PATH = TOOLS_DIR + "/tools.sh"
# a round of Bash calls: once no other process runs, this long for calls still on their way
BATCH_QUIET_S = 0.002
# while other processes run, look again this often
BATCH_POLL_S = 0.001
# a round gathers while the program's other processes use at most this much CPU, and for at most
# BATCH_MAX_S: CPU time, not wall time, since a loaded machine slows the calls still on their way
# (at a load of 20 on 2 cores, 8 background jobs took more than 0.5 s to reach their calls)
BATCH_MAX_CPU_S = 0.5
BATCH_MAX_S = 5.0
CLOCK_TICKS_PER_S = os.sysconf("SC_CLK_TCK")
MAX_INPUT_BYTES = 16 << 20


class ToolError(Exception):
    """A tool's own failure, as the client reported it (`is_error`): the code may catch it."""


class Broker:
    """Sends batches of calls to the server and hands each result back to its caller."""

    def __init__(self, send: Callable[[dict], None], reader: frames.FrameReader) -> None:
        self.send = send
        self.reader = reader
        self.count = 0

    def call(self, batch: list[tuple[str, Any]]) -> list[dict]:
        """One round: every (name, input) of the batch; returns their results in order."""
        calls = []
        for name, tool_input in batch:
            self.count += 1
            calls.append({"id": f"call_{self.count:03d}", "name": name, "input": tool_input})
        self.send({"type": "tool_calls", "calls": calls})
        while True:
            kind, payload = self.reader.read()
            if kind != frames.MESSAGE:
                raise frames.ProtocolError(f"expected tool results, got frame {chr(kind)!r}")
            message = json.loads(payload)
            if isinstance(message, dict) and message.get("type") == "tool_results":
                break
        by_id = {result.get("call_id"): result for result in message.get("results", []) if isinstance(result, dict)}
        return [by_id.get(call["id"], {"is_error": True, "error_message": f"no result for {call['id']}"}) for call in calls]


def install_python_stubs(namespace: dict, tools: list[dict], broker: Broker) -> None:
    """`async def <identifier>(**kwargs)` for each tool, in the code's namespace."""
    pending: list[tuple[str, Any, asyncio.Future]] = []

    def flush() -> None:
        batch = pending[:]
        pending.clear()
        results = broker.call([(name, kwargs) for name, kwargs, _ in batch])
        for (_, _, future), result in zip(batch, results):
            if future.done():
                continue
            if result.get("is_error"):
                future.set_exception(ToolError(str(result.get("error_message") or "the tool failed")))
            else:
                future.set_result(result.get("result"))

    for tool in tools:
        def make(name: str) -> Callable[..., Any]:
            async def stub(**kwargs: Any) -> Any:
                loop = asyncio.get_running_loop()
                future = loop.create_future()
                if not pending:
                    # calls made before this loop turn ends go out together (asyncio.gather)
                    loop.call_soon(flush)
                pending.append((name, kwargs, future))
                return await future

            stub.__name__ = tool["identifier"]
            stub.__doc__ = tool.get("description") or f"Calls the tool {name!r}."
            return stub

        namespace[tool["identifier"]] = make(tool["name"])
    namespace["ToolError"] = ToolError


# The Bash side of a call, in builtins but for one mkfifo: the input goes to a file, the call is announced
# on the server's FIFO (one short line, so concurrent calls never interleave), and the answer comes back as
# a file plus a status line on the call's own FIFO, opened read-write before announcing so it never blocks.
BASH_CALL = r"""__warden_call() {
  local id="$BASHPID.$RANDOM" dir=%(dir)s status reply fd
  printf '%%s' "$2" > "$dir/in.$id" || return 1
  /usr/bin/mkfifo -m 600 "$dir/wake.$id" || return 1
  exec {fd}<>"$dir/wake.$id"
  printf '%%s %%s\n' "$id" "$1" > "$dir/calls"
  IFS= read -r status <&"$fd"
  exec {fd}<&-
  IFS= read -r -d '' reply < "$dir/out.$id" || true
  : > "$dir/out.$id"
  if [ "$status" = 0 ]; then printf '%%s\n' "$reply"; return 0; fi
  printf '%%s\n' "$reply" >&2
  return 1
}
""" % {"dir": TOOLS_DIR}
CALL_LINE = re.compile(rb"^([0-9]+\.[0-9]+) ([A-Za-z0-9_]+)$")


def prepare_bash_stubs(tools: list[dict]) -> dict[str, str]:
    """Bash functions for the tools, loaded through BASH_ENV; returns the environment to add.

    Each takes one JSON argument and prints the result as one compact JSON value; a failed tool prints
    its error on stderr and returns 1.
    """
    os.makedirs(TOOLS_DIR, mode=0o700, exist_ok=True)
    with open(STUBS_PATH, "w") as f:
        f.write(BASH_CALL)
        for tool in tools:
            f.write(f'{tool["identifier"]}() {{ __warden_call {tool["identifier"]} "${{1-}}"; }}\n')
    return {"BASH_ENV": STUBS_PATH}


class Activity(NamedTuple):
    """One process of the program as /proc shows it."""
    state: bytes
    switches: int
    cpu_ticks: int


def program_activity() -> dict[str, Activity]:
    """Every other process of the program: its state, how many times it was switched out, its CPU time.

    A process that ran at all between two of these (woke, made a call or a child, slept again) shows a
    higher count, or a new pid; a state sampled alone cannot tell, since a scan of /proc is not atomic.
    """
    me = str(os.getpid())
    activity: dict[str, Activity] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or entry == me:
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as f:
                stat = f.read()
            with open(f"/proc/{entry}/status", "rb") as f:
                status = f.read()
        except OSError:
            continue
        # the fields after the command name, which is in parentheses and may hold anything
        fields = stat[stat.rfind(b")") + 2:].split()
        counts = dict(line.split(b":", 1) for line in status.splitlines() if b"ctxt_switches" in line)
        try:
            activity[entry] = Activity(fields[0], sum(int(count) for count in counts.values()), int(fields[11]) + int(fields[12]))
        except (IndexError, ValueError):
            continue
    return activity


def is_busy(activity: dict[str, Activity]) -> bool:
    """Whether a process of the program is running or about to (woken, not yet on a CPU): it may be making a call."""
    return any(process.state in (b"R", b"D") for process in activity.values())


def cpu_used_s(since: dict[str, Activity], now: dict[str, Activity]) -> float:
    """CPU time the processes of `now` used after `since` (a process born in between: all of its own)."""
    ticks = sum(max(0, process.cpu_ticks - (since[pid].cpu_ticks if pid in since else 0)) for pid, process in now.items())
    return ticks / CLOCK_TICKS_PER_S


class BashToolServer:
    """Answers the Bash stubs while the program runs, one round per batch of calls.

    Calls made together (background jobs, `&`) should be one round: after a call arrives, the server
    gathers until no other process of the program has run for a whole quiet moment (the rest are blocked
    in their own calls, or waiting for them): the same processes, none running, none switched in or out
    between two scans of /proc on either side of the moment. One scan is not enough: a job that forks
    while the scan reads its parent (now asleep, waiting) and not yet its child (not listed when the scan
    began) looked idle, and under CPU load its call came after the round was gone (2 rounds for 1, about
    1 in 30 on 2 loaded cores). A sequential call pays only the moment. A program that keeps running
    beside its call (a busy background job) closes the round after BATCH_MAX_CPU_S of its CPU time, or
    BATCH_MAX_S at most.
    """

    def __init__(self, broker: Broker, tools: list[dict]) -> None:
        self.broker = broker
        self.names = {tool["identifier"]: tool["name"] for tool in tools}
        os.makedirs(TOOLS_DIR, mode=0o700, exist_ok=True)
        calls = os.path.join(TOOLS_DIR, "calls")
        os.mkfifo(calls, 0o600)
        # read-write: opening it never blocks a stub, and it never reads as closed
        self.fd = os.open(calls, os.O_RDWR | os.O_NONBLOCK)
        self.pending = b""

    def fileno(self) -> int:
        return self.fd

    def serve_round(self) -> None:
        """Called when the calls FIFO is readable: gather the calls of this moment, answer them as one round."""
        batch: list[tuple[str, str, Any]] = []
        deadline = time.monotonic() + BATCH_MAX_S
        first: dict[str, Activity] | None = None
        before: dict[str, Activity] | None = None
        while True:
            batch.extend(self._read_calls())
            if not batch:
                return
            now = program_activity()
            if first is None:
                first = now
            if time.monotonic() > deadline or cpu_used_s(first, now) > BATCH_MAX_CPU_S:
                break
            busy = is_busy(now)
            if not busy and now == before:
                # nothing of the program ran since `before` was taken, so every call it made is read
                break
            before = now
            select.select([self.fd], [], [], BATCH_POLL_S if busy else BATCH_QUIET_S)
        results = self.broker.call([(name, tool_input) for _, name, tool_input in batch])
        for (call_id, _, _), result in zip(batch, results):
            self._answer(call_id, result)

    def _read_calls(self) -> list[tuple[str, str, Any]]:
        while True:
            try:
                chunk = os.read(self.fd, 65536)
            except BlockingIOError:
                break
            self.pending += chunk
            if len(chunk) < 65536:
                break
        *lines, self.pending = self.pending.split(b"\n")
        calls = []
        for line in lines:
            match = CALL_LINE.match(line)
            if match is None:
                continue  # not a stub's line: the code wrote to the FIFO itself
            call_id, identifier = match.group(1).decode(), match.group(2).decode()
            calls.append((call_id, self.names.get(identifier, identifier), self._take_input(call_id)))
        return calls

    @staticmethod
    def _take_input(call_id: str) -> Any:
        path = os.path.join(TOOLS_DIR, f"in.{call_id}")
        try:
            with open(path, "rb") as f:
                raw = f.read(MAX_INPUT_BYTES + 1)
            os.unlink(path)
        except OSError:
            return {}
        text = raw.decode("utf-8", "replace").strip()
        if text == "":
            return {}
        try:
            return json.loads(text)
        except ValueError:
            return text  # not JSON: the tool gets the string as it is

    @staticmethod
    def _answer(call_id: str, result: dict) -> None:
        failed = bool(result.get("is_error"))
        if failed:
            text = str(result.get("error_message") or "the tool failed")
        else:
            text = json.dumps(result.get("result"), separators=(",", ":"), ensure_ascii=False)
        wake = os.path.join(TOOLS_DIR, f"wake.{call_id}")
        try:
            with open(os.path.join(TOOLS_DIR, f"out.{call_id}"), "w") as f:
                f.write(text.replace("\0", ""))
            fd = os.open(wake, os.O_WRONLY | os.O_NONBLOCK)
        except OSError:
            return  # the stub is gone (its process ended): nobody to answer
        try:
            os.write(fd, b"1\n" if failed else b"0\n")
        except OSError:
            pass
        finally:
            os.close(fd)
            try:
                os.unlink(wake)
            except OSError:
                pass

    def close(self) -> None:
        os.close(self.fd)
