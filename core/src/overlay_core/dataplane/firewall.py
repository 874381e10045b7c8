"""Masquerade and forward rules with Flannel's semantics, where Flannel puts them.

The network config's ``EnableNFTables`` picks the manager, as in Flannel:

- false (default): iptables (reference §3.6). Chains ``FLANNEL-POSTRTG`` (nat) and
  ``FLANNEL-FWD`` (filter) with jump rules from POSTROUTING/FORWARD, written per table in ONE
  ``iptables-restore --noflush`` run: the chain is declared (hence flushed) and refilled, and
  the jump rule is deleted if present and appended again, so it ends up last, as Flannel's.
- true: nftables (§3.7). Tables ``ip flannel-ipv4`` / ``ip6 flannel-ipv6`` with chains
  ``postrtg`` and ``forward``, replaced whole in one atomic JSON transaction.

At start the other manager's leftovers are removed (Flannel's startup step 9). Drift: after
applying, the rendered listing is remembered; ``check()`` compares the kernel's listing with it
and re-applies when they differ. Rules are never removed on shutdown.
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


LIBNFTABLES = "libnftables.so.1"


def load_nftables():
    """A ``nftables.Nftables`` context; ``OSError``/``ImportError`` when libnftables is unusable.

    The library is loaded here first: ``Nftables()`` itself fails half-constructed when it
    cannot load it, and its ``__del__`` then prints a traceback even though the caller handled
    the error.
    """
    import ctypes

    ctypes.CDLL(LIBNFTABLES)  # OSError when Debian's libnftables1 is missing
    import nftables  # pip-nftables, the library's Python binding

    return nftables.Nftables(sofile=LIBNFTABLES)


class NftFirewall:
    name = "nftables"

    def __init__(self) -> None:
        self._nft = load_nftables()
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

    def remove_other(self) -> None:
        """Remove Flannel's (or our) iptables chains left from iptables mode; errors ignored."""
        for version in (4, 6):
            tool = _iptables_bin(version, "iptables")
            if shutil.which(tool):
                for table in JUMPS:
                    unjump, *remove_chain = teardown_commands(version, table)
                    for _ in range(MAX_DUPLICATE_JUMPS):  # a chain still jumped to cannot be deleted
                        if _run(unjump).returncode != 0:
                            break
                    for args in remove_chain:
                        _run(args)


# -- iptables --------------------------------------------------------------------------------


MAX_DUPLICATE_JUMPS = 16
JUMPS = {
    "nat": ("POSTROUTING", "FLANNEL-POSTRTG", "flanneld masq"),
    "filter": ("FORWARD", "FLANNEL-FWD", "flanneld forward"),
}


def jump_rule(table: str) -> str:
    """The rule (without ``-A``/``-D``/``-C``) that sends traffic into our chain of ``table``."""
    parent, chain, comment = JUMPS[table]
    return f'{parent} -m comment --comment "{comment}" -j {chain}'


def iptables_payload(rules: FamilyRules, jumps_present: frozenset[str] = frozenset()) -> dict[str, str]:
    """``iptables-restore --noflush`` input per table: declaring our chain flushes it, the jump
    rule is deleted (when ``jumps_present`` names its table) and appended, the chain refilled."""
    n, s = rules.network, rules.subnet
    random = " --random-fully" if rules.fully_random else ""
    masq = '-m comment --comment "flanneld masq"'
    fwd = '-m comment --comment "flanneld forward"'

    def head(table: str) -> list[str]:
        jump = jump_rule(table)
        return [f"*{table}", f":{JUMPS[table][1]} - [0:0]",
                *([f"-D {jump}"] if table in jumps_present else []), f"-A {jump}"]

    tables = {}
    if rules.masquerade:
        tables["nat"] = "\n".join([
            *head("nat"),
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
            *head("filter"),
            f"-A FLANNEL-FWD -s {n} {fwd} -j ACCEPT",
            f"-A FLANNEL-FWD -d {n} {fwd} -j ACCEPT",
            "COMMIT", "",
        ])
    return tables


