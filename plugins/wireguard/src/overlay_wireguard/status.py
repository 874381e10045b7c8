"""Per-peer status for ``/readyz``, metrics and ``lab status`` (the ``overlay_peer_status`` hook).

WireGuard handshakes on demand and re-keys about every two minutes while traffic flows, so a
handshake older than three minutes means the peer is idle or unreachable; it is reported as
``stale`` with its age, never hidden. A peer that never shook hands is ``programmed``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .peer import PeerState

STALE_AFTER = 180.0


@dataclass(frozen=True)
class PeerReport:
    state: str  # "up" | "stale" | "programmed"
    detail: dict[str, Any]  # JSON-safe; never a key other than the public one


def peer_report(device: str, status: PeerState, now: float) -> PeerReport:
    age = None if status.last_handshake is None else max(0.0, now - status.last_handshake)
    state = "programmed" if age is None else ("up" if age <= STALE_AFTER else "stale")
    return PeerReport(state, {
        "device": device,
        "endpoint": status.peer.endpoint,
        "allowed_ips": [str(n) for n in status.peer.allowed_ips],
        "handshake_age_s": None if age is None else round(age, 1),
        "rx_bytes": status.rx_bytes,
        "tx_bytes": status.tx_bytes,
    })
