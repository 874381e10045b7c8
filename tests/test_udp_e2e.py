"""udp end to end: real agents in namespaces, real etcd, the supervised forwarder, real packets."""

import json
import os
import signal
import socket
import struct
import subprocess
import sys
import time
from pathlib import Path

import pytest
from overlay_core.services.supervise import is_same_process, start_time
from overlay_core.testing.netns import http_get, ip, nsexec
from overlay_lab.lab import PREFIX
from overlay_lab.traffic import bandwidth, pods_of
from overlay_udp import control

from .helpers import all_pings_ok, no_ping_lost, up_with_pods, wait_until

pytestmark = [pytest.mark.netns, pytest.mark.etcd]

HELPER = "udp-forwarder-flannel0"
FLANNEL_NODE = str(Path(__file__).parents[1] / "plugins/others/udp/tests/flannel_node.py")


def control_path(lab, node) -> str:
    return os.path.join(lab.node_dir(node), "state", "udp.sock")


def forwarder_routes(lab, node) -> dict:
    return control.call(control_path(lab, node), "routes")["routes"]


def report(lab, node) -> dict:
    return lab.readyz(node)[1]


def forwarder_pid(lab, node) -> int:
    return report(lab, node)["helpers"][HELPER]["pid"]


def tun_up(node) -> bool:
    return "UP" in ip("link", "show", "flannel0", ns=node.ns).split(">")[0]  # the flags, not "state"


def test_ping_matrix_lease_device_counters_and_bandwidth(lab):
    rows = up_with_pods(lab, nodes=3, backend="udp")
    all_pings_ok(lab)
    n1 = lab.node(1)
    subnet = rows[0]["subnet"]
    link = ip("-d", "link", "show", "flannel0", ns=n1.ns)
    assert "mtu 1472" in link and "tun type tun pi off vnet_hdr on persist on" in link
    assert f"inet {subnet.split('/')[0]}/32" in ip("addr", "show", "flannel0", ns=n1.ns)
    assert "10.5.0.0/16 dev flannel0" in ip("route", ns=n1.ns)
    with open(n1.subnet_file) as fh:
        assert "FLANNEL_MTU=1472" in fh.read()
    lease = json.loads(lab.etcdctl("get", f"{PREFIX}/subnets/{subnet.replace('/', '-')}", "--print-value-only"))
    assert lease["PublicIP"] == n1.ip and "BackendType" not in lease and "BackendData" not in lease  # as Flannel
    assert forwarder_routes(lab, n1) == {r["subnet"]: r["public_ip"] for r in rows[1:]}
    facts = report(lab, n1)
    assert facts["peer_modes"] == {"udp": 2} and facts["udp"]["path"] in ("fast", "batch")
    assert facts["helpers"][HELPER]["state"] == "running"
    speeds = bandwidth(lab, seconds=2)
    assert speeds["pod n1→n2 (overlay)"] > 0, speeds
    peer = rows[1]["subnet"].replace("/", "-")
    wait_until(lambda: report(lab, n1)["peer_status"][peer]["tx_bytes"] > 1_000_000, timeout=15,
               what="per-peer counters polled")
    status = report(lab, n1)["peer_status"][peer]
    assert status["state"] == "programmed" and status["rx_packets"] > 0
    _, metrics = http_get(n1.ns, "127.0.0.1", 9471, "/metrics")
    text = metrics.decode()
    assert f'overlay_peer_tx_bytes{{peer="{peer}"}}' in text and "overlay_udp_sndbuf_full " in text
    assert f'overlay_helper_up{{helper="{HELPER}"}} 1.0' in text


