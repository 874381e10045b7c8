"""Real charons (kernel-libipsec) in namespaces, configured only through our VICI client, the
desired state of :mod:`calc` and the reconcile targets; and xfrm policies in a namespace."""

from __future__ import annotations

import re
import shutil
import signal
import subprocess
import time
import uuid
from ipaddress import IPv4Address, IPv4Network
from pathlib import Path

import pytest
import trio
from overlay_core import ConfigError, Lease, LeaseAttrs, parse_config
from overlay_core.reconcile import converge
from overlay_ipsec import KERNEL, desired_state, parse_options
from overlay_ipsec.calc import ConnSpec, SharedKey, XfrmPolicy
from overlay_ipsec.charon import ROUTING_TABLE, kernel_has_esp
from overlay_ipsec.target import XfrmPolicyTarget
from overlay_ipsec.testing import IpsecLab, LabAgent, LabNode, run, until_established
from overlay_ipsec.vici_client import ViciClient

pytestmark = pytest.mark.netns
PSK = "overlay-ipsec-test-psk-" + "0123456789" * 8
OPTIONS = parse_options(parse_config('{"Network":"10.0.0.0/8","Backend":{"Type":"ipsec","PSK":"%s"}}' % PSK))
NETWORK = IPv4Network("10.0.0.0/8")
MTU = OPTIONS.mtu(1500, libipsec=True)  # the lab's veths have MTU 1500


@pytest.fixture
def lab(tmp_path):
    lab = IpsecLab(tmp_path / "lab", count=3)
    try:
        lab.up()
        for node in lab.nodes:
            lab.start_charon(node)
        yield lab
    finally:
        lab.down()


def Agent(node: LabNode, peers: list[LabNode]) -> LabAgent:
    return LabAgent(node, peers, OPTIONS, NETWORK)


async def test_libipsec_mesh_heals_and_forgets(lab: IpsecLab):
    a, b, c = lab.nodes
    agents = [Agent(n, [p for p in lab.nodes if p is not n]) for n in lab.nodes]
    try:
        # an invalid proposal is refused by charon itself, before any peer connection exists
        with pytest.raises(ConfigError, match="ESPProposal 'aes128gcm16-nosuchalg'"):
            await agents[0].client.check_esp_proposal("aes128gcm16-nosuchalg")
        await agents[0].client.check_esp_proposal(OPTIONS.esp_proposal)
        assert await agents[0].client.list_conns() == []

        await until_established(agents)
        for src in lab.nodes:
            for dst in lab.nodes:
                if src is not dst:
                    assert await trio.to_thread.run_sync(lab.ping, src, dst), f"{src.ns} -> {dst.ns}"
        assert f"mtu {MTU} " in run("ip", "-n", a.ns, "link", "show", "ipsec0").stdout
        assert await trio.to_thread.run_sync(lambda: lab.ping(a, c, 2, MTU - 28))  # a full-size packet, DF set
        await _check_wire(lab, a, b)
        await _check_routes_and_files(lab, a)

        # a CHILD_SA terminated by hand comes back (our converge initiates, or the peer's close_action)
        conn_ab = next(o for o in agents[0].desired().objects if isinstance(o, ConnSpec) and o.peer.subnet == b.subnet)
        run("swanctl", "--terminate", "--ike", conn_ab.name, "--uri", a.paths.uri)
        with trio.fail_after(15):
            await until_established(agents[:1])
        assert await trio.to_thread.run_sync(lab.ping, a, b)

        # a new agent on node a (restart) adopts charon: no SA is renegotiated
        before = {ike.conn: ike.uniqueid for ike in await agents[0].client.list_sas()}
        await agents[0].client.aclose()
        agents[0] = Agent(a, [b, c])
        assert (await agents[0].converge())[2] == 0
        after = {ike.conn: ike.uniqueid for ike in await agents[0].client.list_sas()}
        assert after == before

        # node c leaves: a new agent of a (charon still holds c's connection from the old run) and b forget it
        await agents[0].client.aclose()
        agents[0] = Agent(a, [b])
        agents[1].peers = [a]
        for agent in agents[:2]:
            await agent.converge()
        for agent, peer in ((agents[0], b), (agents[1], a)):
            names = [conn.name for conn in await agent.client.list_conns()]
            assert names == [f"{agent.node.public_ip}-{agent.node.subnet}-{peer.subnet}-{peer.public_ip}"]
            # the terminate of c's SAs completes in the background; c's charon (still configured)
            # keeps knocking, but nothing gets established with it
            with trio.fail_after(10):
                while {ike.remote_host for ike in await agent.client.list_sas()
                       if ike.state == "ESTABLISHED"} - {str(peer.public_ip)}:
                    await trio.sleep(0.3)
            assert [k for k in await agent.client.shared_ids() if str(c.public_ip) in k] == []
        assert await trio.to_thread.run_sync(lab.ping, a, b)

        # charon of node a killed outright and restarted: converge re-establishes its SAs
        pid = a.pid
        await trio.to_thread.run_sync(lab.kill_charon, a, signal.SIGKILL)
        await trio.to_thread.run_sync(lab.start_charon, a)
        assert a.pid != pid
        await until_established(agents[:2], timeout=45)
        assert await trio.to_thread.run_sync(lab.ping, a, b)
        rules = run("ip", "-n", a.ns, "rule", "show").stdout
        assert len(re.findall(rf"lookup {ROUTING_TABLE}\b", rules)) == 1, rules
    finally:
        for agent in agents:
            await agent.client.aclose()


