"""Reading the nftables ruleset (``nft -j list ruleset``) for drops that defeat our rules.

In nftables every base chain on a hook sees the packet in priority order, and an ``accept``
ends only its own chain: a drop in any other table's chain on the same hook still drops the
packet, before ours (lower priority) or after it. So ``doctor`` looks at every other base chain
on the forward hook for drops of the network's traffic, and on the input hook for drops of the
backend's UDP port. Only base chains' own rules and policies are read (rules reached by a jump
are not followed), and a rule whose matches are not addresses or ports is reported as one that
*may* drop, not as one that does.
"""

from __future__ import annotations

import ipaddress
import json
import subprocess
from dataclasses import dataclass
from typing import Any

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
VERDICTS = ("drop", "reject")
FAMILIES = {4: ("ip", "inet"), 6: ("ip6", "inet")}


@dataclass(frozen=True)
class BaseChain:
    family: str
    table: str
    name: str
    hook: str
    prio: int
    policy: str

    def describe(self) -> str:
        return f"{self.family} {self.table} {self.name} (hook {self.hook}, priority {self.prio})"


@dataclass(frozen=True)
class Finding:
    level: str  # "fail" (drops our traffic) or "warn" (may drop it)
    text: str


def read_ruleset() -> dict[str, Any]:
    """The kernel's ruleset as nft's JSON; ``OSError`` when nft is missing or fails."""
    try:
        proc = subprocess.run(["nft", "-j", "list", "ruleset"], capture_output=True, text=True, timeout=30)
    except FileNotFoundError as exc:
        raise OSError("nft is not installed") from exc
    if proc.returncode != 0:
        raise OSError(proc.stderr.strip() or "nft list ruleset failed")
    return json.loads(proc.stdout or '{"nftables": []}')


def base_chains(ruleset: dict[str, Any]) -> dict[tuple[str, str, str], BaseChain]:
    out = {}
    for item in ruleset.get("nftables", []):
        chain = item.get("chain")
        if chain and "hook" in chain:
            key = (chain["family"], chain["table"], chain["name"])
            out[key] = BaseChain(*key, chain["hook"], int(chain.get("prio", 0)), chain.get("policy", "accept"))
    return out


def tables(ruleset: dict[str, Any]) -> set[tuple[str, str]]:
    return {(t["table"]["family"], t["table"]["name"]) for t in ruleset.get("nftables", []) if "table" in t}


def _values(right: Any) -> list[Any] | None:
    """The literal values a match compares with; None for what we cannot read."""
    if isinstance(right, (int, str)):
        return [right]
    if isinstance(right, dict):
        if "prefix" in right:
            return [f"{right['prefix']['addr']}/{right['prefix']['len']}"]
        if "range" in right:
            return [tuple(right["range"])]
        if "set" in right:
            items = []
            for element in right["set"]:
                got = _values(element)
                if got is None:
                    return None
                items += got
            return items
    return None


def _overlaps(value: Any, network: Network) -> bool:
    if isinstance(value, tuple):
        low, high = (ipaddress.ip_address(v) for v in value)
        return low.version == network.version and low <= network.broadcast_address and high >= network.network_address
    net = ipaddress.ip_network(str(value), strict=False)
    return net.version == network.version and net.overlaps(network)


def _contains_port(value: Any, port: int) -> bool:
    if isinstance(value, tuple):
        return int(value[0]) <= port <= int(value[1])
    return isinstance(value, int) and value == port


def _judge(expr: list[dict], network: Network | None, port: int | None) -> str:
    """``"yes"``: the rule's matches all concern our traffic; ``"no"``: one excludes it; ``"maybe"``."""
    answer = "yes"
    for item in expr:
        match = item.get("match")
        if match is None:
            continue
        left = match.get("left", {}).get("payload", {})
        field = left.get("field")
        values = _values(match.get("right"))
        if match.get("op") not in ("==", "in") or values is None:
            answer = "maybe"
        elif field in ("saddr", "daddr") and network is not None and left.get("protocol") in ("ip", "ip6"):
            try:
                if not any(_overlaps(v, network) for v in values):
                    return "no"
            except ValueError:
                answer = "maybe"
        elif field == "dport" and port is not None and left.get("protocol") in ("udp", "th"):
            if not any(_contains_port(v, port) for v in values):
                return "no"
        elif field == "dport" and port is not None and left.get("protocol") == "tcp":
            return "no"
        else:
            answer = "maybe"
    return answer


def drops(ruleset: dict[str, Any], hook: str, version: int, ours: BaseChain | None,
          skip_tables: set[tuple[str, str]], network: Network | None = None,
          port: int | None = None) -> list[Finding]:
    """Drops on ``hook`` outside ``skip_tables`` that hit the network's traffic (``network``) or
    the UDP ``port``; ``ours`` (our chain on that hook) places them before or after it."""
    chains = {k: c for k, c in base_chains(ruleset).items()
              if c.hook == hook and c.family in FAMILIES[version] and (c.family, c.table) not in skip_tables}

    def where(chain: BaseChain) -> str:
        if ours is None:
            return ""
        return " before ours" if chain.prio < ours.prio else " after ours (an accept of ours does not stop it)"

    found = [Finding("fail", f"chain {c.describe()} drops by policy{where(c)}")
             for c in chains.values() if c.policy == "drop"]
    for item in ruleset.get("nftables", []):
        rule = item.get("rule")
        if not rule:
            continue
        chain = chains.get((rule["family"], rule["table"], rule["chain"]))
        expr = rule.get("expr", [])
        if chain is None or not any(v in e for e in expr for v in VERDICTS):
            continue
        verdict = _judge(expr, network, port)
        if verdict == "no":
            continue
        what = "the network's traffic" if network is not None else f"UDP port {port}"
        level, verb = ("fail", "drops") if verdict == "yes" else ("warn", "may drop")
        text = f"rule {rule.get('handle')} of chain {chain.describe()} {verb} {what}{where(chain)}"
        found.append(Finding(level, text))
    return found
