"""The work directory /mnt/data: inputs written in, new or changed regular files sent back.

The worker runs with the user's privileges once the code has started, so everything here may meet a tree
the code arranged: links are never followed, only regular files are read, and the walk is bounded. The
server checks every name and size again.
"""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass, field

import frames

WORKDIR = "/mnt/data"

Snapshot = dict[str, tuple[int, int, int]]  # relative name -> (inode, size, mtime_ns)


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
    # every regular file looked at, as it was when looked at: the next checkpoint's "before" (terminal.py)
    seen: Snapshot = field(default_factory=dict)


def valid_relative_name(name: str) -> bool:
    """The server's rule (src/storage/file-names.ts; a contract test holds them together)."""
    if not name or name.startswith("/"):
        return False
    if any(ord(ch) < 0x20 or ord(ch) == 0x7F for ch in name) or "\\" in name:
        return False
    try:
        encoded = name.encode("utf-8")
    except UnicodeEncodeError:
        return False
    if len(encoded) > 1024:
        return False
    return all(part not in ("", ".", "..") and len(part.encode()) <= 255 for part in name.split("/"))


def stage_inputs(reader: frames.FrameReader, files: list[dict]) -> Snapshot:
    """Write each announced input under /mnt/data from the DATA frames that follow the job."""
    staged: Snapshot = {}
    for entry in files:
        name, size = entry["name"], int(entry["size"])
        if not valid_relative_name(name):
            raise frames.ProtocolError(f"invalid input name {name!r}")
        path = os.path.join(WORKDIR, name)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644)
        try:
            frames.receive_data(reader, fd, size, f"input {name!r}")
            st = os.fstat(fd)
        finally:
            os.close(fd)
        staged[name] = (st.st_ino, st.st_size, st.st_mtime_ns)
    return staged


def _walk(limits: OutputLimits, notes: list[str]):
    """Yield (relative name, DirEntry) of every regular-file candidate; count what is skipped."""
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
                notes.append(f"stopped scanning /mnt/data after {limits.max_entries} entries")
                return
            name = f"{relative_dir}/{entry.name}" if relative_dir else entry.name
            if entry.is_dir(follow_symlinks=False):
                if depth + 1 < limits.max_depth:
                    stack.append((name, depth + 1))
                else:
                    too_deep += 1
                continue
            yield name, entry
    if too_deep:
        notes.append(f"{too_deep} folder(s) more than {limits.max_depth} levels deep in /mnt/data were not searched for files")


def snapshot(limits: OutputLimits) -> Snapshot:
    """What /mnt/data holds now: files already there before a run are not outputs unless it changes them."""
    found: Snapshot = {}
    for name, entry in _walk(limits, []):
        try:
            st = entry.stat(follow_symlinks=False)
        except OSError:
            continue
        if stat.S_ISREG(st.st_mode):
            found[name] = (st.st_ino, st.st_size, st.st_mtime_ns)
    return found


def collect_outputs(ctl: int, before: Snapshot, limits: OutputLimits, send: bool) -> Collected:
    """Send every new or modified regular file under /mnt/data; never follow a link.

    With `send` false (the code failed) the files are only counted: failed executions register nothing.
    """
    result = Collected()
    seen: set[str] = set()
    skipped_names = skipped_special = skipped_over_limit = 0
    for name, entry in _walk(limits, result.notes):
        if not entry.is_file(follow_symlinks=False):
            skipped_special += 1
            continue
        seen.add(name)
        if not valid_relative_name(name):
            skipped_names += 1
            continue
        fd = _open_regular(entry.path)
        if fd is None:
            skipped_special += 1
            continue
        try:
            st = os.fstat(fd)
            result.seen[name] = (st.st_ino, st.st_size, st.st_mtime_ns)
            if before.get(name) == (st.st_ino, st.st_size, st.st_mtime_ns):
                continue  # there before the run, and untouched
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
    result.deleted = sorted(name for name in before if name not in seen)
    if skipped_over_limit:
        result.notes.append(
            f"{skipped_over_limit} output file(s) were not kept: the limits are {limits.max_files} files, "
            f"{limits.max_file_bytes} bytes per file and {limits.max_total_bytes} bytes in all"
        )
    if skipped_special:
        result.notes.append(f"{skipped_special} symlink(s) or special file(s) in /mnt/data were not kept")
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
