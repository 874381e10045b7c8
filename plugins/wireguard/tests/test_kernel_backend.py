"""The backend on the kernel data path, down to the netlink messages it sends: core's links and
generic netlink sender are fakes that record (``overlay_core.testing.contract.FakeLinks``), so this
runs without the wireguard module (this machine has none)."""

import base64
import json
import logging
import os

import pytest
from overlay_core import ConfigError, KernelFeatureMissingError
from overlay_core.dataplane import GenericNetlinkError, LinkInfo
from overlay_core.testing.contract import fake_node, peer
from overlay_wireguard import WireguardBackend
from overlay_wireguard import backend as backend_mod
from overlay_wireguard.kernel import DATA_PATH_ENV, KERNEL, USERSPACE, choose_data_path
from overlay_wireguard.keys import KeyPair
from pyroute2.netlink.generic.wireguard import WG_CMD_SET_DEVICE, WGPEER_F_REMOVE_ME

PSK = base64.b64encode(bytes(range(7, 39))).decode()
CONFIG = '{"Network":"10.5.0.0/16","Backend":{"Type":"wireguard","PSK":"%s"}}' % PSK


@pytest.fixture
def kernel_path(tmp_path, monkeypatch):
    """A backend whose node has the module; links and the genl sender are recording fakes."""
    monkeypatch.setenv("WIREGUARD_KEY_FILE", str(tmp_path / "wgkey"))
    monkeypatch.setattr(backend_mod, "choose_data_path", lambda: (KERNEL, "the kernel creates wireguard devices"))
    node, services = fake_node(CONFIG, tmp_path)
    b = WireguardBackend(node, services)
    b.overlay_network_config(node.config, node)
    return b, node, services.links


def private_key(tmp_path) -> str:
    with open(tmp_path / "wgkey") as fh:
        return fh.read().strip()


def peer_lease(n: int):
    return peer(n, "wireguard", {"PublicKey": KeyPair.generate().public, "Port": 51820})


async def test_start_creates_the_device_by_netlink_and_sets_key_and_port(kernel_path, tmp_path, caplog):
    b, node, links = kernel_path
    with caplog.at_level(logging.INFO, logger="overlay.wireguard"):
        request = await b.overlay_lease_request(node)
    dev = links.devices["flannel-wg"]
    assert (dev.kind, dev.data) == ("wireguard", {"mtu": 1420})
    assert request.backend_data == {"PublicKey": b.keys.public, "Port": 51820}
    (msg,) = links.families["wireguard"].sent
    assert (msg["cmd"], msg["header"]["type"]) == (WG_CMD_SET_DEVICE, links.families["wireguard"].family_id)
    assert msg.get_attr("WGDEVICE_A_IFNAME") == "flannel-wg"
    assert msg.get_attr("WGDEVICE_A_PRIVATE_KEY").decode() == private_key(tmp_path)
    assert msg.get_attr("WGDEVICE_A_LISTEN_PORT") == 51820
    assert msg.get_attr("WGDEVICE_A_PEERS") is None  # peers follow with the first converge
    assert "kernel data path (the kernel creates wireguard devices)" in caplog.text
    assert "created kernel wireguard device flannel-wg" in caplog.text
    assert not b.instances and not b.helpers  # no wireguard-go on this path
    assert b.overlay_report()["wireguard_data_path"] == "kernel"


async def test_peers_are_sent_as_wireguard_set_device_requests(kernel_path):
    b, node, links = kernel_path
    await b.overlay_lease_request(node)
    sent = links.families["wireguard"].sent
    sent.clear()
    target = b.devices["flannel-wg"]
    plans = [b.plan(peer_lease(n)) for n in (2, 3)]
    assert await target.apply([p for plan in plans for p in plan.objects], []) == 0
    (msg,) = sent
    assert msg.get_attr("WGDEVICE_A_PRIVATE_KEY") is None  # settings only when they change
    got = [(p.get_attr("WGPEER_A_PUBLIC_KEY").decode(), p.get_attr("WGPEER_A_ENDPOINT")["addr"],
            [a["addr"] for a in p.get_attr("WGPEER_A_ALLOWEDIPS")],
            p.get_attr("WGPEER_A_PRESHARED_KEY").decode())
           for p in msg.get_attr("WGDEVICE_A_PEERS")]
    assert got == [(plan.objects[0].public_key, f"192.0.2.{n}", [f"10.5.{n}.0/24"], PSK)
                   for n, plan in zip((2, 3), plans)]
    sent.clear()
    assert await target.apply([], [plans[0].objects[0]]) == 0
    (gone,) = sent[0].get_attr("WGDEVICE_A_PEERS")
    assert gone.get_attr("WGPEER_A_PUBLIC_KEY").decode() == plans[0].objects[0].public_key
    assert gone.get_attr("WGPEER_A_FLAGS") == WGPEER_F_REMOVE_ME


