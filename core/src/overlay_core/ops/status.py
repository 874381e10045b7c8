"""``overlay-core status``: the running agent's lease, store connection and peers, as a table.

Everything comes from the agent's ``/readyz`` (``readiness.node_report``); nothing is asked of
the store or the kernel, so status answers what the agent believes, quickly, at 3 a.m.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

PEER_COLUMNS = ("subnet", "public_ip", "state")


def duration(seconds: float) -> str:
    """``1d02h``, ``3h04m``, ``5m06s``, ``7s``: two units are enough to read at a glance."""
    seconds = int(round(seconds))
    sign, seconds = ("-", -seconds) if seconds < 0 else ("", seconds)
    days, rest = divmod(seconds, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    if days:
        text = f"{days}d{hours:02d}h"
    elif hours:
        text = f"{hours}h{minutes:02d}m"
    elif minutes:
        text = f"{minutes}m{secs:02d}s"
    else:
        text = f"{secs}s"
    return sign + text


def table(rows: Sequence[Sequence[str]]) -> list[str]:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return ["  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip() for row in rows]


def _cell(value: Any) -> str:
    if value is None or value == "":
        return "-"
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


def peer_rows(facts: dict[str, Any]) -> list[dict[str, Any]]:
    """One row per peer: its lease (subnet, public IP) and its backend's state and own columns."""
    leases: dict[str, dict] = facts.get("peer_leases", {})
    statuses: dict[str, dict] = facts.get("peer_status", {})
    rows = []
    for key in sorted(set(leases) | set(statuses)):
        lease, status = leases.get(key, {}), statuses.get(key, {})
        subnets = " ".join(filter(None, (lease.get("subnet"), lease.get("ipv6_subnet")))) or key
        rows.append({"key": key, "subnet": subnets, "public_ip": lease.get("public_ip") or "-",
                     "state": status.get("state", "-"),
                     **{k: v for k, v in status.items() if k != "state"}})
    return rows


def summary(ready: bool, facts: dict[str, Any], now: float | None = None) -> dict[str, Any]:
    """What ``status --json`` prints: the same facts as the table, in fixed keys."""
    now = time.time() if now is None else now
    store = facts.get("store", {})
    expires = facts.get("lease_expires_at")
    return {
        "ready": ready,
        "phase": facts.get("phase"),
        "not_ready": facts.get("not_ready"),
        "lease": {"subnet": facts.get("subnet"), "ipv6_subnet": facts.get("ipv6_subnet"),
                  "backend": facts.get("backend"), "public_ip": facts.get("public_ip"),
                  "reservation": facts.get("reservation", False), "expires_at": expires,
                  "expires_in": None if expires is None else round(expires - now, 1)},
        "store": {"endpoints": store.get("endpoints"), "connected": store.get("connected"),
                  "since": store.get("since"), "revision": store.get("revision"),
                  **({"watch_lag": store["watch_lag"]} if "watch_lag" in store else {})},
        "helpers": facts.get("helpers", {}),
        "peers": peer_rows(facts),
    }


def render(info: dict[str, Any]) -> list[str]:
    """The text table of ``summary``'s result."""
    lease, store = info["lease"], info["store"]
    state = "ready" if info["ready"] else f"NOT READY ({info.get('not_ready') or info.get('phase')})"
    subnets = " ".join(filter(None, (lease["subnet"], lease["ipv6_subnet"]))) or "-"
    if lease["reservation"]:
        expiry = "never (reservation)"
    elif lease["expires_in"] is not None:
        expiry = f"in {duration(lease['expires_in'])}"
    else:
        expiry = "-"
    connection = "connected" if store["connected"] else "DISCONNECTED"
    lines = [
        f"agent    {state}",
        f"lease    {subnets}  backend {_cell(lease['backend'])}  public IP {_cell(lease['public_ip'])}  "
        f"expires {expiry}",
        f"store    {_cell(store['endpoints'])}  {connection}  revision {_cell(store['revision'])}"
        + (f"  watch lag {_cell(store['watch_lag'])}" if "watch_lag" in store else ""),
    ]
    for name, helper in sorted(info.get("helpers", {}).items()):
        restarts = helper.get("restarts", 0)
        adopted = "  (adopted)" if helper.get("adopted") else ""
        lines.append(f"helper   {name}  {helper.get('state')}  pid {_cell(helper.get('pid'))}  "
                     f"{restarts} restart{'' if restarts == 1 else 's'}{adopted}")
    peers = info["peers"]
    if not peers:
        return [*lines, "peers    none"]
    extra = sorted({k for row in peers for k in row} - {"key", *PEER_COLUMNS})
    columns = [*PEER_COLUMNS, *extra]
    rows = [[c.upper().replace("_", " ") for c in columns]]
    rows += [[_cell(row.get(c)) for c in columns] for row in peers]
    return [*lines, "", *table(rows)]
