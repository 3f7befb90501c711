"""Frames on a worker's control socket: 1 type byte, 4-byte big-endian payload length, payload.

A message larger than one frame travels as CONTINUED frames followed by one frame of its own type; the
reader joins them, up to the message budget the server configured. The other half is
src/pool/protocol.ts; sandbox/README.md is the reference for both.
"""

from __future__ import annotations

import json
import os
import struct

HEADER = struct.Struct(">BI")
MAX_PAYLOAD = 1 << 20
CHUNK = 256 << 10

CONTINUED = ord("+")  # both ways: the first parts of a message whose last frame carries its type
DATA = ord("D")  # both ways: raw bytes of an input file (to the worker) or an output file (from it)
MESSAGE = ord("M")  # both ways: a JSON message between the server and the running code
# server -> worker
JOB = ord("J")
# worker -> server
READY = ord("R")
STARTED = ord("S")
OUTPUT = ord("O")
OUTPUT_END = ord("E")
DONE = ord("X")
FAILED = ord("F")
PREPARED = ord("P")
# both ways, during a terminal run (terminal.py): 4-byte big-endian channel number, then raw bytes
TERMINAL = ord("T")
CHANNEL = struct.Struct(">I")
ARTIFACT = ord("A")  # the build's artifacts for the compile cache, DATA frames follow (artifacts.py)


class ProtocolError(Exception):
    pass


class ChannelClosed(ProtocolError):
    pass


class FrameReader:
    """Blocking reader over a socket fd; a worker is single-threaded, so blocking is what we want."""

    def __init__(self, fd: int, max_message: int) -> None:
        self.fd = fd
        self.max_message = max_message
        self.buffer = bytearray()

    def _fill(self, size: int) -> None:
        while len(self.buffer) < size:
            chunk = os.read(self.fd, max(CHUNK, size - len(self.buffer)))
            if not chunk:
                raise ChannelClosed("control channel closed")
            self.buffer += chunk

    def _frame(self) -> tuple[int, bytes]:
        self._fill(HEADER.size)
        kind, length = HEADER.unpack_from(self.buffer)
        if length > MAX_PAYLOAD:
            raise ProtocolError(f"frame of {length} bytes exceeds {MAX_PAYLOAD}")
        self._fill(HEADER.size + length)
        payload = bytes(self.buffer[HEADER.size : HEADER.size + length])
        del self.buffer[: HEADER.size + length]
        return kind, payload

    def read(self) -> tuple[int, bytes]:
        """The next message: its type and its whole payload, continuation frames joined."""
        parts: list[bytes] = []
        size = 0
        while True:
            kind, payload = self._frame()
            size += len(payload)
            if size > self.max_message:
                raise ProtocolError(f"message of more than {self.max_message} bytes")
            parts.append(payload)
            if kind != CONTINUED:
                return kind, b"".join(parts) if len(parts) > 1 else payload

    def read_available(self) -> list[tuple[int, bytes]]:
        """One read of what the socket holds (the caller saw it readable), then every whole message buffered."""
        chunk = os.read(self.fd, CHUNK)
        if not chunk:
            raise ChannelClosed("control channel closed")
        self.buffer += chunk
        return self.buffered_messages()

    def buffered_messages(self) -> list[tuple[int, bytes]]:
        """Every whole message already in the buffer; a partial one stays for the next read."""
        messages: list[tuple[int, bytes]] = []
        while True:
            offset, size, parts = 0, 0, []
            while True:
                if len(self.buffer) - offset < HEADER.size:
                    return messages
                kind, length = HEADER.unpack_from(self.buffer, offset)
                if length > MAX_PAYLOAD:
                    raise ProtocolError(f"frame of {length} bytes exceeds {MAX_PAYLOAD}")
                size += length
                if size > self.max_message:
                    raise ProtocolError(f"message of more than {self.max_message} bytes")
                if len(self.buffer) - offset - HEADER.size < length:
                    return messages
                parts.append(bytes(self.buffer[offset + HEADER.size : offset + HEADER.size + length]))
                offset += HEADER.size + length
                if kind != CONTINUED:
                    del self.buffer[:offset]
                    messages.append((kind, b"".join(parts)))
                    break

    def read_json(self, expected: int) -> dict:
        kind, payload = self.read()
        if kind != expected:
            raise ProtocolError(f"expected frame {chr(expected)!r}, got {chr(kind)!r}")
        message = json.loads(payload)
        if not isinstance(message, dict):
            raise ProtocolError("a message must be a JSON object")
        return message


def receive_data(reader: FrameReader, fd: int, size: int, what: str) -> None:
    """Exactly `size` bytes of the DATA frames that come next, written to `fd` (a file the worker staged)."""
    remaining = size
    while remaining > 0:
        kind, payload = reader.read()
        if kind != DATA or len(payload) > remaining:
            raise ProtocolError(f"bad data for {what}")
        write_all(fd, payload)
        remaining -= len(payload)


def write_all(fd: int, data: bytes | memoryview) -> None:
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        view = view[written:]


def send(fd: int, kind: int, payload: bytes = b"") -> None:
    """One message; split into CONTINUED frames when larger than a frame."""
    view = memoryview(payload)
    while len(view) > MAX_PAYLOAD:
        write_all(fd, HEADER.pack(CONTINUED, MAX_PAYLOAD) + view[:MAX_PAYLOAD])
        view = view[MAX_PAYLOAD:]
    write_all(fd, HEADER.pack(kind, len(view)) + view)


def send_channel(fd: int, channel: int, data: bytes | memoryview) -> None:
    """Bytes of one terminal channel, in frames of at most MAX_PAYLOAD."""
    view = memoryview(data)
    room = MAX_PAYLOAD - CHANNEL.size
    while True:
        write_all(fd, HEADER.pack(TERMINAL, CHANNEL.size + min(room, len(view))) + CHANNEL.pack(channel) + view[:room])
        view = view[room:]
        if not view:
            return


def send_json(fd: int, kind: int, message: dict) -> None:
    send(fd, kind, json.dumps(message, separators=(",", ":")).encode())
