"""Frames on a worker's control socket: 1 type byte, 4-byte big-endian payload length, payload.

The other half is src/pool/protocol.ts; sandbox/README.md is the reference for both.
"""

from __future__ import annotations

import json
import os
import struct

HEADER = struct.Struct(">BI")
MAX_PAYLOAD = 1 << 20
CHUNK = 256 << 10

# server -> worker
JOB = ord("J")
DATA = ord("D")
# worker -> server
READY = ord("R")
STARTED = ord("S")
OUTPUT = ord("O")
OUTPUT_END = ord("E")
DONE = ord("X")
FAILED = ord("F")


class ProtocolError(Exception):
    pass


class FrameReader:
    """Blocking reader over a socket fd; the worker is single-threaded so blocking is what we want."""

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self.buffer = bytearray()

    def _fill(self, size: int) -> None:
        while len(self.buffer) < size:
            chunk = os.read(self.fd, max(CHUNK, size - len(self.buffer)))
            if not chunk:
                raise ProtocolError("control channel closed")
            self.buffer += chunk

    def read(self) -> tuple[int, bytes]:
        self._fill(HEADER.size)
        kind, length = HEADER.unpack_from(self.buffer)
        if length > MAX_PAYLOAD:
            raise ProtocolError(f"frame of {length} bytes exceeds {MAX_PAYLOAD}")
        self._fill(HEADER.size + length)
        payload = bytes(self.buffer[HEADER.size : HEADER.size + length])
        del self.buffer[: HEADER.size + length]
        return kind, payload

    def read_json(self, expected: int) -> dict:
        kind, payload = self.read()
        if kind != expected:
            raise ProtocolError(f"expected frame {chr(expected)!r}, got {chr(kind)!r}")
        return json.loads(payload)


def write_all(fd: int, data: bytes | memoryview) -> None:
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        view = view[written:]


def send(fd: int, kind: int, payload: bytes = b"") -> None:
    write_all(fd, HEADER.pack(kind, len(payload)) + payload)


def send_json(fd: int, kind: int, message: dict) -> None:
    send(fd, kind, json.dumps(message, separators=(",", ":")).encode())
