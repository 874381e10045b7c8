"""The forwarder's control channel: newline-delimited JSON over a Unix stream socket.

Requests (one JSON object per line, one reply line each, ``{"ok": true, ...}`` or
``{"ok": false, "error": "..."}``):

- ``{"op": "ping"}``: pid, path ("fast"/"batch"), number of routes;
- ``{"op": "set", "subnet": "10.5.2.0/24", "peer": "192.0.2.2"}``: add or change a route;
- ``{"op": "delete", "subnet": "10.5.2.0/24"}``;
- ``{"op": "update", "set": {"10.5.2.0/24": "192.0.2.2"}, "delete": ["10.5.3.0/24"]}``: several
  changes applied at once (one table rebuild: what an agent sends);
- ``{"op": "replace", "routes": {"10.5.2.0/24": "192.0.2.2", ...}}``: the whole table;
- ``{"op": "routes"}``: the table;
- ``{"op": "counters"}``: per-peer and global counters, socket and TUN queue drops;
- ``{"op": "stop"}``: stop forwarding, delete the TUN and the saved routes, exit (cleanup);
- ``{"op": "handover"}``: stop forwarding and pass the TUN and UDP descriptors (SCM_RIGHTS) with
  the routes and counters to the caller, a new forwarder that continues with them; then exit.

A route change is visible to the packet thread for its next batch. The blocking client is for
threads and tests; ``request`` is the trio version for an agent.
"""

from __future__ import annotations

import array
import json
import socket
from typing import Any

MAX_LINE = 1 << 23  # a whole table: 65 536 routes (a /8 of /24s) are about 2.6 MB of JSON


class ControlError(RuntimeError):
    """The forwarder refused a request or cannot be reached."""


def _decode(line: bytes) -> dict:
    reply = json.loads(line)
    if not reply.get("ok"):
        raise ControlError(reply.get("error", "request failed"))
    return reply


class ControlClient:
    """A blocking connection to a forwarder's control socket."""

    def __init__(self, path: str, timeout: float = 5.0) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(timeout)
        try:
            self.sock.connect(path)
        except OSError as e:
            self.sock.close()
            raise ControlError(f"forwarder control socket {path}: {e.strerror}") from None
        self._buf = b""

    def close(self) -> None:
        self.sock.close()

    def __enter__(self) -> ControlClient:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _send(self, op: str, fields: dict[str, Any]) -> None:
        self.sock.sendall(json.dumps({"op": op, **fields}).encode() + b"\n")

    def _line(self) -> bytes:
        while b"\n" not in self._buf:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ControlError("forwarder closed the control connection")
            self._buf += chunk
            if len(self._buf) > MAX_LINE:
                raise ControlError("forwarder reply too long")
        line, _, self._buf = self._buf.partition(b"\n")
        return line

    def call(self, op: str, **fields: Any) -> dict:
        self._send(op, fields)
        return _decode(self._line())

    def handover(self) -> tuple[dict, list[int]]:
        """Ask for the forwarder's descriptors: (its state, [tun fd, udp socket fd])."""
        self._send("handover", {})
        fds = array.array("i")
        data, anc, _, _ = self.sock.recvmsg(MAX_LINE, socket.CMSG_SPACE(2 * fds.itemsize))
        for level, kind, payload in anc:
            if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
                fds.frombytes(payload[:len(payload) - len(payload) % fds.itemsize])
        reply = _decode(data.partition(b"\n")[0])
        if len(fds) != 2:
            raise ControlError(f"handover passed {len(fds)} descriptors, expected 2")
        return reply, list(fds)


def call(path: str, op: str, timeout: float = 5.0, **fields: Any) -> dict:
    """One request on a fresh connection."""
    with ControlClient(path, timeout) as client:
        return client.call(op, **fields)


async def request(path: str, op: str, **fields: Any) -> dict:
    """One request from a trio task (an agent): connect, send, read the reply line."""
    import trio

    try:
        stream = await trio.open_unix_socket(path)
    except OSError as e:
        raise ControlError(f"forwarder control socket {path}: {e.strerror}") from None
    async with stream:
        await stream.send_all(json.dumps({"op": op, **fields}).encode() + b"\n")
        buf = b""
        while b"\n" not in buf:
            chunk = await stream.receive_some(65536)
            if not chunk:
                raise ControlError("forwarder closed the control connection")
            buf += chunk
            if len(buf) > MAX_LINE:
                raise ControlError("forwarder reply too long")
    return _decode(buf.partition(b"\n")[0])
