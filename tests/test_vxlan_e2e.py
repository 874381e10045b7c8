"""VXLAN end to end: real agents in namespaces, real etcd, real devices and packets."""

import subprocess
import time

import pytest
from overlay_core.testing.netns import ip
from overlay_lab.lab import PREFIX

from .helpers import all_pings_ok, up_with_pods, wait_until

pytestmark = [pytest.mark.netns, pytest.mark.etcd]


def kernel_state(node):
    return (ip("route", "show", "proto", "79", ns=node.ns), ip("-6", "route", "show", "proto", "79", ns=node.ns),
            ip("neigh", "show", "dev", "flannel.1", ns=node.ns, check=False),
            subprocess.run(["bridge", "-n", node.ns, "fdb", "show", "dev", "flannel.1"],
                           capture_output=True, text=True).stdout)


def test_ipv4_ping_matrix_and_kernel_objects(lab):
    rows = up_with_pods(lab, nodes=3)
    all_pings_ok(lab)
    n1 = lab.node(1)
    link = ip("-d", "link", "show", "flannel.1", ns=n1.ns)
    assert "vxlan id 1 local 192.0.2.1 dev eth0" in link and "dstport 8472 nolearning" in link and "mtu 1450" in link
    with open(n1.subnet_file) as fh:
        assert "FLANNEL_MTU=1450" in fh.read()
    routes, _, neigh, fdb = kernel_state(n1)
    for row, node in zip(rows[1:], lab.state.nodes[1:]):
        base = row["subnet"].split("/")[0]
        assert f"{row['subnet']} via {base} dev flannel.1 onlink" in routes
        mac = lab.readyz(node)[1]["vxlan_devices"]["flannel.1"]
        assert f"{base} lladdr {mac} PERMANENT" in neigh and f"{mac} dst {node.ip} self permanent" in fdb
    assert lab.readyz(n1)[1]["peer_modes"] == {"vxlan": 2}


def test_direct_routing_per_peer(lab):
    up_with_pods(lab, nodes=3, remote_nodes=1, backend_options={"DirectRouting": True})
    all_pings_ok(lab)
    n1, n2, n3 = lab.state.nodes
    routes = ip("route", "show", "proto", "79", ns=n1.ns)
    s2 = lab.readyz(n2)[1]["subnet"]
    s3 = lab.readyz(n3)[1]["subnet"]
    assert f"{s2} via {n2.ip} dev eth0" in routes  # same segment: plain route
    assert f"{s3} via {s3.split('/')[0]} dev flannel.1 onlink" in routes  # other segment: encapsulated
    assert lab.readyz(n1)[1]["peer_modes"] == {"direct": 1, "vxlan": 1}
    assert "direct: 192.0.2.2 is on eth0's segment" in open(n1.log).read()


def test_flannel_written_lease_with_foreign_mac_and_its_removal(lab):
    lab.up(nodes=1)
    n1 = lab.node(1)
    value = ('{"PublicIP":"192.0.2.50","PublicIPv6":null,"BackendType":"vxlan",'
             '"BackendData":{"VNI":1,"VtepMAC":"c6:d2:32:6f:8f:44"}}')
    lab.etcdctl("put", f"{PREFIX}/subnets/10.5.200.0-24", value)
    expected = ("10.5.200.0/24 via 10.5.200.0 dev flannel.1 onlink", "10.5.200.0 lladdr c6:d2:32:6f:8f:44 PERMANENT",
                "c6:d2:32:6f:8f:44 dst 192.0.2.50 self permanent")
    wait_until(lambda: all(e in "".join(kernel_state(n1)) for e in expected), what="objects for the Flannel lease")
    lab.etcdctl("del", f"{PREFIX}/subnets/10.5.200.0-24")
    wait_until(lambda: not any(e.split()[0] in "".join(kernel_state(n1)) for e in expected), what="objects removed")
    foreign = lab.etcdctl("put", f"{PREFIX}/subnets/10.5.201.0-24",
                          '{"PublicIP":"192.0.2.51","PublicIPv6":null,"BackendType":"host-gw"}')
    assert foreign
    time.sleep(0.5)
    assert "10.5.201.0" not in "".join(kernel_state(n1))  # another backend's lease is not ours to program


