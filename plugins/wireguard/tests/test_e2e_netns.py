"""End to end in namespaces: wireguard-go per node, configured only from lease values through
this package; pods ping over the tunnel, the underlay sees only WireGuard UDP."""

import subprocess
import time

import pytest
import trio
from overlay_core.lease import lease_from_kv
from overlay_wireguard.calc import plan_peer
from overlay_wireguard.options import WgOptions
from overlay_wireguard.status import peer_report
from overlay_wireguard.testing import ping, wait_ping

pytestmark = pytest.mark.netns


async def all_pings(nodes, family=4):
    out = {}
    for src in nodes:
        for dst in nodes:
            if src is not dst:
                s, d = (src.pod, dst.pod) if family == 4 else (src.pod6, dst.pod6)
                out[(src.name, dst.name)] = await trio.to_thread.run_sync(lambda s=s, d=d, n=src.ns: ping(n, d, s))
    return out


def ok(matrix):
    return bool(matrix) and all(sent == got > 0 for sent, got in matrix.values())


class Capture:
    """A bounded tcpdump on the switch's bridge (``-c`` and ``timeout``)."""

    def __init__(self, ns, count=40, seconds=25):
        self.proc = subprocess.Popen(["ip", "netns", "exec", ns, "timeout", str(seconds), "tcpdump", "-n", "-l", "-i",
                                      "br0", "-c", str(count), "(ip and not igmp) or ip6"],
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        self.proc.stderr.readline()  # "listening on br0 ..." once the capture runs

    def lines(self):
        try:
            out, _ = self.proc.communicate(timeout=40)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            out, _ = self.proc.communicate()
        return [line for line in out.splitlines() if line.strip()]


def classify(lines, ports):
    """(wireguard UDP lines, lines that must not be there)."""
    wire, bad = [], []
    for line in lines:
        inner = "10.5." in line or "2001:db8:10:" in line
        if " UDP" in line and any(f".{p} " in line or f".{p}:" in line for p in ports) and not inner:
            wire.append(line)
        elif "ICMP6" in line and "echo" not in line and not inner:
            continue  # neighbour discovery and MLD on the underlay
        else:
            bad.append(line)
    return wire, bad


async def test_three_nodes_v4_ping_matrix_and_capture(wgnet):
    nodes = [wgnet.add_node(i, WgOptions()) for i in (1, 2, 3)]
    for node in nodes:
        await wgnet.start(node)
    await wgnet.configure_all()
    cap = Capture(wgnet.switch, count=30)
    matrix = await all_pings(nodes)
    assert ok(matrix), matrix
    wire, bad = classify(cap.lines(), (51820,))
    assert bad == [] and len(wire) >= 10, (bad, wire[:5])
    state = await nodes[0].instances["flannel-wg"].client().get()
    reports = {s.peer.key: peer_report("flannel-wg", s, time.time()) for s in state.peers}
    assert set(reports) == {nodes[1].keys.public, nodes[2].keys.public}
    assert all(r.state == "up" and r.detail["rx_bytes"] > 0 and r.detail["tx_bytes"] > 0 for r in reports.values())


@pytest.mark.parametrize("mode", ["separate", "auto", "ipv6"])
async def test_dual_stack(wgnet, mode):
    nodes = [wgnet.add_node(i, WgOptions(mode=mode), ipv6=True) for i in (1, 2)]
    for node in nodes:
        await wgnet.start(node)
    await wgnet.configure_all()
    cap = Capture(wgnet.switch, count=30)
    assert ok(await all_pings(nodes, 6))
    assert ok(await all_pings(nodes, 4))
    wire, bad = classify(cap.lines(), (51820, 51821))
    assert bad == [] and wire
    if mode == "ipv6":  # the tunnel runs over the IPv6 underlay
        assert all(" IP6 2001:db8:ff::" in line for line in wire), wire[:3]


async def test_flannel_written_quirky_lease_is_reachable(wgnet):
    """A node in ipv6 mode whose lease says what Flannel writes (BackendV6Data Port 51821 while
    its single device listens on 51820) is reached on 51820."""
    n1, n2 = (wgnet.add_node(i, WgOptions(mode="ipv6"), ipv6=True) for i in (1, 2))
    for node in (n1, n2):
        await wgnet.start(node)
    k = n2.keys.public
    flannel = lease_from_kv(
        "10.5.2.0-24&2001:db8:10:2::-64",
        '{"PublicIP":"192.0.2.2","PublicIPv6":"2001:db8:ff::2","BackendType":"wireguard",'
        f'"BackendData":{{"PublicKey":"{k}","Port":51820}},"BackendV6Data":{{"PublicKey":"{k}","Port":51821}}}}')
    assert plan_peer(n1.local, flannel).peers[0].endpoint == "[2001:db8:ff::2]:51820"
    await wgnet.configure(n1, [n1.lease(), flannel])
    await wgnet.configure(n2, [n1.lease(), n2.lease()])
    assert ok(await all_pings([n1, n2], 6)) and ok(await all_pings([n1, n2], 4))


async def test_wireguard_go_killed_relaunched_and_reconfigured(wgnet):
    n1, n2 = (wgnet.add_node(i, WgOptions()) for i in (1, 2))
    for node in (n1, n2):
        await wgnet.start(node)
    await wgnet.configure_all()
    assert ok(await all_pings([n1, n2]))
    wgnet.kill(n1, "flannel-wg")
    sent, got = await trio.to_thread.run_sync(lambda: ping(n1.ns, n2.pod, n1.pod, count=1))
    assert got == 0  # the device died with the process
    await wgnet.start(n1, "flannel-wg")
    await wgnet.configure(n1, [n1.lease(), n2.lease()])
    assert await trio.to_thread.run_sync(lambda: wait_ping(n1.ns, n2.pod, n1.pod))
    assert ok(await all_pings([n1, n2]))
