"""The lean rtnetlink dump against objects made by iproute2 in a namespace of the test's own."""

import json
import os
import subprocess
import sys

import pytest
from overlay_core.testing.netns import add_namespace, delete_namespace, ip

pytestmark = pytest.mark.netns

SCRIPT = """
import ipaddress, json, sys, trio
from overlay_core.dataplane.objects import Scope
from overlay_core.dataplane.rtnl import dump_owned
scope = Scope((ipaddress.ip_network("10.5.0.0/16"), ipaddress.ip_network("2001:db8:10::/48")), (int(sys.argv[1]),))
print(json.dumps(sorted(map(str, trio.run(dump_owned, scope)))))
"""


def test_dump_owned_reads_exactly_our_objects():
    ns = f"ovl-rtnl{os.getpid()}"
    add_namespace(ns)
    try:
        ip("link", "add", "eth0", "type", "veth", "peer", "name", "eth0p", ns=ns)
        ip("addr", "add", "192.0.2.1/24", "dev", "eth0", ns=ns)
        ip("addr", "add", "2001:db8::1/64", "dev", "eth0", "nodad", ns=ns)
        ip("link", "set", "eth0", "up", ns=ns)
        ip("link", "add", "flannel.1", "type", "vxlan", "id", "1", "local", "192.0.2.1", "dev", "eth0",
           "dstport", "8472", "nolearning", ns=ns)
        ip("link", "set", "flannel.1", "up", ns=ns)
        index = json.loads(ip("-j", "link", "show", "flannel.1", ns=ns))[0]["ifindex"]
        eth0 = json.loads(ip("-j", "link", "show", "eth0", ns=ns))[0]["ifindex"]
        ip("-batch", "-", ns=ns, input="\n".join([
            "neigh add 10.5.2.0 lladdr 0a:00:00:00:00:02 dev flannel.1 nud permanent",
            "neigh add 10.5.3.0 lladdr 0a:00:00:00:00:03 dev flannel.1 nud stale",  # not permanent: not ours
            "route add 10.5.2.0/24 via 10.5.2.0 dev flannel.1 onlink proto 79",
            "route add 10.5.4.0/24 via 192.0.2.4 dev eth0 proto 79",
            "route add 10.5.5.0/24 via 192.0.2.5 dev eth0",  # another protocol: not ours
            "route add 2001:db8:10:2::/64 via 2001:db8::2 dev eth0 proto 79",
            "route add 10.5.6.0/24 via 192.0.2.6 dev eth0 proto 79 table 100",  # other table
            "route add unreachable 10.5.7.0/24 proto 79",
        ]))
        subprocess.run(["bridge", "-n", ns, "fdb", "add", "0a:00:00:00:00:02", "dev", "flannel.1", "dst",
                        "192.0.2.2", "self", "permanent"], check=True)
        out = subprocess.run(["ip", "netns", "exec", ns, sys.executable, "-c", SCRIPT, str(index)],
                             capture_output=True, text=True, check=True).stdout
    finally:
        delete_namespace(ns)
    assert json.loads(out) == sorted([
        f"fdb 0a:00:00:00:00:02 dst 192.0.2.2 dev #{index}",
        f"neigh 10.5.2.0 lladdr 0a:00:00:00:00:02 dev #{index}",
        f"route 10.5.2.0/24 via 10.5.2.0 dev #{index} onlink",
        f"route 10.5.4.0/24 via 192.0.2.4 dev #{eth0}",
        f"route 2001:db8:10:2::/64 via 2001:db8::2 dev #{eth0}",
        "route unreachable 10.5.7.0/24",
    ])


APPLY = """
import ipaddress, json, sys, trio
from overlay_core.dataplane import kernel
from overlay_core.dataplane.kernel import Kernel
from overlay_core.dataplane.netlink import Netlink
from overlay_core.dataplane.objects import Route, Scope

kernel.BATCH_THRESHOLD = int(sys.argv[1])  # 0: every change through ip -batch
net = ipaddress.ip_network
fail = Route(net("10.5.2.0/24"), None, 0, type="unreachable")
hole = Route(net("10.5.3.0/24"), None, 0, type="blackhole")
plain = Route(net("10.5.4.0/24"), ipaddress.ip_address("192.0.2.4"), int(sys.argv[2]))

async def main():
    target = Kernel(Netlink(), lambda: Scope((net("10.5.0.0/16"),)))
    steps = []
    for to_set, to_delete in (([fail, hole, plain], []),
                              ([Route(net("10.5.4.0/24"), None, 0, type="unreachable")], [fail, hole])):
        assert await target.apply(to_set, to_delete) == 0
        steps.append(sorted(map(str, await target.dump())))
    print(json.dumps(steps))

trio.run(main)
"""


@pytest.mark.parametrize("batch", [False, True], ids=["pyroute2", "ip-batch"])
def test_unreachable_routes_are_set_dumped_replaced_and_deleted(batch):
    ns = f"ovl-rtnl{os.getpid()}"
    add_namespace(ns)
    try:
        ip("link", "add", "eth0", "type", "veth", "peer", "name", "eth0p", ns=ns)
        ip("addr", "add", "192.0.2.1/24", "dev", "eth0", ns=ns)
        ip("link", "set", "eth0", "up", ns=ns)
        eth0 = json.loads(ip("-j", "link", "show", "eth0", ns=ns))[0]["ifindex"]
        out = subprocess.run(["ip", "netns", "exec", ns, sys.executable, "-c", APPLY, "0" if batch else "64",
                              str(eth0)], capture_output=True, text=True, check=True).stdout
        table = ip("route", "show", ns=ns)
    finally:
        delete_namespace(ns)
    assert json.loads(out) == [
        ["route 10.5.4.0/24 via 192.0.2.4 dev #%d" % eth0, "route blackhole 10.5.3.0/24",
         "route unreachable 10.5.2.0/24"],
        ["route unreachable 10.5.4.0/24"],
    ]
    assert "unreachable 10.5.4.0/24 proto 79" in table
