"""The UAPI client and the launcher against real wireguard-go, in namespaces of our own."""

import subprocess
import sys
from ipaddress import ip_network

import pytest
import trio
from overlay_core.services import Secret
from overlay_wireguard.keys import KeyPair
from overlay_wireguard.options import WgOptions
from overlay_wireguard.peer import DeviceConfig, WgPeer, allowed_ips
from overlay_wireguard.uapi import UapiError

pytestmark = pytest.mark.netns


async def test_set_get_roundtrip_and_errors(wgnet):
    node = wgnet.add_node(1, WgOptions())
    other = wgnet.add_node(2, WgOptions())  # same device name in another namespace: no collision
    await wgnet.start(node)
    await wgnet.start(other)
    inst = node.instances["flannel-wg"]
    client = inst.client()
    a, b, c = (KeyPair.generate().public for _ in range(3))
    dev = "flannel-wg"
    peers = [WgPeer(a, "192.0.2.2:51820", allowed_ips(["10.5.2.0/24"]), Secret(b"k" * 32), 25, dev),
             WgPeer(b, "[2001:db8:ff::3]:51821", allowed_ips(["10.5.3.0/24", "2001:db8:10:3::/64"]), device=dev),
             WgPeer(c, None, allowed_ips(["10.5.4.0/24"]), device=dev)]
    await client.set(DeviceConfig(node.keys.private, 51820), peers, replace_peers=True)
    state = await client.get()
    assert state.config == DeviceConfig(node.keys.private, 51820, dev)
    assert {p.peer for p in state.peers} == set(peers)
    assert (await other.instances["flannel-wg"].client().get()).peers == ()  # the other node is untouched
    await client.set(remove=[c])
    assert {p.peer.key for p in (await client.get()).peers} == {a, b}
    with pytest.raises(UapiError) as err:
        await client.set(peers=[WgPeer(a, "192.0.2.2:99999", ())])  # a port wireguard-go refuses
    assert err.value.errno is not None and err.value.errno < 0 and a not in str(err.value)
    # wg show through the per-instance socket directory sees the same device
    show = subprocess.run(["ip", "netns", "exec", node.ns, *inst.wg_argv("show", "flannel-wg", "peers")],
                          capture_output=True, text=True, timeout=30)
    assert sorted(show.stdout.split()) == sorted([a, b])
    # or from inside wireguard-go's own mount namespace, as the README tells operators
    pid = node.procs["flannel-wg"].pid
    show = subprocess.run(["nsenter", "--target", str(pid), "--mount", "--net", "wg", "show", "flannel-wg", "peers"],
                          capture_output=True, text=True, timeout=30)
    assert sorted(show.stdout.split()) == sorted([a, b])


async def test_running_instance_found_only_from_its_namespace(wgnet):
    node = wgnet.add_node(1, WgOptions())
    await wgnet.start(node)
    inst = node.instances["flannel-wg"]
    pid = node.procs["flannel-wg"].pid
    with open(f"/proc/{pid}/cmdline", "rb") as fh:  # unshare and sh exec'd into wireguard-go itself
        assert fh.read().split(b"\0")[:-1] == [a.encode() for a in inst.running_argv()]
    assert await inst.running_pid() is None  # we (the test) are in the root namespace
    script = ("import sys, trio; from pathlib import Path; from overlay_wireguard.userspace import WireguardGo;"
              "print(trio.run(WireguardGo('flannel-wg', Path(sys.argv[1])).running_pid))")
    out = await trio.run_process(["ip", "netns", "exec", node.ns, sys.executable, "-c", script, str(node.sockdir)],
                                 capture_stdout=True)
    assert int(out.stdout) == pid
    wgnet.kill(node, "flannel-wg")
    assert not await inst.ready()


async def test_thousand_peers_one_transaction(wgnet):
    node = wgnet.add_node(1, WgOptions())
    await wgnet.start(node)
    client = node.instances["flannel-wg"].client(timeout=60)
    peers = [WgPeer(KeyPair.generate().public, f"198.51.100.{i % 250 + 1}:51820",
                    allowed_ips([ip_network(f"10.{100 + i // 256}.{i % 256}.0/24")]), device="flannel-wg")
             for i in range(1000)]
    await client.set(DeviceConfig(node.keys.private, 51820), peers, replace_peers=True)
    state = await client.get()
    assert len(state.peers) == 1000 and {p.peer for p in state.peers} == set(peers)


async def test_outlives_the_process_that_started_it(wgnet):
    """Started in a new session by an 'agent' that is then killed with SIGKILL, wireguard-go and
    its configuration stay, and the instance is found again for adoption."""
    node = wgnet.add_node(1, WgOptions())
    inst = node.instances["flannel-wg"]
    inst.prepare()
    agent_code = ("import os, subprocess, sys, time; p = subprocess.Popen(sys.argv[1:], start_new_session=True,"
                  " stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,"
                  " env={**os.environ, 'WG_PROCESS_FOREGROUND': '1'}); print(p.pid, flush=True); time.sleep(60)")
    agent = await trio.lowlevel.open_process(["ip", "netns", "exec", node.ns, sys.executable, "-c", agent_code,
                                              *inst.argv()], stdout=subprocess.PIPE)
    try:
        pid = int((await agent.stdout.receive_some(64)).split()[0])
        with trio.fail_after(20):
            while not await inst.ready():
                await trio.sleep(0.05)
        peer = WgPeer(KeyPair.generate().public, "192.0.2.2:51820", allowed_ips(["10.5.2.0/24"]), device="flannel-wg")
        await inst.client().set(DeviceConfig(node.keys.private, 51820), [peer])
    finally:
        agent.kill()
        await agent.wait()
    await trio.sleep(0.5)
    state = await inst.client().get()
    assert [p.peer for p in state.peers] == [peer] and state.config.listen_port == 51820
    script = ("import sys, trio; from pathlib import Path; from overlay_wireguard.userspace import WireguardGo;"
              "print(trio.run(WireguardGo('flannel-wg', Path(sys.argv[1])).running_pid))")
    out = await trio.run_process(["ip", "netns", "exec", node.ns, sys.executable, "-c", script, str(node.sockdir)],
                                 capture_stdout=True)
    assert int(out.stdout) == pid
