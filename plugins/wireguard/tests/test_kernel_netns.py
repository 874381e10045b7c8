"""The kernel data path against the real kernel, in a namespace of the test's own: core's
``links.ensure`` (kind ``wireguard``) and generic netlink sender with our messages. Where the
module exists the device is made, configured and read back; here (no module) both requests reach
the kernel and come back as one-line ``KernelFeatureMissingError``s."""

import os

import pytest
from overlay_core.testing.netns import python_in_fresh_namespace

pytestmark = pytest.mark.netns

SCRIPT = """
import json, trio
from overlay_core import KernelFeatureMissingError
from overlay_core.dataplane import Links
from overlay_core.dataplane.netlink import Netlink
from overlay_wireguard.kernel import kernel_device
from overlay_wireguard.keys import KeyPair
from overlay_wireguard.peer import DeviceConfig, WgPeer, allowed_ips

async def main():
    netlink = Netlink()
    links = Links(netlink, set())
    out = {}
    me, peer = KeyPair.generate(), KeyPair.generate()
    try:
        try:
            info, action = await links.ensure("flannel-wg", "wireguard", lambda found: None, lambda prev: {"mtu": 1420})
            out["link"] = [info.kind, action]
        except KernelFeatureMissingError as exc:
            out["link_error"] = str(exc)
        device = kernel_device(links, "flannel-wg")
        try:
            await device.set(DeviceConfig(me.private, 51820), [WgPeer(peer.public, "192.0.2.2:51820",
                                                                       allowed_ips(["10.5.2.0/24"]))])
            state = await device.get()
            out["state"] = [state.config == DeviceConfig(me.private, 51820, "flannel-wg"),
                            [(p.peer.public_key == peer.public, p.peer.endpoint, [str(n) for n in p.peer.allowed_ips])
                             for p in state.peers]]
        except KernelFeatureMissingError as exc:
            out["genl_error"] = str(exc)
    finally:
        netlink.close()
    print(json.dumps(out))

trio.run(main)
"""


def test_kernel_device_through_core_links_and_generic_netlink():
    out = python_in_fresh_namespace(f"ovw-wgk{os.getpid()}", SCRIPT)
    if "link" in out:  # the module exists: a real kernel device, configured and read back
        assert out["link"] == ["wireguard", "created"]
        assert out["state"] == [True, [[True, "192.0.2.2:51820", ["10.5.2.0/24"]]]]
        return
    assert out["link_error"] == ("this kernel cannot create wireguard devices (module wireguard missing): load it "
                                 "with 'modprobe wireguard' or choose another backend")
    assert out["genl_error"] == ("this kernel has no generic netlink family 'wireguard' (its module is not loaded): "
                                 "load it with 'modprobe wireguard' or choose another backend")
