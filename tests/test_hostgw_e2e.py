"""host-gw specifics end to end: routes via peers, and peers that are not adjacent."""

import pytest
from overlay_core.testing.netns import ip

from .helpers import up_with_pods

pytestmark = [pytest.mark.netns, pytest.mark.etcd]


def test_routes_via_peer_public_ips_and_full_mtu(lab):
    rows = up_with_pods(lab, nodes=2, backend="host-gw", ipv6="dual")
    n1, n2 = lab.state.nodes
    v4, v6 = rows[1]["subnet"].split()
    assert f"{v4} via {n2.ip} dev eth0" in ip("route", "show", "proto", "79", ns=n1.ns)
    assert f"{v6} via {n2.ipv6} dev eth0" in ip("-6", "route", "show", "proto", "79", ns=n1.ns)
    with open(n1.subnet_file) as fh:
        assert "FLANNEL_MTU=1500" in fh.read()
    stored = lab.etcdctl("get", "--prefix", "/coreos.com/network/subnets/", "--print-value-only")
    assert '"BackendType":"host-gw"' in stored and "BackendData" not in stored


def test_peer_on_another_segment_is_reported_and_skipped(lab):
    up_with_pods(lab, nodes=3, backend="host-gw", remote_nodes=1)
    n1, n2, n3 = lab.state.nodes
    facts = lab.readyz(n1)[1]
    assert facts["unreachable_peers"] == 1 and facts["peer_modes"] == {"direct": 1, "skipped": 1}
    assert lab.readyz(n1)[0] == 200  # the others still work: ready
    s3 = lab.readyz(n3)[1]["subnet"]
    assert s3 not in ip("route", ns=n1.ns)
    with open(n1.log) as fh:
        log = fh.read()
    assert log.count(f"peer {s3} at {n3.ip}: skipped: {n3.ip} is not on eth0's segment; host-gw needs "
                     "layer-2 adjacency") == 1
    row = next(r for r in lab.status() if r["node"] == "n3")
    assert row["peer_modes"] == {"skipped": 2}


def test_nat_public_ip_is_refused(lab):
    lab.up(nodes=1, backend="host-gw", start_agents=False)
    n1 = lab.node(1)
    lab.start_agent(n1, "--public-ip=203.0.113.9")
    assert lab.wait_exit(n1, 20) == 1
    log = open(n1.log).read()
    assert "overlay-core: error: host-gw: public IP 203.0.113.9 differs from eth0's address 192.0.2.1" in log