def test_foreign_flannel_node_exchanges_echo_with_a_pod(lab):
    """A node speaking Flannel's udp wire format (raw IPv4 packets as UDP payloads, lease without
    BackendType) reaches a pod, and the reply comes back framed the same way."""
    up_with_pods(lab, nodes=1, backend="udp")
    n1 = lab.node(1)
    foreign = lab.add_node()  # a namespace on the underlay, 192.0.2.2, with no agent of ours
    lab.etcdctl("put", f"{PREFIX}/subnets/10.5.200.0-24", json.dumps({"PublicIP": foreign.ip}))
    wait_until(lambda: forwarder_routes(lab, n1).get("10.5.200.0/24") == foreign.ip, what="route to the foreign node")
    pod = pods_of(lab)[0]
    out = nsexec(foreign.ns, sys.executable, FLANNEL_NODE, foreign.ip, n1.ip, "10.5.200.2", pod.ipv4,
                 timeout=30).stdout
    reply = json.loads(out)
    packet = bytes.fromhex(reply["packet"])
    assert (reply["from"], reply["port"]) == (n1.ip, 8285)
    assert len(packet) == 20 + 8 + 20 and packet[9] == 1 and packet[20] == 0  # one IPv4 ICMP echo reply
    assert socket.inet_ntoa(packet[12:16]) == pod.ipv4 and socket.inet_ntoa(packet[16:20]) == "10.5.200.2"
    assert struct.unpack_from("!HH", packet, 24) == (0x4242, 7) and packet[28:] == b"flannel-wire-format!"


UDP_PROBE = ("import errno, socket, sys\n"
             "s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.settimeout(5)\n"
             "s.setsockopt(socket.SOL_IP, 11, 1)  # IP_RECVERR: net-unreachable is a soft error\n"
             "s.connect((sys.argv[1], 9)); s.send(b'anyone there?')\n"
             "try:\n    s.recv(100); print('answered')\n"
             "except OSError as e:\n    print(errno.errorcode.get(e.errno, 'timeout'))\n")


def test_unknown_destination_gets_net_unreachable(lab):
    """A destination inside the network that no node leases: ICMP net-unreachable back (the
    connected UDP socket sees ENETUNREACH), except for an ICMP offender (Flannel's rule)."""
    up_with_pods(lab, nodes=2, backend="udp")
    n1 = lab.node(1)
    pod = pods_of(lab)[0]
    result = nsexec(pod.ns, sys.executable, "-c", UDP_PROBE, "10.5.250.2", timeout=30)
    assert result.stdout.strip() == "ENETUNREACH", result.stdout
    ping = nsexec(pod.ns, "ping", "-n", "-c", "1", "-W", "1", "10.5.250.2", check=False, timeout=20)
    assert "1 received" not in ping.stdout and "Unreachable" not in ping.stdout
    wait_until(lambda: report(lab, n1)["udp"].get("icmp_unreachable_sent", 0) == 1
               and report(lab, n1)["udp"].get("unroutable_dropped", 0) >= 1, timeout=15, what="both counted")


