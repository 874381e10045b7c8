"""The forwarder end to end in namespaces: pods pinging, TCP, Flannel's wire format, ICMP unreachable,
route changes over the control channel, surviving its parent, handover."""

from __future__ import annotations

import json
import os
import signal
import struct
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from overlay_core.testing.netns import nsexec
from overlay_udp import control
from overlay_udp.packet import ip_header_ok, ones_sum, tcp_checksum_ok

pytestmark = pytest.mark.netns

FULL_MESH = {1: {2: 2, 3: 3}, 2: {1: 1, 3: 3}, 3: {1: 1, 2: 2}}


def lost(ping: subprocess.CompletedProcess) -> tuple[int, int]:
    """(transmitted, received) from ping's summary line."""
    for line in ping.stdout.splitlines():
        if "transmitted" in line:
            parts = line.split(",")
            return int(parts[0].split()[0]), int(parts[1].split()[0])
    raise AssertionError(f"no ping summary: {ping.stdout} {ping.stderr}")


def iperf(lab, src: int, dst: int, secs: int = 3) -> dict:
    server = lab.spawn(lab.pod(dst), ["iperf3", "-s", "-1", "-B", lab.pod_ip(dst)], f"iperf-s{dst}.log")
    try:
        for _ in range(50):
            if nsexec(lab.pod(dst), "ss", "-ltn", check=False).stdout.count(":5201"):
                break
            time.sleep(0.1)
        out = nsexec(lab.pod(src), "iperf3", "-c", lab.pod_ip(dst), "-t", str(secs), "-J", timeout=secs + 30).stdout
    finally:
        server.kill()
        server.wait(5)
    return json.loads(out)


@pytest.mark.parametrize("path", ["fast", "batch"])
def test_ping_matrix_and_tcp(udp_lab, path):
    lab = udp_lab()
    for i in (1, 2, 3):
        lab.add_node(i)
    for i in (1, 2, 3):
        assert lab.start_forwarder(i, FULL_MESH[i], path=path)
        assert lab.wait_ready(i)["path"] == path
    for src in (1, 2, 3):
        for dst in (1, 2, 3):
            if src != dst:
                result = lab.ping(src, lab.pod_ip(dst), count=2)
                assert lost(result) == (2, 2), (src, dst, result.stdout)
    result = iperf(lab, 1, 2)
    received = result["end"]["sum_received"]["bytes"]
    assert received > 1_000_000
    for _ in range(50):  # the connection's last segments may still be in flight: let the counters settle
        c1, c2 = (control.call(lab.control(i), "counters") for i in (1, 2))
        sent, arrived = c1["peers"][lab.node_ip(2)]["tx_bytes"], c2["peers"][lab.node_ip(1)]["rx_bytes"]
        if arrived == sent:
            break
        time.sleep(0.1)
    assert c1["path"] == path
    assert c1["peers"][lab.node_ip(2)]["tx_bytes"] > received
    assert arrived == sent or (arrived < sent and c2["udp_rcvbuf_drops"] > 0)  # a loss is a counted one
    assert c1["icmp_unreachable_sent"] == 0 and c1["malformed"] == 0
    assert f"{path} path" in lab.log("fwd-n1.log")


def test_without_numpy_the_batch_path_runs_and_says_why(udp_lab):
    lab = udp_lab()
    lab.add_node(1)
    lab.add_node(2)
    lab.start_forwarder(2, {1: 1})
    no_numpy = ("import sys; sys.modules['numpy'] = None\n"  # `import numpy` now raises ImportError
                "from overlay_udp.forwarder import main; sys.exit(main())")
    argv = lab.forwarder_argv(1, {2: 2})
    proc = lab.spawn(lab.node(1), [sys.executable, "-c", no_numpy, *argv[3:]], "fwd-n1.log")
    assert lab.wait_ready(1, proc)["path"] == "batch"
    assert "batch path: numpy is not installed" in lab.log("fwd-n1.log")
    assert lost(lab.ping(1, lab.pod_ip(2), count=2)) == (2, 2)


@pytest.mark.parametrize("extra,error", [
    (["--route", "10.5.2.0/24"], "--route '10.5.2.0/24': expected SUBNET=PEER_IP"),
    (["--route", "10.5.2.0/24=1.2.3"], "invalid route table: Expected 4 octets in '1.2.3'"),
    (["--route", "10.5.2.0/24=192.0.2.2", "--route", "10.6.0.0/16=192.0.2.3"], "must have one prefix length"),
])
def test_bad_arguments_are_one_line_errors(udp_lab, extra, error):
    lab = udp_lab()
    node = lab.add_node(1, pod=False)
    result = nsexec(node, *lab.forwarder_argv(1), *extra, check=False, timeout=60)
    assert result.returncode == 1
    assert result.stderr.startswith("overlay-udp forwarder: ") and error in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert "flannel0" not in nsexec(node, "ip", "link").stdout  # refused before anything was made