async def _check_wire(lab: IpsecLab, a: LabNode, b: LabNode) -> None:
    """A bounded capture on b's underlay port sees IKE/ESP-in-UDP, never plain pod ICMP."""
    pcap = subprocess.Popen(["ip", "netns", "exec", b.ns, "timeout", "8", "tcpdump", "-n", "-l", "-i", "eth0",
                             "-c", "40", "ip"], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        await trio.sleep(1.0)  # tcpdump attaches
        assert await trio.to_thread.run_sync(lab.ping, a, b, 5)
        out, _ = await trio.to_thread.run_sync(pcap.communicate, None, 15)
    finally:
        if pcap.poll() is None:
            pcap.kill()
            pcap.wait()
    lines = [line for line in out.splitlines() if line.strip()]
    assert lines, "capture saw nothing"
    assert not [line for line in lines if "ICMP" in line and "10.1." in line], lines
    other = [line for line in lines if not re.search(r"\.(4500|500)[ :>]", line)]
    assert not other, "\n".join(other)
    assert any("UDP-encap" in line or "ESP" in line for line in lines), lines


async def _check_routes_and_files(lab: IpsecLab, a: LabNode) -> None:
    """Table 220 holds only peer pod subnets; other traffic never meets ipsec0; files are private
    and the PSK is in none of them."""
    table = run("ip", "-n", a.ns, "route", "show", "table", str(ROUTING_TABLE)).stdout
    dsts = sorted(line.split()[0] for line in table.splitlines())
    assert dsts == ["10.1.2.0/24", "10.1.3.0/24"], table
    assert all("dev ipsec0" in line and f"src {a.pod_ip}" in line for line in table.splitlines())
    underlay = run("ip", "-n", a.ns, "route", "get", "192.0.2.2").stdout
    assert "dev eth0" in underlay
    assert run("ip", "-n", a.ns, "route", "get", "10.1.2.1", "from", a.pod_ip).stdout.count("dev ipsec0") == 1
    assert a.paths.dir.stat().st_mode & 0o777 == 0o700
    for path in a.paths.dir.iterdir():
        if path.is_file():
            assert PSK not in path.read_text(errors="replace"), path


def test_charon_runs_with_its_state_dir_below_run():
    """The agent's default state dir is /run/overlay: our launcher covers /run with a tmpfs and
    must bind the very same directory back (config, VICI socket and log visible from outside)."""
    lab = IpsecLab(Path("/run") / f"ipg-{uuid.uuid4().hex[:8]}", count=1)
    try:
        lab.up()
        lab.start_charon(lab.nodes[0])
        assert lab.nodes[0].paths.log.exists() and lab.nodes[0].paths.vici.is_socket()
    finally:
        lab.down()
        shutil.rmtree(lab.base, ignore_errors=True)


async def test_libipsec_always_encapsulates_in_udp(lab: IpsecLab):
    """UDPEncap false: kernel-libipsec still sends ESP in UDP (it cannot send raw ESP)."""
    a, b = lab.nodes[:2]
    agents = [Agent(a, [b]), Agent(b, [a])]
    try:
        await until_established(agents)
        sas = await agents[0].client.list_sas()
        assert sas and all(ike.state == "ESTABLISHED" for ike in sas)
        listed = run("swanctl", "--list-sas", "--uri", a.paths.uri).stdout
        assert "TUNNEL-in-UDP" in listed, listed
    finally:
        for agent in agents:
            await agent.client.aclose()


def test_kernel_mode_detection_matches_a_namespace_probe():
    """The throwaway-namespace ESP probe agrees with an ESP state added in an ipg- namespace."""
    ns = f"ipg-esp-{time.monotonic_ns() % 100000}"
    run("ip", "netns", "add", ns)
    try:
        direct = run("ip", "-n", ns, "xfrm", "state", "add", "src", "192.0.2.1", "dst", "192.0.2.2", "proto", "esp",
                     "spi", "0x100", "mode", "tunnel", "aead", "rfc4106(gcm(aes))",
                     "0x0102030405060708090a0b0c0d0e0f1011121314", "128", check=False)
        assert kernel_has_esp() == (direct.returncode == 0)
    finally:
        run("ip", "netns", "del", ns, check=False)


async def test_xfrm_policy_target_in_a_namespace():
    """Kernel ESP mode's policies: installed, a deleted one restored, a vanished peer's removed,
    foreign policies untouched (policies work here even though ESP states do not)."""
    ns = f"ipg-pol-{time.monotonic_ns() % 100000}"
    run("ip", "netns", "add", ns)
    try:
        own = Lease(IPv4Network("10.1.1.0/24"), None, LeaseAttrs(IPv4Address("192.0.2.1"), backend_type="ipsec"))
        peers = [Lease(IPv4Network(f"10.1.{i}.0/24"), None, LeaseAttrs(IPv4Address(f"192.0.2.{i}"),
                                                                       backend_type="ipsec")) for i in (2, 3)]
        target = XfrmPolicyTarget(NETWORK, ip=("ip", "-n", ns))
        run("ip", "-n", ns, "xfrm", "policy", "add", "src", "10.9.0.0/24", "dst", "10.9.1.0/24", "dir", "out",
            "tmpl", "src", "192.0.2.1", "dst", "192.0.2.9", "proto", "esp", "reqid", "7", "mode", "tunnel")
        desired = [o for o in desired_state(own, peers, OPTIONS, KERNEL, NETWORK).objects if isinstance(o, XfrmPolicy)]
        assert len(desired) == 6
        assert await converge(target, desired) == (6, 0)
        assert sorted(await target.dump()) == sorted(desired)
        assert await converge(target, desired) == (0, 0)
        run("ip", "-n", ns, "xfrm", "policy", "delete", "src", "10.1.1.0/24", "dst", "10.1.2.0/24", "dir", "out")
        assert await converge(target, desired) == (1, 0)
        fewer = [o for o in desired_state(own, peers[:1], OPTIONS, KERNEL, NETWORK).objects
                 if isinstance(o, XfrmPolicy)]
        assert await converge(target, fewer) == (0, 3)
        assert sorted(await target.dump()) == sorted(fewer)
        assert "reqid 7" in run("ip", "-n", ns, "xfrm", "policy", "list").stdout  # not ours: kept
    finally:
        run("ip", "-n", ns, "xfrm", "policy", "flush", check=False)
        run("ip", "netns", "del", ns, check=False)


async def test_converge_initiates_a_child_sa_nobody_else_restarts(tmp_path):
    """Peer b is configured by hand without start/close actions, so after a CHILD_SA is
    terminated by hand only node a's converge brings it back (an explicit initiate)."""
    lab = IpsecLab(tmp_path / "lab", count=2)
    agent = None
    hand = None
    try:
        lab.up()
        a, b = lab.nodes
        for node in lab.nodes:
            lab.start_charon(node)
        hand = ViciClient(b.paths.vici)
        objects = Agent(b, [a]).desired().objects
        passive = next(o for o in objects if isinstance(o, ConnSpec)).to_vici()
        for child in next(iter(passive.values()))["children"].values():
            child.update(start_action="none", close_action="none", dpd_action="clear")
        for shared in [o for o in objects if isinstance(o, SharedKey)]:
            await hand.load_shared(shared)
        await hand.load_conn(passive)
        agent = Agent(a, [b])
        await until_established([agent])
        conn = next(o for o in agent.desired().objects if isinstance(o, ConnSpec))
        run("swanctl", "--terminate", "--ike", conn.name, "--uri", a.paths.uri)
        with trio.fail_after(10):
            while (await agent.states())[conn.name] != "down":
                await trio.sleep(0.3)
        await trio.sleep(2)  # nobody restarts it on its own
        assert (await agent.states())[conn.name] == "down"
        to_set, _, failed = await agent.converge()
        assert (to_set, failed) == (1, 0)  # the ChildUp: one initiate
        with trio.fail_after(15):
            while (await agent.states())[conn.name] != "established":
                await trio.sleep(0.3)
        assert await trio.to_thread.run_sync(lab.ping, a, b)
    finally:
        for client in (agent.client if agent else None, hand):
            if client is not None:
                await client.aclose()
        lab.down()


async def test_removing_a_peer_ends_its_half_open_ike_sa(tmp_path):
    """Peer b begins an IKE_SA with node a, but its IKE_AUTH never arrives (a drops UDP 4500 from
    b): a holds a half-open SA without connection name. When b leaves a's peers, converge ends
    that SA too, not only the ones named after b's connection (charon alone keeps it 30 s)."""
    lab = IpsecLab(tmp_path / "lab", count=2)
    agent = hand = None
    try:
        lab.up()
        a, b = lab.nodes
        for node in lab.nodes:
            lab.start_charon(node)
        run("ip", "netns", "exec", a.ns, "nft", "add table inet t; add chain inet t in { type filter hook input "
            f"priority 0; }}; add rule inet t in ip saddr {b.public_ip} udp dport 4500 drop")
        agent = Agent(a, [b])
        await agent.converge()  # a starts toward b and is stuck: b's answers to 4500 are dropped
        hand = ViciClient(b.paths.vici)
        objects = Agent(b, [a]).desired().objects
        for shared in [o for o in objects if isinstance(o, SharedKey)]:
            await hand.load_shared(shared)
        await hand.load_conn(next(o for o in objects if isinstance(o, ConnSpec)))  # b starts toward a at once

        async def toward_b() -> list:
            return [ike for ike in await agent.client.list_sas() if ike.remote_host == str(b.public_ip)]

        with trio.fail_after(15):
            named = {c.name for c in await agent.client.list_conns()}
            while not any(ike.conn not in named for ike in await toward_b()):
                await trio.sleep(0.2)  # b's attempt answered by a: half open, no name yet
        agent.peers = []
        await agent.converge()
        with trio.fail_after(5):
            while await toward_b():
                await trio.sleep(0.2)
    finally:
        for client in (agent.client if agent else None, hand):
            if client is not None:
                await client.aclose()
        lab.down()


@pytest.mark.skipif(not kernel_has_esp(), reason="this kernel has no ESP (xfrm states cannot be added): "
                    "kernel mode is covered down to its exact xfrm policies; libipsec mode runs instead")
async def test_kernel_mode_mesh(tmp_path):
    """Flannel's own setup: kernel ESP, our xfrm policies (reqid 11), charon installs only SAs."""
    lab = IpsecLab(tmp_path / "lab", count=2)
    agents: list[LabAgent] = []
    try:
        lab.up()
        for node in lab.nodes:
            run("ip", "-n", node.ns, "route", "add", "10.0.0.0/8", "dev", "eth0")  # as a default route would
            lab.start_charon(node, mode=KERNEL)
        a, b = lab.nodes
        agents = [LabAgent(a, [b], OPTIONS, NETWORK, KERNEL), LabAgent(b, [a], OPTIONS, NETWORK, KERNEL)]
        await until_established(agents)
        assert await trio.to_thread.run_sync(lab.ping, a, b)
        assert "reqid 11" in run("ip", "-n", a.ns, "xfrm", "state").stdout
    finally:
        for agent in agents:
            await agent.client.aclose()
        lab.down()
