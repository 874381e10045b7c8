"""Both firewall managers against the real kernel, inside a namespace of the test's own."""

import os
import subprocess
import sys

import pytest
from overlay_core.testing.netns import add_namespace, delete_namespace, nsexec

pytestmark = pytest.mark.netns

SCRIPT = """
import sys
from ipaddress import ip_network
from overlay_core.dataplane.firewall import FamilyRules, IptablesFirewall, NftFirewall
fw = {"iptables": IptablesFirewall, "nftables": NftFirewall}[sys.argv[1]]()
rules = FamilyRules(ip_network("10.42.0.0/16"), ip_network("10.42.3.0/24"), True, True)
fw.apply(rules)
fw.apply(rules)  # idempotent
print("drifted-before", fw.drifted(4))
import subprocess
if sys.argv[1] == "iptables":
    subprocess.run(["iptables", "-t", "nat", "-F", "FLANNEL-POSTRTG"], check=True)
else:
    subprocess.run(["nft", "flush", "chain", "ip", "flannel-ipv4", "postrtg"], check=True)
print("drifted-after", fw.drifted(4))
fw.apply(rules)
print("drifted-repaired", fw.drifted(4))
if sys.argv[1] == "iptables":
    subprocess.run(["iptables", "-t", "filter", "-D", "FORWARD", "-m", "comment", "--comment", "flanneld forward",
                    "-j", "FLANNEL-FWD"], check=True)
    print("jump-removed", fw.drifted(4))
    fw.apply(rules)
"""


@pytest.mark.parametrize("kind", ["iptables", "nftables"])
def test_rules_apply_idempotently_and_drift_is_seen(kind):
    ns = f"ovl-fw{os.getpid()}"
    add_namespace(ns)
    try:
        out = subprocess.run(["ip", "netns", "exec", ns, sys.executable, "-c", SCRIPT, kind],
                             capture_output=True, text=True, check=True).stdout.split()
        assert out[:6] == ["drifted-before", "False", "drifted-after", "True", "drifted-repaired", "False"]
        assert out[6:] == (["jump-removed", "True"] if kind == "iptables" else [])
        if kind == "iptables":
            nat = nsexec(ns, "iptables", "-t", "nat", "-S").stdout
            assert nat.count('-A POSTROUTING -m comment --comment "flanneld masq" -j FLANNEL-POSTRTG') == 1
            assert ('-A FLANNEL-POSTRTG -s 10.42.0.0/16 ! -d 224.0.0.0/4 -m comment --comment "flanneld masq" '
                    "-j MASQUERADE --random-fully") in nat
            assert nat.count("-A FLANNEL-POSTRTG") == 6
            filt = nsexec(ns, "iptables", "-t", "filter", "-S").stdout
            assert filt.count("-A FLANNEL-FWD") == 2 and filt.count("-j FLANNEL-FWD") == 1
        else:
            text = nsexec(ns, "nft", "list", "table", "ip", "flannel-ipv4").stdout
            assert text.count("masquerade fully-random") == 2 and text.count("accept comment") == 2
    finally:
        delete_namespace(ns)
