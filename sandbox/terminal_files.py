"""The file operations of a terminal (terminal.py), done inside the jail with the user's own privileges.

They see exactly what the user's commands see: /mnt/data (the persistent home), /tmp and the read-only
system. Nothing here guards paths: another user's files are not in this jail at all. What is bounded is
the work and the size of every answer, since a answer travels to the server as one message.
"""

from __future__ import annotations

import errno
import fnmatch
import glob
import mimetypes
import os
import re
import shutil
import stat
import zipfile

HOME = "/mnt/data"
BINARY_SNIFF_BYTES = 8192
MAX_LIST_ENTRIES = 10_000
MAX_GREP_FILES = 50_000
MAX_GREP_FILE_BYTES = 16 << 20
MAX_MATCH_CHARS = 500
MAX_GLOB_SCANNED = 200_000
# what a model receives as an image: Open WebUI turns image/* answers into multimodal input
IMAGE_PREFIX = "image/"


class FileOpError(Exception):
    """A failure the caller sees: an HTTP status and Open Terminal's `detail`."""

    def __init__(self, status: int, detail: str) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail


def resolve(path: object, cwd: str) -> str:
    """An absolute, normalised path; relative ones are taken from the caller's working directory."""
    text = str(path) if path not in (None, "") else "."
    return os.path.normpath(os.path.join(cwd or HOME, text))


def os_error(error: OSError, path: str) -> FileOpError:
    """Open Terminal's statuses for the usual failures, with a message that names the path."""
    if isinstance(error, FileNotFoundError):
        return FileOpError(404, f"Not found: {path}")
    if isinstance(error, PermissionError):
        return FileOpError(403, f"Permission denied: {path}")
    if error.errno in (errno.ENOSPC, errno.EFBIG, errno.EDQUOT):
        return FileOpError(413, f"No space left for {path}: the terminal's disk is full or the file is too large")
    return FileOpError(400, f"{os.strerror(error.errno or errno.EIO)}: {path}")


def mime_of(path: str) -> str:
    return mimetypes.guess_type(path)[0] or "application/octet-stream"


def _entry(path: str, name: str) -> dict:
    st = os.stat(path)
    return {"name": name, "type": "directory" if stat.S_ISDIR(st.st_mode) else "file", "size": st.st_size, "modified": st.st_mtime}


def list_dir(args: dict) -> dict:
    directory = resolve(args.get("directory"), args.get("cwd", HOME))
    try:
        with os.scandir(directory) as it:
            names = sorted(entry.name for entry in it)
    except NotADirectoryError:
        raise FileOpError(404, f"Directory not found: {directory}") from None
    except OSError as error:
        raise os_error(error, directory) from None
    entries = []
    for name in names[:MAX_LIST_ENTRIES]:
        try:
            entries.append(_entry(os.path.join(directory, name), name))
        except OSError:
            continue  # a dangling link, or removed meanwhile
    result: dict = {"dir": directory, "entries": entries}
    if len(names) > MAX_LIST_ENTRIES:
        result["truncated"] = True
    return result


def is_directory(args: dict) -> dict:
    path = resolve(args.get("path"), args.get("cwd", HOME))
    if not os.path.isdir(path):
        raise FileOpError(404, "Directory not found")
    return {"cwd": path}


def stat_file(args: dict) -> dict:
    """What a read or a view needs to know first: whether it exists, its size and its type."""
    path = resolve(args.get("path"), args.get("cwd", HOME))
    try:
        st = os.stat(path)
    except OSError as error:
        raise os_error(error, path) from None
    if stat.S_ISDIR(st.st_mode):
        return {"path": path, "exists": True, "type": "directory", "size": st.st_size, "mime": "inode/directory"}
    return {"path": path, "exists": True, "type": "file", "size": st.st_size, "mime": mime_of(path)}


def display(args: dict) -> dict:
    path = resolve(args.get("path"), args.get("cwd", HOME))
    return {"path": path, "exists": os.path.exists(path)}


def read_text(args: dict) -> dict:
    """A text file's lines `start_line`..`end_line` (1-based, inclusive), at most `max_bytes` of them."""
    path = resolve(args.get("path"), args.get("cwd", HOME))
    start = int(args.get("start_line") or 1)
    end = args.get("end_line")
    end = int(end) if end is not None else None
    max_bytes = int(args["max_bytes"])
    try:
        f = open(path, "rb")
    except IsADirectoryError:
        raise FileOpError(400, f"Is a directory: {path}") from None
    except OSError as error:
        raise os_error(error, path) from None
    with f:
        size = os.fstat(f.fileno()).st_size
        if b"\0" in f.read(BINARY_SNIFF_BYTES):
            raise FileOpError(415, f"Unsupported binary file type: {mime_of(path)} ({size} bytes)")
        f.seek(0)
        lines: list[bytes] = []
        taken = 0
        total = 0
        truncated = False
        for total, line in enumerate(f, 1):
            if total < start or (end is not None and total > end) or truncated:
                continue
            if taken + len(line) > max_bytes:
                truncated = True
                continue
            lines.append(line)
            taken += len(line)
    result: dict = {"path": path, "total_lines": total, "content": b"".join(lines).decode("utf-8", errors="replace")}
    if truncated:
        result["truncated"] = True
    return result


