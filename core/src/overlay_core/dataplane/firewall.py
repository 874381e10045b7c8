"""Masquerade and forward rules with Flannel's semantics (reference §3.6), in tables we own.

nftables: tables ``ip flannel-ipv4`` / ``ip6 flannel-ipv6`` replaced whole in one atomic JSON
transaction (delete and re-create inside the same batch). Without libnftables the fallback is
``iptables-restore --noflush`` with our own chains ``FLANNEL-POSTRTG``/``FLANNEL-FWD``, each
declared (hence flushed and refilled atomically) in one restore run per table.
Drift: after applying, the rendered listing is remembered; ``check()`` compares the kernel's
listing with it and re-applies when they differ. Rules are never removed on shutdown.
"""

from __future__ import annotations

import logging
import shutil
import subprocess
from dataclasses import dataclass
from ipaddress import IPv4Network, IPv6Network

import trio

from ..errors import KernelFeatureMissingError

LOGGER = logging.getLogger("overlay.firewall")

KUBE_PROXY_MARK = 0x4000


@dataclass(frozen=True)
class FamilyRules:
    """Inputs for one family: cluster network N, own subnet S."""

    network: IPv4Network | IPv6Network
    subnet: IPv4Network | IPv6Network
    masquerade: bool
    forward: bool
    fully_random: bool = True

    @property
    def version(self) -> int:
        return self.network.version

    @property
    def multicast(self) -> str:
        return "224.0.0.0/4" if self.version == 4 else "ff00::/8"


# -- nftables ------------------------------------------------------------------------------


def _nft_names(version: int) -> tuple[str, str, str]:
    return ("ip", "flannel-ipv4", "ip") if version == 4 else ("ip6", "flannel-ipv6", "ip6")


def nft_commands(rules: FamilyRules) -> list[dict]:
    """The JSON commands that replace our table for one family."""
    family, table, proto = _nft_names(rules.version)
    t = {"family": family, "name": table}

    def addr(field: str, op: str, net) -> dict:
        return {
            "match": {
                "op": op,
                "left": {"payload": {"protocol": proto, "field": field}},
                "right": {"prefix": {"addr": str(net.network_address), "len": net.prefixlen}},
            }
        }

    def rule(chain: str, comment: str, *expr: dict) -> dict:
        return {"add": {"rule": {"family": family, "table": table, "chain": chain,
                                 "comment": comment, "expr": list(expr)}}}

    def chain(name: str, kind: str, hook: str, prio: int) -> dict:
        return {"add": {"chain": {"family": family, "table": table, "name": name, "type": kind,
                                  "hook": hook, "prio": prio, "policy": "accept"}}}

    n, s = rules.network, rules.subnet
    cmds = [{"add": {"table": t}}, {"delete": {"table": t}}, {"add": {"table": t}}]
    if rules.masquerade:
        masq = {"masquerade": {"flags": ["fully-random"]}} if rules.fully_random else {"masquerade": None}
        mark = {"match": {"op": "==", "left": {"&": [{"meta": {"key": "mark"}}, KUBE_PROXY_MARK]},
                          "right": KUBE_PROXY_MARK}}
        ret = {"return": None}
        multicast = IPv4Network(rules.multicast) if rules.version == 4 else IPv6Network(rules.multicast)
        cmds += [
            chain("postrtg", "nat", "postrouting", 100),
            rule("postrtg", "overlay masq", mark, ret),
            rule("postrtg", "overlay masq", addr("saddr", "==", s), addr("daddr", "==", n), ret),
            rule("postrtg", "overlay masq", addr("saddr", "==", n), addr("daddr", "==", s), ret),
            rule("postrtg", "overlay masq", addr("saddr", "!=", n), addr("daddr", "==", s), ret),
            rule("postrtg", "overlay masq", addr("saddr", "==", n), addr("daddr", "!=", multicast), masq),
            rule("postrtg", "overlay masq", addr("saddr", "!=", n), addr("daddr", "==", n), masq),
        ]
    if rules.forward:
        accept = {"accept": None}
        cmds += [
            chain("forward", "filter", "forward", 0),
            rule("forward", "overlay forward", addr("saddr", "==", n), accept),
            rule("forward", "overlay forward", addr("daddr", "==", n), accept),
        ]
    return cmds


class NftFirewall:
    name = "nftables"

    def __init__(self) -> None:
        import nftables  # pip-nftables; needs Debian's libnftables1

        self._nft = nftables.Nftables()
        self._nft.set_handle_output(False)
        self._expected: dict[int, str] = {}

    def _listing(self, version: int) -> str:
        family, table, _ = _nft_names(version)
        rc, out, _ = self._nft.cmd(f"list table {family} {table}")
        return out if rc == 0 else ""

    def apply(self, rules: FamilyRules) -> None:
        rc, _, err = self._nft.json_cmd({"nftables": nft_commands(rules)})
        if rc != 0 and rules.fully_random and "fully-random" in err:
            rules = FamilyRules(rules.network, rules.subnet, rules.masquerade, rules.forward, False)
            rc, _, err = self._nft.json_cmd({"nftables": nft_commands(rules)})
        if rc != 0:
            raise RuntimeError(f"nftables transaction failed: {err.strip()}")
        self._expected[rules.version] = self._listing(rules.version)

    def drifted(self, version: int) -> bool:
        return self._listing(version) != self._expected.get(version)


