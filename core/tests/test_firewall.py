"""Pure tests of the firewall payloads (Flannel's golden text), and of loading the tools."""

import subprocess
import sys
from ipaddress import IPv4Network, IPv6Network

from overlay_core.dataplane.firewall import FamilyRules, iptables_payload, nft_commands

V4 = FamilyRules(IPv4Network("10.42.0.0/16"), IPv4Network("10.42.3.0/24"), True, True)
MASQ = '-m comment --comment "flanneld masq"'


def test_iptables_payload_is_flannels_chains_with_the_jump_first():
    payload = iptables_payload(V4)
    assert payload["nat"].splitlines() == [
        "*nat",
        ":FLANNEL-POSTRTG - [0:0]",
        f"-A POSTROUTING {MASQ} -j FLANNEL-POSTRTG",
        f"-A FLANNEL-POSTRTG -m mark --mark 0x4000/0x4000 {MASQ} -j RETURN",
        f"-A FLANNEL-POSTRTG -s 10.42.3.0/24 -d 10.42.0.0/16 {MASQ} -j RETURN",
        f"-A FLANNEL-POSTRTG -s 10.42.0.0/16 -d 10.42.3.0/24 {MASQ} -j RETURN",
        f"-A FLANNEL-POSTRTG ! -s 10.42.0.0/16 -d 10.42.3.0/24 {MASQ} -j RETURN",
        f"-A FLANNEL-POSTRTG -s 10.42.0.0/16 ! -d 224.0.0.0/4 {MASQ} -j MASQUERADE --random-fully",
        f"-A FLANNEL-POSTRTG ! -s 10.42.0.0/16 -d 10.42.0.0/16 {MASQ} -j MASQUERADE --random-fully",
        "COMMIT",
    ]
    assert payload["filter"].splitlines() == [
        "*filter",
        ":FLANNEL-FWD - [0:0]",
        '-A FORWARD -m comment --comment "flanneld forward" -j FLANNEL-FWD',
        '-A FLANNEL-FWD -s 10.42.0.0/16 -m comment --comment "flanneld forward" -j ACCEPT',
        '-A FLANNEL-FWD -d 10.42.0.0/16 -m comment --comment "flanneld forward" -j ACCEPT',
        "COMMIT",
    ]


def test_iptables_payload_moves_an_existing_jump_to_the_end_in_the_same_run():
    payload = iptables_payload(V4, frozenset({"nat"}))
    assert payload["nat"].splitlines()[2:4] == [f"-D POSTROUTING {MASQ} -j FLANNEL-POSTRTG",
                                                f"-A POSTROUTING {MASQ} -j FLANNEL-POSTRTG"]
    assert "-D FORWARD" not in payload["filter"]
    v6 = iptables_payload(FamilyRules(IPv6Network("fd00:10::/56"), IPv6Network("fd00:10:0:3::/64"), True, False,
                                      False))
    assert list(v6) == ["nat"] and "! -d ff00::/8" in v6["nat"] and "--random-fully" not in v6["nat"]


def test_nft_transaction_replaces_the_whole_table_atomically():
    v6 = FamilyRules(IPv6Network("fd00:10::/56"), IPv6Network("fd00:10:0:3::/64"), True, False, False)
    cmds = nft_commands(v6)
    assert cmds[:3] == [{"add": {"table": {"family": "ip6", "name": "flannel-ipv6"}}},
                        {"delete": {"table": {"family": "ip6", "name": "flannel-ipv6"}}},
                        {"add": {"table": {"family": "ip6", "name": "flannel-ipv6"}}}]
    rules = [c["add"]["rule"] for c in cmds if "rule" in c.get("add", {})]
    assert len(rules) == 6 and all(r["chain"] == "postrtg" for r in rules)
    assert rules[4]["expr"][1]["match"]["right"] == {"prefix": {"addr": "ff00::", "len": 8}}
    assert rules[4]["expr"][-1] == {"masquerade": None}  # fully-random disabled
    forward_only = nft_commands(FamilyRules(IPv4Network("10.0.0.0/8"), IPv4Network("10.0.1.0/24"), False, True))
    assert [c["add"]["chain"]["name"] for c in forward_only if "chain" in c.get("add", {})] == ["forward"]


# libnftables made unloadable inside a fresh interpreter: nothing here touches the kernel
# (NftFirewall fails before any command; open_firewall(True) fails before removing leftovers).
NO_LIBNFTABLES = """
import ctypes, gc
real_init = ctypes.CDLL.__init__
def refuse(self, name, *args, **kwargs):
    if name and "nftables" in str(name):
        raise OSError(f"{name}: cannot open shared object file: No such file or directory")
    real_init(self, name, *args, **kwargs)
ctypes.CDLL.__init__ = refuse
from overlay_core.dataplane import firewall
from overlay_core.errors import KernelFeatureMissingError
try:
    firewall.NftFirewall()
except OSError:
    print("nft-unavailable")
try:
    firewall.open_firewall(True)
except KernelFeatureMissingError as exc:
    print("error:", exc)
gc.collect()
"""


def test_without_libnftables_no_traceback_and_a_one_line_error():
    proc = subprocess.run([sys.executable, "-c", NO_LIBNFTABLES], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[0] == "nft-unavailable" and len(lines) == 2
    assert lines[1].startswith("error: EnableNFTables is true but libnftables cannot be loaded")
    assert proc.stderr == ""  # no "Exception ignored in: <function Nftables.__del__ ...>"