def write(args: dict) -> dict:
    path = resolve(args.get("path"), args.get("cwd", HOME))
    data = str(args.get("content", "")).encode("utf-8", errors="surrogateescape")
    try:
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "wb") as f:
            f.write(data)
    except OSError as error:
        raise os_error(error, path) from None
    return {"path": path, "size": len(data)}


def replace(args: dict) -> dict:
    path = resolve(args.get("path"), args.get("cwd", HOME))
    try:
        with open(path, encoding="utf-8", errors="surrogateescape", newline="") as f:
            text = f.read()
    except OSError as error:
        raise os_error(error, path) from None
    for item in args.get("replacements") or []:
        target, replacement = str(item.get("target", "")), str(item.get("replacement", ""))
        if target == "":
            raise FileOpError(400, "A replacement's target may not be empty")
        lines = text.splitlines(keepends=True)
        first = max(1, int(item.get("start_line") or 1))
        last = int(item.get("end_line") or len(lines) or 1)
        before, region, after = "".join(lines[: first - 1]), "".join(lines[first - 1 : last]), "".join(lines[last:])
        found = region.count(target)
        if found == 0:
            raise FileOpError(400, f"Target string not found in {path}: {target[:200]!r}")
        if found > 1 and not item.get("allow_multiple"):
            raise FileOpError(400, f"Found {found} occurrences of the target in {path}; set allow_multiple or narrow it with start_line and end_line")
        text = before + region.replace(target, replacement) + after
    data = text.encode("utf-8", errors="surrogateescape")
    try:
        with open(path, "wb") as f:
            f.write(data)
    except OSError as error:
        raise os_error(error, path) from None
    return {"path": path, "size": len(data)}


def make_dir(args: dict) -> dict:
    path = resolve(args.get("path"), args.get("cwd", HOME))
    try:
        os.makedirs(path, exist_ok=True)
    except OSError as error:
        raise os_error(error, path) from None
    return {"path": path}


def delete(args: dict) -> dict:
    path = resolve(args.get("path"), args.get("cwd", HOME))
    if path == "/" or path == HOME:
        raise FileOpError(400, f"Refusing to delete {path}")
    try:
        if os.path.isdir(path) and not os.path.islink(path):
            shutil.rmtree(path)
            return {"path": path, "type": "directory"}
        os.unlink(path)
    except OSError as error:
        raise os_error(error, path) from None
    return {"path": path, "type": "file"}


def move(args: dict) -> dict:
    cwd = args.get("cwd", HOME)
    source, destination = resolve(args.get("source"), cwd), resolve(args.get("destination"), cwd)
    if not os.path.lexists(source):
        raise FileOpError(404, f"Not found: {source}")
    if os.path.lexists(destination):
        raise FileOpError(409, "Destination already exists")
    try:
        os.makedirs(os.path.dirname(destination), exist_ok=True)
        shutil.move(source, destination)
    except OSError as error:
        raise os_error(error, destination) from None
    return {"source": source, "destination": destination}


def open_upload(args: dict) -> tuple[str, int]:
    """The file an upload writes to: `directory`/(the upload's own name, its folders dropped)."""
    directory = resolve(args.get("directory"), args.get("cwd", HOME))
    name = os.path.basename(str(args.get("filename") or "upload"))
    if name in ("", ".", ".."):
        raise FileOpError(400, "The upload has no usable file name")
    path = os.path.join(directory, name)
    try:
        os.makedirs(directory, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o644)
    except OSError as error:
        raise os_error(error, path) from None
    return path, fd


def open_download(args: dict) -> tuple[int, dict]:
    """An open file to stream out, and what the answer says of it (size, MIME type, name)."""
    path = resolve(args.get("path"), args.get("cwd", HOME))
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NONBLOCK)
    except OSError as error:
        raise os_error(error, path) from None
    st = os.fstat(fd)
    if not stat.S_ISREG(st.st_mode):
        os.close(fd)
        raise FileOpError(400 if stat.S_ISDIR(st.st_mode) else 415, f"Not a regular file: {path}")
    os.set_blocking(fd, True)
    return fd, {"path": path, "size": st.st_size, "mime": mime_of(path), "name": os.path.basename(path)}


