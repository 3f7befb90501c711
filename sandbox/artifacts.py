"""Build products of the server's compile cache: handed in instead of a build, or sent back after one.

On a cache hit the job's steps are only its run, and the build it would have made arrives as DATA frames
after the inputs (`{"artifacts": {"provide": [{"name": "main", "size": N}]}}`): they are written into the
source folder before the run starts. On a miss the job asks for the build's files
(`{"artifacts": {"capture": ["main"], "max_bytes": N}}`): once every build step succeeded, and before the
run step starts, the worker sends one ARTIFACT frame `{"files": [{"name", "size"}]}` and their bytes.

What is sent is what the compiler made from this job's source: at that moment no process of the program has
existed yet, and the worker checks that none of the build's is left (its pid namespace holds only itself),
else it sends an empty list and nothing is kept. The server accepts the ARTIFACT frame only right after S,
once; any other is a protocol violation (src/pool/run.ts).
"""

from __future__ import annotations

import os
import stat

import frames
import runners


def _path(name: object) -> str:
    # a plain file name in the source folder, nothing else
    if not isinstance(name, str) or not name or "/" in name or name in (".", "..") or "\0" in name:
        raise frames.ProtocolError(f"invalid artifact name {name!r}")
    return os.path.join(runners.SOURCE_DIR, name)


def stage(reader: frames.FrameReader, provided: list[dict]) -> None:
    """Write each provided artifact (DATA frames after the inputs') as an executable of the source folder."""
    if not provided:
        return
    os.makedirs(runners.SOURCE_DIR, mode=0o700, exist_ok=True)
    for entry in provided:
        path, size = _path(entry.get("name")), int(entry["size"])
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o700)
        try:
            frames.receive_data(reader, fd, size, f"artifact {entry.get('name')!r}")
        finally:
            os.close(fd)


def only_process_left() -> bool:
    """True when this worker (pid 1 of its namespace) is the only process its /proc shows."""
    return all(not entry.isdigit() or entry == "1" for entry in os.listdir("/proc"))


def capture(ctl: int, names: list[str], max_bytes: int) -> None:
    """Send the build's named files, or an empty list when the build cannot be vouched for."""
    files: list[tuple[str, bytes]] = []
    if only_process_left():
        total = 0
        for name in names:
            data = _read_regular(_path(name), max_bytes - total)
            if data is None:
                files = []
                break
            files.append((name, data))
            total += len(data)
    frames.send_json(ctl, frames.ARTIFACT, {"files": [{"name": name, "size": len(data)} for name, data in files]})
    for _, data in files:
        view = memoryview(data)
        for offset in range(0, len(view), frames.CHUNK):
            frames.send(ctl, frames.DATA, view[offset : offset + frames.CHUNK])


def _read_regular(path: str, limit: int) -> bytes | None:
    """The file's bytes if it is a regular file (no link followed) of at most `limit` bytes."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode) or st.st_size > limit:
            return None
        chunks = []
        while True:
            chunk = os.read(fd, 1 << 20)
            if not chunk:
                break
            chunks.append(chunk)
        data = b"".join(chunks)
        return data if len(data) <= limit else None
    finally:
        os.close(fd)