def _iptables_bin(version: int, tool: str) -> str:
    return tool if version == 4 else tool.replace("iptables", "ip6tables")


def _run(args: list[str], stdin: str | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(args, input=stdin, capture_output=True, text=True, timeout=30)


def teardown_commands(version: int, table: str) -> list[list[str]]:
    """Commands removing our jump, then flushing and deleting our chain of ``table``."""
    parent, chain, comment = JUMPS[table]
    base = [_iptables_bin(version, "iptables"), "-w", "5", "-t", table]
    return [[*base, "-D", parent, "-m", "comment", "--comment", comment, "-j", chain],
            [*base, "-F", chain], [*base, "-X", chain]]


class IptablesFirewall:
    name = "iptables"

    def __init__(self, versions: tuple[int, ...] = (4,)) -> None:
        for version in versions:
            for tool in ("iptables", "iptables-restore"):
                if not shutil.which(_iptables_bin(version, tool)):
                    raise FileNotFoundError(_iptables_bin(version, tool))
        self._expected: dict[int, dict[str, str]] = {}

    def _chain(self, version: int, table: str) -> str:
        chain = JUMPS[table][1]
        out = _run([_iptables_bin(version, "iptables"), "-w", "5", "-t", table, "-S", chain])
        return out.stdout if out.returncode == 0 else ""

    def _jump_present(self, version: int, table: str) -> bool:
        parent, chain, comment = JUMPS[table]
        return _run([_iptables_bin(version, "iptables"), "-w", "5", "-t", table, "-C", parent,
                     "-m", "comment", "--comment", comment, "-j", chain]).returncode == 0

    def apply(self, rules: FamilyRules) -> None:
        present = frozenset(t for t in JUMPS if self._jump_present(rules.version, t))
        tables = iptables_payload(rules, present)
        for payload in tables.values():
            proc = _run([_iptables_bin(rules.version, "iptables-restore"), "-w", "5", "--noflush"], payload)
            if proc.returncode != 0:
                raise RuntimeError(f"iptables-restore failed: {proc.stderr.strip()}")
        self._expected[rules.version] = {t: self._chain(rules.version, t) for t in tables}

    def drifted(self, version: int) -> bool:
        expected = self._expected.get(version, {})
        return any(self._chain(version, t) != text or not self._jump_present(version, t)
                   for t, text in expected.items())

    def remove_other(self) -> None:
        """Delete the nftables tables left from nftables mode (errors ignored)."""
        try:
            nft = load_nftables()
        except (ImportError, OSError) as exc:
            LOGGER.debug("no libnftables (%s): no nftables leftovers to look for", exc)
            return
        for version in (4, 6):
            family, table, _ = _nft_names(version)
            nft.cmd(f"delete table {family} {table}")


def open_firewall(enable_nftables: bool, versions: tuple[int, ...] = (4,)):
    """The manager ``EnableNFTables`` selects, after removing the other one's leftovers.

    Raises ``KernelFeatureMissingError`` (one line) when its tool is missing, so the agent can
    refuse to start before it writes anything to the store.
    """
    if enable_nftables:
        try:
            manager: NftFirewall | IptablesFirewall = NftFirewall()
        except (ImportError, OSError) as exc:
            raise KernelFeatureMissingError(
                f"EnableNFTables is true but libnftables cannot be loaded ({exc}); install it "
                "(apt-get install libnftables1 python3-nftables) or set EnableNFTables to false"
            ) from None
    else:
        try:
            manager = IptablesFirewall(versions)
        except FileNotFoundError as exc:
            raise KernelFeatureMissingError(
                f"{exc} is missing and the firewall rules are iptables rules (EnableNFTables is "
                "false): install iptables (apt-get install iptables), or set EnableNFTables to true"
            ) from None
    manager.remove_other()
    return manager


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
