"""``/healthz``, ``/readyz`` and ``/metrics`` on a small HTTP/1.1 server running as a trio task."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable

import trio

from .errors import OverlayError
from .metrics import exposition

LOGGER = logging.getLogger("overlay.health")

MAX_REQUEST = 8192


def _response(status: int, body: bytes, ctype: str = "text/plain; charset=utf-8") -> bytes:
    reason = {200: "OK", 404: "Not Found", 503: "Service Unavailable", 400: "Bad Request"}[status]
    head = (
        f"HTTP/1.1 {status} {reason}\r\nContent-Type: {ctype}\r\n"
        f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
    )
    return head.encode() + body


def _header(lines: list[str], name: str) -> str:
    """The value of header ``name`` (lower case) among ``lines``, repeated headers joined by commas."""
    values = [value.strip() for key, sep, value in (line.partition(":") for line in lines)
              if sep and key.strip().lower() == name]
    return ", ".join(values)


class HealthServer:
    """``report(verbose)`` returns ``(ready, facts)``; facts are shown as JSON on ``/readyz``.

    ``/readyz`` is what probes poll: the facts and per-state peer counts. ``/readyz?verbose``
    adds one entry per peer (``peer_status``): what ``status``, the lab and people read.
    """

    def __init__(self, report: Callable[[bool], tuple[bool, dict]], registry) -> None:
        self.report = report
        self.registry = registry

    def answer(self, target: str, accept: str = "") -> bytes:
        """The response to a GET of ``target`` (path and query); ``accept`` (the request's Accept
        header) picks the metrics format."""
        path, _, query = target.partition("?")
        if path == "/healthz":
            return _response(200, b"overlay is running\n")
        if path == "/readyz":
            ready, facts = self.report("verbose" in query.split("&"))
            body = json.dumps({"ready": ready, **facts}, sort_keys=True).encode() + b"\n"
            return _response(200 if ready else 503, body, "application/json")
        if path == "/metrics":
            return _response(200, *exposition(self.registry, accept))
        return _response(404, b"not found\n")

    async def handle(self, stream: trio.SocketStream) -> None:
        async with stream:
            data = b""
            with trio.move_on_after(5):
                while b"\r\n\r\n" not in data and len(data) < MAX_REQUEST:
                    chunk = await stream.receive_some(4096)
                    if not chunk:
                        break
                    data += chunk
            lines = data.split(b"\r\n\r\n", 1)[0].decode("latin-1").split("\r\n")
            parts = lines[0].split()
            if len(parts) < 2:
                reply = _response(400, b"bad request\n")
            else:
                reply = self.answer(parts[1], _header(lines[1:], "accept"))
            try:
                await stream.send_all(reply)
            except trio.BrokenResourceError:
                pass

    async def serve(self, host: str, port: int, *, task_status=trio.TASK_STATUS_IGNORED) -> None:
        try:
            listeners = await trio.open_tcp_listeners(port, host=host or None)
        except OSError as exc:
            raise OverlayError(
                f"cannot serve /healthz on {host}:{port}: {exc.strerror or exc}; "
                "choose another --healthz-ip/--healthz-port"
            ) from None
        LOGGER.info("health server on %s:%d (/healthz /readyz /metrics)", host or "*", port)
        task_status.started()
        await trio.serve_listeners(self.handle, listeners)