FLANNEL_NODE = str(Path(__file__).with_name("flannel_node.py"))  # a Flannel udp node in miniature


def test_foreign_flannel_node_exchanges_echo_with_a_pod(udp_lab):
    lab = udp_lab()
    lab.add_node(1)
    lab.add_node(3, pod=False)
    lab.start_forwarder(1, {3: 3})
    out = nsexec(lab.node(3), sys.executable, FLANNEL_NODE, lab.node_ip(3), lab.node_ip(1), "10.5.3.2", lab.pod_ip(1),
                 timeout=30).stdout
    reply = json.loads(out)
    p = bytes.fromhex(reply["packet"])
    assert (reply["from"], reply["port"]) == (lab.node_ip(1), 8285)
    assert ip_header_ok(p) and len(p) == 20 + 8 + 20
    assert p[9] == 1 and p[20] == 0  # ICMP echo reply
    assert p[12:16] == bytes([10, 5, 1, 2]) and p[16:20] == bytes([10, 5, 3, 2])
    assert struct.unpack_from("!HH", p, 24) == (0x4242, 7) and p[28:] == b"flannel-wire-format!"
    assert ones_sum(p[20:]) == 0xFFFF
    assert p[8] == 62  # pod 64, node routing 63, forwarder 62: TTL handled as Flannel's proxy


def verify_pcap(path: str, port: int = 8285) -> tuple[int, int, int]:
    """(datagrams to ``port``, how many are not exactly one valid IPv4 packet, largest inner size)."""
    data = open(path, "rb").read()
    link = struct.unpack_from("<I", data, 20)[0]
    l2 = {1: 14, 113: 16, 276: 20}[link]
    off, count, bad, largest = 24, 0, 0, 0
    while off + 16 <= len(data):
        caplen = struct.unpack_from("<I", data, off + 8)[0]
        frame = data[off + 16 + l2:off + 16 + caplen]
        off += 16 + caplen
        ihl = (frame[0] & 15) * 4
        if frame[9] != 17 or struct.unpack_from("!H", frame, ihl + 2)[0] != port:
            continue
        inner = frame[ihl + 8:]
        count += 1
        largest = max(largest, len(inner))
        ok = ip_header_ok(inner)
        if ok and inner[9] == 6:
            ok = tcp_checksum_ok(inner)
        elif ok and inner[9] == 1:
            ok = ones_sum(inner[(inner[0] & 15) * 4:]) == 0xFFFF
        bad += not ok
    return count, bad, largest


SEGMENTATION_OFF = textwrap.dedent("""
    import sys
    from pyroute2.ethtool import Ethtool
    e = Ethtool()
    f = e.get_features(sys.argv[1])
    f.features["tx-udp-segmentation"].enable = False
    e.set_features(sys.argv[1], f)
    print(e.get_features(sys.argv[1]).features["tx-udp-segmentation"].enable)
""")


@pytest.mark.parametrize("path", ["fast", "batch"])
def test_underlay_carries_one_valid_packet_per_datagram(udp_lab, tmp_path, path):
    """The kernel cuts our UDP GSO sends on the wire (tx-udp-segmentation off, as on a NIC without
    USO); the capture must hold only datagrams that are each one checksummed IPv4 packet <= MTU."""
    lab = udp_lab()
    lab.add_node(1)
    lab.add_node(2)
    assert nsexec(lab.node(1), sys.executable, "-c", SEGMENTATION_OFF, "eth0").stdout.strip() == "False"
    lab.start_forwarder(1, {2: 2}, path=path)
    lab.start_forwarder(2, {1: 1}, path=path)
    pcap = str(tmp_path / "wire.pcap")
    dump = lab.spawn(lab.node(2), ["tcpdump", "-Z", "root", "-i", "eth0", "-n", "-s", "2000", "-c", "20000", "-U",
                                   "-w", pcap, "udp", "port", "8285"], "tcpdump.log")
    try:
        for _ in range(50):
            if "listening" in lab.log("tcpdump.log"):
                break
            time.sleep(0.1)
        assert lost(lab.ping(1, lab.pod_ip(2), count=2)) == (2, 2)
        iperf(lab, 1, 2, secs=2)
        iperf(lab, 2, 1, secs=1)
    finally:
        time.sleep(0.5)
        dump.send_signal(signal.SIGINT)
        dump.wait(10)
    count, bad, largest = verify_pcap(pcap)
    assert count > 1000 and bad == 0 and largest <= lab.TUN_MTU, (count, bad, largest)


