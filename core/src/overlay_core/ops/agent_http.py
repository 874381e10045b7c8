"""Reaching the running agent's ``/readyz`` through ``run``'s ``--healthz-ip``/``--healthz-port``."""

from __future__ import annotations

import http.client
import json
from typing import Any

from ..errors import OverlayError

TIMEOUT = 5.0


def agent_host(healthz_ip: str) -> str:
    """The address to ask: the agent listens on every address when given the wildcard."""
    if healthz_ip in ("", "0.0.0.0"):
        return "127.0.0.1"
    if healthz_ip == "::":
        return "::1"
    return healthz_ip


def read_report(healthz_ip: str, port: int, timeout: float = TIMEOUT) -> tuple[bool, dict[str, Any]]:
    """``(ready, facts)`` from the agent's ``/readyz``; ``OverlayError`` (one line) when no agent answers."""
    if not port:
        raise OverlayError("no health port given: pass the agent's --healthz-port (or FLANNELD_HEALTHZ_PORT); "
                           "status reads its /readyz")
    host = agent_host(healthz_ip)
    conn = http.client.HTTPConnection(host, port, timeout=timeout)
    try:
        conn.request("GET", "/readyz")
        response = conn.getresponse()
        body = response.read()
    except OSError as exc:
        raise OverlayError(f"no agent answers on {host}:{port} ({exc.strerror or exc}): is overlay-core run "
                           "running here with this --healthz-port?") from None
    finally:
        conn.close()
    try:
        facts = json.loads(body)
    except ValueError:
        raise OverlayError(f"{host}:{port}/readyz did not answer JSON: is it an overlay agent?") from None
    if response.status not in (200, 503) or not isinstance(facts, dict):
        raise OverlayError(f"{host}:{port}/readyz answered HTTP {response.status}: is it an overlay agent?")
    return response.status == 200, facts
