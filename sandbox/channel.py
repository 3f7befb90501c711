"""A freshly forked worker's own connections to the server, made before it isolates itself.

Each worker opens three new connections (control, stdout, stderr) to the server's listener for its
zygote and names itself with the per-spawn token the server gave the zygote. Nothing else holds these
sockets: whatever the worker does to them (shutdown, close, garbage) can end only its own run. Once the
worker has isolated itself the listener is gone from its view (it lives under a hidden path), so user
code can never open another connection, whatever token it may find in memory.
"""

from __future__ import annotations

import socket

LISTENER = "/run/warden/channel/sock"
KINDS = (b"C", b"O", b"E")  # control, stdout, stderr; the order the server expects nothing of
TOKEN_BYTES = 16


def connect(token: bytes) -> tuple[int, int, int]:
    """Open the worker's three connections; returns their fds (control, stdout, stderr)."""
    if len(token) != TOKEN_BYTES:
        raise ValueError("bad spawn token")
    fds: list[int] = []
    for kind in KINDS:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.connect(LISTENER)
            sock.sendall(token + kind)
        except BaseException:
            sock.close()
            raise
        fds.append(sock.detach())
    return fds[0], fds[1], fds[2]