def test_peers_added_changed_removed_take_effect(lab):
    up_with_pods(lab, nodes=2, backend="udp")
    n1, n2 = lab.state.nodes
    key = f"{PREFIX}/subnets/10.5.201.0-24"
    lab.etcdctl("put", key, json.dumps({"PublicIP": "192.0.2.50"}))
    wait_until(lambda: forwarder_routes(lab, n1).get("10.5.201.0/24") == "192.0.2.50", what="peer added")
    lab.etcdctl("put", key, json.dumps({"PublicIP": "192.0.2.51"}))
    wait_until(lambda: forwarder_routes(lab, n1).get("10.5.201.0/24") == "192.0.2.51", what="peer changed")
    lab.etcdctl("del", key)
    wait_until(lambda: "10.5.201.0/24" not in forwarder_routes(lab, n1), what="peer removed")
    lab.etcdctl("put", f"{PREFIX}/subnets/10.5.202.0-24",
                json.dumps({"PublicIP": "192.0.2.52", "BackendType": "vxlan"}))
    time.sleep(1)
    assert "10.5.202.0/24" not in forwarder_routes(lab, n1)  # another backend's lease is not ours
    subnet2 = report(lab, n2)["subnet"]
    control.call(control_path(lab, n1), "delete", subnet=subnet2)  # drift in the forwarder's table
    subprocess.run(["ip", "-n", n1.ns, "link", "set", "flannel0", "down"], check=True)  # triggers a reconcile
    wait_until(lambda: subnet2 in forwarder_routes(lab, n1) and tun_up(n1), timeout=15,
               what="device and route table repaired")
    all_pings_ok(lab)


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL])
def test_agent_restart_under_ping_loses_nothing_and_adopts_the_forwarder(lab, sig):
    up_with_pods(lab, nodes=2, backend="udp")
    n1 = lab.node(1)
    a, b = pods_of(lab)
    pid = forwarder_pid(lab, n1)
    with no_ping_lost(a.ns, b.ipv4, 250):
        assert lab.stop_agent(n1, sig) == (0 if sig == signal.SIGTERM else -9)
        lab.start_agent(n1)
        lab.wait_ready([n1])
    assert forwarder_pid(lab, n1) == pid and report(lab, n1)["helpers"][HELPER]["adopted"]
    assert f"adopting pid {pid}" in open(n1.log).read()


def test_agent_of_other_code_replaces_the_forwarder_by_handover_under_ping(lab):
    """A package upgrade: the forwarder left running was started from other code (its record names
    another version), so the next agent starts the new one beside it, which takes the TUN, socket
    and table over; the old one exits; no pod ping is lost."""
    up_with_pods(lab, nodes=2, backend="udp")
    n1 = lab.node(1)
    a, b = pods_of(lab)
    old, routes = forwarder_pid(lab, n1), forwarder_routes(lab, n1)
    old_cmdline, old_started = Path(f"/proc/{old}/cmdline").read_bytes().split(b"\0")[:-1], start_time(old)
    record_path = Path(lab.node_dir(n1), "state", "helpers", f"{HELPER}.json")
    with no_ping_lost(a.ns, b.ipv4, 250):
        assert lab.stop_agent(n1, signal.SIGKILL) == -9
        record = json.loads(record_path.read_text())
        record_path.write_text(json.dumps({**record, "version": "0.0.1+older"}))
        lab.start_agent(n1)
        lab.wait_ready([n1])
    new = forwarder_pid(lab, n1)
    assert new != old and not report(lab, n1)["helpers"][HELPER]["adopted"]
    wait_until(lambda: not is_same_process(old, old_started, [a.decode() for a in old_cmdline]), timeout=10,
               what="the old forwarder gone")
    assert forwarder_routes(lab, n1) == routes
    assert json.loads(record_path.read_text())["version"] != "0.0.1+older"
    assert f"pid {new} took over from pid {old}" in open(n1.log).read()
    all_pings_ok(lab)


def test_killed_forwarder_is_restarted_and_deleted_device_recreated(lab):
    up_with_pods(lab, nodes=2, backend="udp", backend_options={"Port": 9000})
    n1, n2 = lab.state.nodes
    assert ":9000 " in nsexec(n1.ns, "ss", "-lun").stdout
    routes = forwarder_routes(lab, n1)
    pid = forwarder_pid(lab, n1)
    os.kill(pid, signal.SIGKILL)
    wait_until(lambda: report(lab, n1).get("helpers", {}).get(HELPER, {}).get("state") == "running"
               and forwarder_pid(lab, n1) != pid, timeout=30, what="forwarder restarted")
    assert report(lab, n1)["helpers"][HELPER]["restarts"] == 1
    assert forwarder_routes(lab, n1) == routes
    all_pings_ok(lab)
    pid = forwarder_pid(lab, n1)
    ip("link", "del", "flannel0", ns=n1.ns)  # the forwarder exits; its successor makes flannel0 again
    wait_until(lambda: forwarder_pid(lab, n1) != pid and report(lab, n1)["helpers"][HELPER]["state"] == "running",
               timeout=30, what="forwarder restarted after its device was deleted")
    wait_until(lambda: "10.5.0.0/16 dev flannel0" in ip("route", ns=n1.ns), what="flannel0 and its route back")
    all_pings_ok(lab)
    ip("link", "set", "flannel0", "down", ns=n1.ns)  # the new device is watched too
    wait_until(lambda: tun_up(n1), timeout=10, what="new flannel0 brought up again")
    assert "flannel0 was deleted" in open(os.path.join(lab.node_dir(n1), "state", "helpers", f"{HELPER}.log")).read()