async def test_a_device_deleted_by_hand_is_made_again_with_its_key(kernel_path, tmp_path):
    b, node, links = kernel_path
    await b.overlay_lease_request(node)
    node.lease = peer(1, "wireguard", {"PublicKey": b.keys.public, "Port": 51820})
    await b.ensure_devices()
    first = b.index["flannel-wg"]
    assert links.addresses[first]  # the subnet's address on the device
    del links.devices["flannel-wg"]
    sent = links.families["wireguard"].sent
    sent.clear()
    await b.ensure_devices()
    assert b.index["flannel-wg"] != first and links.devices["flannel-wg"].kind == "wireguard"
    assert [m.get_attr("WGDEVICE_A_PRIVATE_KEY").decode() for m in sent] == [private_key(tmp_path)]


async def test_an_existing_kernel_device_is_adopted_untouched_and_a_tun_replaced(kernel_path):
    b, node, links = kernel_path
    links.devices["flannel-wg"] = LinkInfo(7, "flannel-wg", None, "wireguard")
    await b.overlay_lease_request(node)
    assert links.devices["flannel-wg"].index == 7
    assert links.families["wireguard"].sent == []
    links.devices["flannel-wg"] = LinkInfo(8, "flannel-wg", None, "tun")
    await b._ensure_kernel_device("flannel-wg")
    assert links.devices["flannel-wg"].kind == "wireguard"
    assert len(links.families["wireguard"].sent) == 1


async def test_refusals_fall_back_to_one_by_one_and_no_secret_reaches_logs_or_reports(kernel_path, tmp_path, caplog):
    b, node, links = kernel_path
    with caplog.at_level(logging.DEBUG):
        await b.overlay_lease_request(node)
        family = links.families["wireguard"]
        family.sent.clear()

        def refuse(messages):
            raise GenericNetlinkError("generic netlink wireguard: Invalid argument", 22)

        family.answer = refuse
        plans = [b.plan(peer_lease(n)) for n in (2, 3)]
        target = b.devices["flannel-wg"]
        failed = await target.apply([b._device_config(backend_mod.devices(b.local)[0]),
                                     *(p for plan in plans for p in plan.objects)], [])
    assert failed == 3
    assert len(family.sent) == 4  # the batch, then each change alone
    assert "batch refused" in caplog.text and "Invalid argument" in caplog.text
    private = private_key(tmp_path)
    secrets = [private, base64.b64decode(private).hex(), PSK, base64.b64decode(PSK).hex()]
    shown = caplog.text + repr(b.devices) + repr(links.families) + json.dumps(b.overlay_report(), default=str)
    shown += "".join(repr(p) for plan in plans for p in plan.objects)
    assert [s for s in secrets if s in shown] == []


def test_choose_data_path_here_and_by_environment():
    assert choose_data_path({DATA_PATH_ENV: "wireguard-go"}) == (USERSPACE, f"{DATA_PATH_ENV}=wireguard-go")
    with pytest.raises(ConfigError, match="use auto, kernel or wireguard-go"):
        choose_data_path({DATA_PATH_ENV: "fast"})
    if os.path.exists("/sys/module/wireguard"):
        assert choose_data_path({})[0] == KERNEL
        return
    path, why = choose_data_path({})
    assert path == USERSPACE and "wireguard-go is used instead" in why
    with pytest.raises(KernelFeatureMissingError) as err:
        choose_data_path({DATA_PATH_ENV: "kernel"})
    assert "\n" not in str(err.value) and "modprobe wireguard" in str(err.value)