def test_deleted_route_fdb_neighbour_and_device_are_repaired(lab):
    up_with_pods(lab, nodes=2)
    n1, n2 = lab.state.nodes
    before = kernel_state(n1)
    subnet = lab.readyz(n2)[1]["subnet"]
    mac = lab.readyz(n1)[1]["vxlan_devices"]["flannel.1"]
    ip("route", "del", subnet, ns=n1.ns)
    wait_until(lambda: kernel_state(n1) == before, timeout=5, what="route restored")
    ip("neigh", "del", subnet.split("/")[0], "dev", "flannel.1", ns=n1.ns)
    wait_until(lambda: kernel_state(n1) == before, timeout=5, what="neighbour restored")
    peer_mac = lab.readyz(n2)[1]["vxlan_devices"]["flannel.1"]
    subprocess.run(["bridge", "-n", n1.ns, "fdb", "del", peer_mac, "dev", "flannel.1", "dst", n2.ip, "self"],
                   check=True)
    wait_until(lambda: kernel_state(n1) == before, timeout=5, what="fdb entry restored")
    ip("link", "del", "flannel.1", ns=n1.ns)
    wait_until(lambda: kernel_state(n1) == before, timeout=10, what="device and peers restored")
    assert lab.readyz(n1)[1]["vxlan_devices"]["flannel.1"] == mac  # same MAC: the lease stays valid
    assert f"link/ether {mac}" in ip("link", "show", "flannel.1", ns=n1.ns)
    all_pings_ok(lab)
    with open(n1.log) as fh:
        log = fh.read()
    assert "created flannel.1" in log and "reconcile: set" in log


def test_restart_removes_what_went_stale_and_touches_nothing_else(lab):
    lab.up(nodes=3)
    n1, _, n3 = lab.state.nodes
    s3 = lab.readyz(n3)[1]["subnet"]
    assert lab.stop_agent(n1) == 0
    lab.stop_agent(n3)
    lab.etcdctl("del", f"{PREFIX}/subnets/{s3.replace('/', '-')}")  # n3 left while n1 was down
    ip("route", "add", "10.5.250.0/24", "via", "10.5.250.0", "dev", "flannel.1", "onlink", "proto", "79", ns=n1.ns)
    ip("route", "add", "10.5.251.0/24", "via", "10.5.251.0", "dev", "flannel.1", "onlink", ns=n1.ns)  # not ours
    ip("route", "add", "10.99.0.0/24", "via", "10.99.0.0", "dev", "flannel.1", "onlink", "proto", "79", ns=n1.ns)
    lab.start_agent(n1)
    lab.wait_ready([n1])
    routes, _, neigh, fdb = kernel_state(n1)
    assert s3 not in routes and s3.split("/")[0] not in neigh and n3.ip not in fdb
    assert "10.5.250.0/24" not in routes  # owned (proto 79, inside the network) and unwanted: removed
    assert "10.5.251.0/24" in ip("route", ns=n1.ns)  # another tool's route: untouched
    assert "10.99.0.0/24" in routes  # outside our network: untouched


def test_incompatible_device_is_replaced(lab):
    lab.up(nodes=2, start_agents=False)
    n1 = lab.node(1)
    ip("link", "add", "flannel.1", "type", "vxlan", "id", "7", "dev", "eth0", "dstport", "4789", ns=n1.ns)
    for node in lab.state.nodes:
        lab.start_agent(node)
    lab.wait_ready()
    link = ip("-d", "link", "show", "flannel.1", ns=n1.ns)
    assert "vxlan id 1 " in link and "dstport 8472" in link
    assert "replacing flannel.1: its VNI is 7, not 1" in open(n1.log).read()


def test_bad_vxlan_options_are_one_line_errors(lab):
    lab.up(nodes=1, start_agents=False, backend_options={"VNI": 0})
    n1 = lab.node(1)
    lab.start_agent(n1)
    assert lab.wait_exit(n1, 20) == 1
    log = open(n1.log).read()
    assert "overlay-core: error: vxlan: VNI must be a whole number from 1 to 16777215, got 0" in log
    assert "Traceback" not in log
    lab.etcdctl("put", f"{PREFIX}/config", '{"Network":"10.5.0.0/16","Backend":{"Type":"vxlan","MTU":9000}}')
    lab.start_agent(n1)
    assert lab.wait_exit(n1, 20) == 1
    assert "vxlan: MTU 9000 is more than eth0's MTU 1500; MTU is the underlay's" in open(n1.log).read()
    assert lab.etcdctl("get", "--prefix", f"{PREFIX}/subnets/", "--keys-only").strip() == ""  # no lease left


def test_mtu_is_the_underlay_mtu_as_in_flannel(lab):
    lab.up(nodes=1, backend_options={"MTU": 1400})
    n1 = lab.node(1)
    assert "mtu 1350" in ip("link", "show", "flannel.1", ns=n1.ns)
    with open(n1.subnet_file) as fh:
        assert "FLANNEL_MTU=1350" in fh.read()