# --- slow ones: terminal.py runs them in a child process with a deadline --------------------------------


def _include(name: str, patterns: list[str]) -> bool:
    return not patterns or any(fnmatch.fnmatch(name, pattern) for pattern in patterns)


def grep(args: dict) -> dict:
    root = resolve(args.get("path"), args.get("cwd", HOME))
    query = str(args.get("query", ""))
    flags = re.IGNORECASE if args.get("case_insensitive") else 0
    try:
        pattern = re.compile(query if args.get("regex", True) else re.escape(query), flags)
    except re.error as error:
        raise FileOpError(400, f"Invalid regex: {error}") from None
    include = [str(item) for item in args.get("include") or []]
    per_line = args.get("match_per_line", True)
    max_results = int(args.get("max_results") or 50)
    if not os.path.exists(root):
        raise FileOpError(404, f"Not found: {root}")
    matches: list[dict] = []
    truncated = False
    for path in _files_under(root):
        if not _include(os.path.basename(path), include):
            continue
        found = _grep_file(path, pattern, per_line, max_results - len(matches))
        if found is None:
            continue
        matches.extend(found if per_line else [{"file": path}])
        if len(matches) >= max_results:
            truncated = True
            break
    return {"query": query, "path": root, "matches": matches[:max_results], "truncated": truncated}


def _files_under(root: str):
    if os.path.isfile(root):
        yield root
        return
    seen = 0
    for directory, folders, files in os.walk(root):
        folders.sort()
        for name in sorted(files):
            seen += 1
            if seen > MAX_GREP_FILES:
                return
            yield os.path.join(directory, name)


def _grep_file(path: str, pattern: re.Pattern, per_line: bool, room: int) -> list[dict] | None:
    try:
        with open(path, "rb") as f:
            if os.fstat(f.fileno()).st_size > MAX_GREP_FILE_BYTES or b"\0" in f.read(BINARY_SNIFF_BYTES):
                return None
            f.seek(0)
            found: list[dict] = []
            for number, raw in enumerate(f, 1):
                line = raw.decode("utf-8", errors="replace").rstrip("\r\n")
                if pattern.search(line):
                    found.append({"file": path, "line": number, "content": line[:MAX_MATCH_CHARS]})
                    if not per_line or len(found) >= room:
                        break
            return found or None
    except OSError:
        return None


def glob_search(args: dict) -> dict:
    root = resolve(args.get("path"), args.get("cwd", HOME))
    pattern = str(args.get("pattern", ""))
    exclude = [str(item) for item in args.get("exclude") or []]
    wanted = args.get("type") or "any"
    max_results = int(args.get("max_results") or 50)
    if not os.path.isdir(root):
        raise FileOpError(404, f"Directory not found: {root}")
    matches: list[dict] = []
    truncated = False
    for scanned, relative in enumerate(glob.iglob(pattern, root_dir=root, recursive=True)):
        if scanned > MAX_GLOB_SCANNED:
            truncated = True
            break
        if any(fnmatch.fnmatch(relative, item) or fnmatch.fnmatch(os.path.basename(relative), item) for item in exclude):
            continue
        try:
            entry = _entry(os.path.join(root, relative), relative)
        except OSError:
            continue
        if wanted != "any" and entry["type"] != wanted:
            continue
        if len(matches) >= max_results:
            truncated = True
            break
        matches.append({"path": relative, "type": entry["type"], "size": entry["size"], "modified": entry["modified"]})
    return {"pattern": pattern, "path": root, "matches": matches, "truncated": truncated}


def archive(args: dict, fd: int) -> dict:
    """A zip of `paths` written to `fd` (a memfd the parent streams out once this returns)."""
    cwd = args.get("cwd", HOME)
    paths = [resolve(item, cwd) for item in args.get("paths") or []]
    if not paths:
        raise FileOpError(400, "No paths to archive")
    for path in paths:
        if not os.path.exists(path):
            raise FileOpError(404, f"Not found: {path}")
    with os.fdopen(os.dup(fd), "wb") as out, zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as zf:
        for path in paths:
            base = os.path.dirname(path)
            if os.path.isfile(path):
                zf.write(path, os.path.relpath(path, base))
                continue
            for directory, folders, files in os.walk(path):
                folders.sort()
                for name in sorted(files):
                    full = os.path.join(directory, name)
                    if os.path.isfile(full):
                        zf.write(full, os.path.relpath(full, base))
    name = os.path.basename(paths[0]) if len(paths) == 1 else "archive"
    return {"name": f"{name or 'archive'}.zip"}
