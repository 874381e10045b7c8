"""Generic netlink requests through the netlink thread, against the kernel's own ``nlctrl``
family, in a namespace of the test's own (a script run there with ``ip netns exec``)."""

import os

import pytest
from overlay_core.testing.netns import python_in_fresh_namespace

pytestmark = pytest.mark.netns

SCRIPT = """
import json, threading, trio
from pyroute2.netlink import CTRL_CMD_GETFAMILY, NLM_F_ACK, NLM_F_DUMP, NLM_F_REQUEST, ctrlmsg
from overlay_core.dataplane import GenericNetlinkError, Links
from overlay_core.dataplane.netlink import Netlink
from overlay_core.errors import KernelFeatureMissingError

def family_request(name, flags):
    def build(family_id):
        msg = ctrlmsg()
        msg["cmd"] = CTRL_CMD_GETFAMILY
        msg["version"] = 1
        if name:
            msg["attrs"] = [["CTRL_ATTR_FAMILY_NAME", name]]
        msg["header"]["type"] = family_id
        msg["header"]["flags"] = flags
        threads.append(threading.current_thread().name)
        return [msg]
    return build

threads = []

async def main():
    netlink = Netlink()
    links = Links(netlink, set())
    out = {}
    try:
        ctrl = links.generic("nlctrl", ctrlmsg)
        replies = await ctrl.request(family_request("", NLM_F_REQUEST | NLM_F_DUMP))
        out["families"] = sorted(r.get_attr("CTRL_ATTR_FAMILY_NAME") for r in replies)
        try:
            await ctrl.request(family_request("overlay-none", NLM_F_REQUEST | NLM_F_ACK))
        except GenericNetlinkError as exc:
            out["refused"] = [str(exc), exc.errno]
        try:
            await links.generic("overlay-none", ctrlmsg).request(family_request("", NLM_F_REQUEST | NLM_F_DUMP))
        except KernelFeatureMissingError as exc:
            out["missing"] = str(exc)
        again = await ctrl.request(family_request("nlctrl", NLM_F_REQUEST))
        out["again"] = [r.get_attr("CTRL_ATTR_FAMILY_NAME") for r in again]
        out["threads"] = sorted(set(threads))
    finally:
        netlink.close()
    print(json.dumps(out))

trio.run(main)
"""


def test_generic_family_requests_on_the_netlink_thread():
    out = python_in_fresh_namespace(f"ovw-genl{os.getpid()}", SCRIPT)
    assert "nlctrl" in out["families"]
    assert out["refused"] == ["generic netlink nlctrl: No such file or directory", 2]
    assert out["missing"] == ("this kernel has no generic netlink family 'overlay-none' (its module is not loaded): "
                              "load it with 'modprobe overlay-none' or choose another backend")
    assert out["again"] == ["nlctrl"]  # the socket stays usable after a refusal
    assert out["threads"] == ["overlay-netlink"]