ICMP_PROBE = textwrap.dedent("""
    # Send a UDP datagram to an address inside the network that no node leases; print the ICMP we get.
    import json, socket, sys
    raw = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP)
    raw.settimeout(5)
    udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    udp.bind(("0.0.0.0", 40404))
    udp.sendto(b"anyone there?", (sys.argv[1], 9))
    while True:
        data, addr = raw.recvfrom(65535)
        if data[20] == 3:
            print(json.dumps({"from": addr[0], "packet": data.hex()}))
            break
""")


def test_unknown_destination_gets_net_unreachable(udp_lab):
    lab = udp_lab()
    lab.add_node(1)
    lab.add_node(2)
    lab.start_forwarder(1, {2: 2})
    reply = json.loads(nsexec(lab.pod(1), sys.executable, "-c", ICMP_PROBE, "10.5.9.9", timeout=30).stdout)
    p = bytes.fromhex(reply["packet"])
    assert reply["from"] == "10.5.1.0"  # the TUN address, as Flannel
    assert ip_header_ok(p) and p[8] == 8 - 1  # TTL 8, minus the node's routing into the pod
    assert (p[20], p[21]) == (3, 0) and ones_sum(p[20:]) == 0xFFFF
    quoted = p[28:]
    assert len(quoted) == 28 and quoted[9] == 17 and quoted[16:20] == bytes([10, 5, 9, 9])
    assert struct.unpack_from("!HH", quoted, 20) == (40404, 9)  # the UDP header: the 8 bytes after the IP header
    # an ICMP offender gets no ICMP back (Flannel's rule), it is counted as dropped
    assert lost(lab.ping(1, "10.5.9.9", count=1)) == (1, 0)
    counters = control.call(lab.control(1), "counters")
    assert counters["icmp_unreachable_sent"] == 1 and counters["unroutable_dropped"] >= 1


LISTEN = textwrap.dedent("""
    import socket, sys
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind((sys.argv[1], 8285))
    s.settimeout(10)
    print("listening", flush=True)
    data, addr = s.recvfrom(65535)
    print(addr[0], data[16:20].hex(), flush=True)
""")


@pytest.mark.parametrize("path", ["fast", "batch"])
def test_route_changes_take_effect_for_the_next_packet(udp_lab, path):
    lab = udp_lab()
    lab.add_node(1)
    lab.add_node(2)
    lab.add_node(3, pod=False)
    lab.start_forwarder(1, path=path)
    lab.start_forwarder(2, {1: 1})
    with control.ControlClient(lab.control(1)) as ctl:
        assert ctl.call("routes")["routes"] == {}
        assert lost(lab.ping(1, lab.pod_ip(2), count=1)) == (1, 0)
        ctl.call("set", subnet=lab.subnet(2), peer=lab.node_ip(2))
        assert lost(lab.ping(1, lab.pod_ip(2), count=1)) == (1, 1)
        # change: 10.5.2.0/24 now lives behind node 3; the very next packet goes there
        listener = lab.spawn(lab.node(3), [sys.executable, "-u", "-c", LISTEN, lab.node_ip(3)], "listen.log")
        for _ in range(100):
            if "listening" in lab.log("listen.log"):
                break
            time.sleep(0.05)
        ctl.call("set", subnet=lab.subnet(2), peer=lab.node_ip(3))
        lab.ping(1, lab.pod_ip(2), count=1)
        listener.wait(15)
        assert f"{lab.node_ip(1)} 0a050202" in lab.log("listen.log")
        ctl.call("delete", subnet=lab.subnet(2))
        assert ctl.call("routes")["routes"] == {}
        before = ctl.call("counters")["unroutable_dropped"]
        assert lost(lab.ping(1, lab.pod_ip(2), count=1)) == (1, 0)
        assert ctl.call("counters")["unroutable_dropped"] == before + 1
        ctl.call("replace", routes={lab.subnet(2): lab.node_ip(2)})
        assert lost(lab.ping(1, lab.pod_ip(2), count=1)) == (1, 1)
        # a peer the underlay has no route to: counted as a send error and a drop for that peer
        ctl.call("set", subnet=lab.subnet(7), peer="203.0.113.9")
        assert lost(lab.ping(1, "10.5.7.2", count=1)) == (1, 0)
        counters = ctl.call("counters")
        assert counters["send_errors"] == 1 and counters["peers"]["203.0.113.9"]["drops"] == 1
        with pytest.raises(control.ControlError, match="one prefix length"):
            ctl.call("set", subnet="10.6.0.0/16", peer=lab.node_ip(2))
        # update (what the agent sends): sets and deletes at once; a bad one changes nothing
        ctl.call("update", set={lab.subnet(3): lab.node_ip(3)}, delete=[lab.subnet(7)])
        assert ctl.call("routes")["routes"] == {lab.subnet(2): lab.node_ip(2), lab.subnet(3): lab.node_ip(3)}
        with pytest.raises(control.ControlError, match="one prefix length"):
            ctl.call("update", set={"10.6.0.0/16": lab.node_ip(2)}, delete=[lab.subnet(2)])
        assert lab.subnet(2) in ctl.call("routes")["routes"]
        assert lost(lab.ping(1, lab.pod_ip(2), count=1)) == (1, 1)