def test_option_and_start_errors_are_one_line(lab):
    lab.up(nodes=1, backend="udp", start_agents=False, backend_options={"Port": 70000})
    n1 = lab.node(1)
    lab.start_agent(n1)
    assert lab.wait_exit(n1, 20) == 1
    assert "overlay-core: error: udp: Port must be a whole number from 1 to 65535, got 70000" in open(n1.log).read()
    lab.etcdctl("put", f"{PREFIX}/config", '{"Network":"10.5.0.0/16","Backend":{"Type":"udp","Prot":8285}}')
    lab.start_agent(n1)
    assert lab.wait_exit(n1, 20) == 1
    assert "udp: unknown Backend key 'Prot'" in open(n1.log).read()
    lab.etcdctl("put", f"{PREFIX}/config", '{"Network":"10.5.0.0/16","Backend":{"Type":"udp"}}')
    holder = subprocess.Popen(["ip", "netns", "exec", n1.ns, sys.executable, "-c",
                               "import socket, time; s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); "
                               f"s.bind(('{n1.ip}', 8285)); print('bound', flush=True); time.sleep(60)"],
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "bound"
        lab.start_agent(n1)
        assert lab.wait_exit(n1, 60) == 1
    finally:
        holder.kill()
        holder.wait()
    log = open(n1.log).read()
    assert f"overlay-core: error: udp: cannot bind UDP {n1.ip}:8285: Address already in use" in log, log[-2000:]
    assert "flannel0" not in ip("link", ns=n1.ns)  # refused before the TUN was made
    assert "Traceback" not in log


def test_new_lease_restarts_the_forwarder_for_the_new_subnet(lab):
    """Another node takes our subnet: the agent leases another one and runs a forwarder for it;
    flannel0 keeps only the new address, and the peers route the new subnet to us."""
    rows = up_with_pods(lab, nodes=2, backend="udp")
    n1, n2 = lab.state.nodes
    old, pid = rows[0]["subnet"], forwarder_pid(lab, n1)
    lab.etcdctl("put", f"{PREFIX}/subnets/{old.replace('/', '-')}", json.dumps({"PublicIP": "192.0.2.99"}))
    wait_until(lambda: report(lab, n1).get("subnet") not in (None, old), timeout=30, what="a new lease")
    new = report(lab, n1)["subnet"]
    wait_until(lambda: forwarder_pid(lab, n1) != pid and report(lab, n1)["helpers"][HELPER]["state"] == "running",
               timeout=30, what="forwarder for the new subnet")
    wait_until(lambda: f"inet {old.split('/')[0]}/32" not in ip("addr", "show", "flannel0", ns=n1.ns), timeout=40,
               what="the old address removed")
    assert f"inet {new.split('/')[0]}/32" in ip("addr", "show", "flannel0", ns=n1.ns)
    wait_until(lambda: {k: forwarder_routes(lab, n2).get(k) for k in (new, old)} == {new: n1.ip, old: "192.0.2.99"},
               what="peer routes for both subnets")
    ping = nsexec(n2.ns, "ping", "-n", "-c", "2", "-W", "2", new.split("/")[0], check=False, timeout=20)
    assert "2 received" in ping.stdout, ping.stdout
    assert f"lease changed: restarting the forwarder for subnet {new}" in open(n1.log).read()
