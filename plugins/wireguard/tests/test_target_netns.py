"""The device as a reconcile target against real wireguard-go: hand-made drift is repaired."""

import subprocess
from types import SimpleNamespace

import pytest
import trio
from overlay_core.reconcile import diff
from overlay_wireguard.calc import desired_peers
from overlay_wireguard.keys import KeyPair
from overlay_wireguard.options import WgOptions
from overlay_wireguard.peer import DeviceConfig
from overlay_wireguard.target import WireguardDeviceTarget
from overlay_wireguard.testing import ping

pytestmark = pytest.mark.netns


async def converge(target, desired):
    """Core's diff and the target's apply: the changes made, and how many failed."""
    to_set, to_delete = diff(desired, await target.dump(), target.owns)
    failed = await target.apply(to_set, to_delete) if to_set or to_delete else 0
    return SimpleNamespace(to_set=to_set, to_delete=to_delete), failed


def wg(node, *args):
    inst = node.instances["flannel-wg"]
    subprocess.run(["ip", "netns", "exec", node.ns, *inst.wg_argv(*args)], check=True, timeout=30,
                   capture_output=True)


async def test_converge_repairs_hand_made_changes(wgnet):
    n1 = wgnet.add_node(1, WgOptions(mode="auto"), ipv6=True)
    n2 = wgnet.add_node(2, WgOptions(mode="auto"), ipv6=True)
    for node in (n1, n2):
        await wgnet.start(node)
    await wgnet.configure_all()
    leases = [n.lease() for n in (n1, n2)]
    desired = [DeviceConfig(n1.keys.private, 51820, "flannel-wg"),
               *desired_peers(n1.local, leases, own_key=n1.lease().key).peers["flannel-wg"].values()]
    target = WireguardDeviceTarget(n1.instances["flannel-wg"].client())
    changes, _ = await converge(target, desired)
    assert changes.to_set == changes.to_delete == []

    stranger = KeyPair.generate().public
    wg(n1, "set", "flannel-wg", "peer", stranger, "allowed-ips", "10.5.9.0/24", "endpoint", "192.0.2.9:51820")
    changes, failed = await converge(target, desired)
    assert [o.key for o in changes.to_delete] == [stranger] and changes.to_set == [] and failed == 0

    wg(n1, "set", "flannel-wg", "peer", n2.keys.public, "remove")
    changes, _ = await converge(target, desired)
    assert [o.key for o in changes.to_set] == [n2.keys.public]

    wg(n1, "set", "flannel-wg", "peer", n2.keys.public, "allowed-ips", "10.5.2.0/24")  # drops the IPv6 subnet
    changes, _ = await converge(target, desired)
    assert [str(n) for n in changes.to_set[0].allowed_ips] == ["10.5.2.0/24", "2001:db8:10:2::/64"]

    wg(n1, "set", "flannel-wg", "listen-port", "40000")
    changes, _ = await converge(target, desired)
    assert changes.to_set == [DeviceConfig(n1.keys.private, 51820, "flannel-wg")]

    state = await target.client.get()
    assert {p.peer for p in state.peers} == set(desired[1:]) and state.config == desired[0]
    for dst, src in ((n2.pod, n1.pod), (n2.pod6, n1.pod6)):
        sent, got = await trio.to_thread.run_sync(lambda d=dst, s=src: ping(n1.ns, d, s, count=3))
        assert got == sent, f"ping {src} -> {dst}: {got}/{sent}"