# -- iptables-restore fallback ---------------------------------------------------------------


def iptables_payload(rules: FamilyRules) -> dict[str, str]:
    """``iptables-restore --noflush`` input per table; declaring a chain flushes and refills it."""
    n, s = rules.network, rules.subnet
    random = " --random-fully" if rules.fully_random else ""
    masq = '-m comment --comment "flanneld masq"'
    fwd = '-m comment --comment "flanneld forward"'
    tables = {}
    if rules.masquerade:
        tables["nat"] = "\n".join([
            "*nat",
            ":FLANNEL-POSTRTG - [0:0]",
            f"-A FLANNEL-POSTRTG -m mark --mark 0x4000/0x4000 {masq} -j RETURN",
            f"-A FLANNEL-POSTRTG -s {s} -d {n} {masq} -j RETURN",
            f"-A FLANNEL-POSTRTG -s {n} -d {s} {masq} -j RETURN",
            f"-A FLANNEL-POSTRTG ! -s {n} -d {s} {masq} -j RETURN",
            f"-A FLANNEL-POSTRTG -s {n} ! -d {rules.multicast} {masq} -j MASQUERADE{random}",
            f"-A FLANNEL-POSTRTG ! -s {n} -d {n} {masq} -j MASQUERADE{random}",
            "COMMIT", "",
        ])
    if rules.forward:
        tables["filter"] = "\n".join([
            "*filter",
            ":FLANNEL-FWD - [0:0]",
            f"-A FLANNEL-FWD -s {n} {fwd} -j ACCEPT",
            f"-A FLANNEL-FWD -d {n} {fwd} -j ACCEPT",
            "COMMIT", "",
        ])
    return tables


JUMPS = {
    "nat": ("POSTROUTING", "FLANNEL-POSTRTG", "flanneld masq"),
    "filter": ("FORWARD", "FLANNEL-FWD", "flanneld forward"),
}


class IptablesFirewall:
    name = "iptables"

    def __init__(self) -> None:
        if not shutil.which("iptables-restore"):
            raise FileNotFoundError("iptables-restore")
        self._expected: dict[int, dict[str, str]] = {}

    @staticmethod
    def _bin(version: int, tool: str) -> str:
        return tool if version == 4 else tool.replace("iptables", "ip6tables")

    def _run(self, args: list[str], stdin: str | None = None) -> subprocess.CompletedProcess:
        return subprocess.run(args, input=stdin, capture_output=True, text=True, timeout=30)

    def _chain(self, version: int, table: str) -> str:
        chain = JUMPS[table][1]
        out = self._run([self._bin(version, "iptables"), "-w", "5", "-t", table, "-S", chain])
        return out.stdout if out.returncode == 0 else ""

    def apply(self, rules: FamilyRules) -> None:
        tables = iptables_payload(rules)
        for table, payload in tables.items():
            proc = self._run([self._bin(rules.version, "iptables-restore"), "-w", "5", "--noflush"], payload)
            if proc.returncode != 0:
                raise RuntimeError(f"iptables-restore failed: {proc.stderr.strip()}")
            if not self._jump_present(rules.version, table):
                self._run(self._jump(rules.version, table, "-A"))
        self._expected[rules.version] = {t: self._chain(rules.version, t) for t in tables}

    def _jump(self, version: int, table: str, action: str) -> list[str]:
        parent, chain, comment = JUMPS[table]
        return [self._bin(version, "iptables"), "-w", "5", "-t", table, action, parent,
                "-m", "comment", "--comment", comment, "-j", chain]

    def _jump_present(self, version: int, table: str) -> bool:
        return self._run(self._jump(version, table, "-C")).returncode == 0

    def drifted(self, version: int) -> bool:
        expected = self._expected.get(version, {})
        return any(self._chain(version, t) != text or not self._jump_present(version, t)
                   for t, text in expected.items())


def open_firewall(require_nftables: bool):
    """The nftables manager when libnftables is usable, else the iptables-restore one."""
    try:
        return NftFirewall()
    except (ImportError, OSError) as exc:
        if require_nftables:
            raise KernelFeatureMissingError(
                f"EnableNFTables is set but libnftables cannot be loaded ({exc}); "
                "install it: apt-get install libnftables1"
            ) from None
        nft_error = exc
    try:
        return IptablesFirewall()
    except FileNotFoundError:
        raise KernelFeatureMissingError(
            f"no firewall tool: libnftables cannot be loaded ({nft_error}) and iptables-restore "
            "is missing; install one: apt-get install libnftables1 (or iptables)"
        ) from None


class Firewall:
    """The desired rules for each family, applied atomically and re-applied on drift."""

    def __init__(self, backend, rules: list[FamilyRules]) -> None:
        self.backend = backend
        self.rules = rules
        self.in_place = False

    async def apply(self) -> None:
        for rule in self.rules:
            await trio.to_thread.run_sync(self.backend.apply, rule)
        self.in_place = True
        LOGGER.info("firewall rules in place (%s)", self.backend.name)

    async def check(self) -> int:
        """Re-apply any family whose rules differ from what we wrote; returns how many."""
        repaired = 0
        for rule in self.rules:
            if await trio.to_thread.run_sync(self.backend.drifted, rule.version):
                LOGGER.warning("IPv%d firewall rules changed behind our back; restoring them", rule.version)
                await trio.to_thread.run_sync(self.backend.apply, rule)
                repaired += 1
        return repaired