PARENT = textwrap.dedent("""
    # Stands in for the agent: start the forwarder in a session of its own, then wait to be killed.
    import subprocess, sys, time
    with open(sys.argv[1], "ab") as log:
        child = subprocess.Popen(sys.argv[2:], stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    print(child.pid, flush=True)
    time.sleep(600)
""")


def test_forwarder_survives_the_death_of_its_parent(udp_lab, tmp_path):
    lab = udp_lab()
    lab.add_node(1)
    lab.add_node(2)
    lab.start_forwarder(2, {1: 1})
    parent = subprocess.Popen(["ip", "netns", "exec", lab.node(1), sys.executable, "-u", "-c", PARENT,
                               str(tmp_path / "fwd-n1.log"), *lab.forwarder_argv(1, {2: 2})],
                              stdout=subprocess.PIPE, text=True, start_new_session=True)
    lab.procs.append(parent)
    forwarder_pid = int(parent.stdout.readline())
    lab.wait_ready(1)
    ping = subprocess.Popen(["ip", "netns", "exec", lab.pod(1), "ping", "-c", "100", "-i", "0.02", "-W", "2",
                             lab.pod_ip(2)], stdout=subprocess.PIPE, text=True)
    time.sleep(0.5)
    os.kill(parent.pid, signal.SIGKILL)
    parent.wait(5)
    out, _ = ping.communicate(timeout=60)
    assert lost(subprocess.CompletedProcess([], 0, out, "")) == (100, 100)
    assert control.call(lab.control(1), "ping")["pid"] == forwarder_pid


def test_handover_to_a_new_forwarder_loses_nothing(udp_lab):
    """An upgrade: a second forwarder takes the TUN and the socket over from the first under a
    20 ms ping; packets wait in the kernel queues during the gap. Routes and counters carry over."""
    lab = udp_lab()
    lab.add_node(1)
    lab.add_node(2)
    first = lab.start_forwarder(1, {2: 2})
    lab.start_forwarder(2, {1: 1})
    ping = subprocess.Popen(["ip", "netns", "exec", lab.pod(1), "ping", "-c", "150", "-i", "0.02", "-W", "2",
                             lab.pod_ip(2)], stdout=subprocess.PIPE, text=True)
    time.sleep(1)
    second = lab.spawn(lab.node(1), lab.forwarder_argv(1, takeover=True), "fwd-n1-second.log")
    first.wait(30)
    assert first.returncode == 0
    lab.wait_ready(1, second)
    out, _ = ping.communicate(timeout=60)
    assert lost(subprocess.CompletedProcess([], 0, out, "")) == (150, 150)
    state = control.call(lab.control(1), "ping")
    assert state["pid"] == second.pid and state["routes"] == 1
    after = control.call(lab.control(1), "counters")["peers"][lab.node_ip(2)]
    assert after["tx_packets"] >= 150  # the first forwarder's share carried over
    assert "took over flannel0" in lab.log("fwd-n1-second.log")
    times = [float(t.split("time=")[1].split()[0]) for t in out.splitlines() if "time=" in t]
    print(f"handover: slowest echo {max(times):.1f} ms of {len(times)}")


def test_restart_after_kill_restores_saved_routes(udp_lab):
    """kill -9 of the forwarder: the persistent TUN keeps address and route, the next forwarder
    (as the supervisor would start it) re-attaches and restores the routes it saved."""
    lab = udp_lab()
    lab.add_node(1)
    lab.add_node(2)
    first = lab.start_forwarder(1, {2: 2})  # routes from the command line are saved as well
    lab.start_forwarder(2, {1: 1})
    control.call(lab.control(1), "set", subnet=lab.subnet(3), peer=lab.node_ip(3))
    os.kill(first.pid, signal.SIGKILL)
    first.wait(5)
    assert "10.5.0.0/16 dev flannel0" in nsexec(lab.node(1), "ip", "route").stdout
    second = lab.start_forwarder(1)
    assert control.call(lab.control(1), "routes")["routes"] == {lab.subnet(2): lab.node_ip(2),
                                                                 lab.subnet(3): lab.node_ip(3)}
    assert lost(lab.ping(1, lab.pod_ip(2), count=2)) == (2, 2)
    control.call(lab.control(1), "stop")
    second.wait(10)
    assert "flannel0" not in nsexec(lab.node(1), "ip", "link").stdout
