"""Per-peer SA state from ``list-sas``: what ``/readyz``, metrics and ``lab status`` show."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from .vici_client import IkeSa

LIVE_CHILD = frozenset({"CREATED", "INSTALLING", "INSTALLED", "UPDATING", "REKEYING", "REKEYED", "RETRYING"})
UP_CHILD = frozenset({"INSTALLED", "REKEYING", "REKEYED", "UPDATING"})
NEGOTIATING_IKE = frozenset({"CREATED", "CONNECTING"})
UP_IKE = frozenset({"ESTABLISHED", "REKEYING", "REKEYED"})


@dataclass(frozen=True)
class PeerSaStatus:
    """``state``: established (a CHILD_SA carries traffic), connecting (IKE or CHILD_SA being
    negotiated) or down (nothing). Byte counters sum every CHILD_SA of the connection."""

    state: str
    bytes_in: int = 0
    bytes_out: int = 0
    rekey_in: int | None = None  # seconds until the earliest CHILD_SA rekey
    ike_sas: int = 0

    def detail(self) -> dict[str, object]:
        """JSON-safe columns for ``PeerStatus.detail``."""
        return {"sa": self.state, "rx_bytes": self.bytes_in, "tx_bytes": self.bytes_out,
                "rekey_in_s": self.rekey_in, "ike_sas": self.ike_sas}


def child_alive(ike: IkeSa, child: str) -> bool:
    """Is ``child`` of this IKE_SA up or on its way (so initiating again would only duplicate it)?"""
    if ike.state in NEGOTIATING_IKE:
        return True
    return ike.state in UP_IKE and any(c.name == child and c.state in LIVE_CHILD for c in ike.children)


def peer_status(sas: Iterable[IkeSa], conn: str, child: str) -> PeerSaStatus:
    mine = [ike for ike in sas if ike.conn == conn]
    up = [c for ike in mine if ike.state in UP_IKE for c in ike.children if c.name == child and c.state in UP_CHILD]
    if up:
        rekeys = [c.rekey_in for c in up if c.rekey_in is not None]
        return PeerSaStatus("established", sum(c.bytes_in for c in up), sum(c.bytes_out for c in up),
                            min(rekeys) if rekeys else None, len(mine))
    state = "connecting" if any(child_alive(ike, child) for ike in mine) else "down"
    return PeerSaStatus(state, ike_sas=len(mine))
