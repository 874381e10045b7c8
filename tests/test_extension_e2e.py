"""The extension backend end to end: Flannel's example scripts from its docs, run by ``sh`` in
three nodes' namespaces (labs named ``ove-<pid>x<n>``; every namespace removed, pass or fail)."""

import itertools
import json
import os

import pytest
from overlay_core.testing.netns import kernel_supports, list_namespaces
from overlay_extension.lab import FLANNEL_HOSTGW_EXAMPLE, LAB_COMMANDS
from overlay_lab.lab import PREFIX, Lab
from overlay_lab.traffic import ping, pods_of

from .helpers import all_pings_ok, ip, leases, log_of, up_with_pods, wait_until

pytestmark = [pytest.mark.netns, pytest.mark.etcd]

_counter = itertools.count()
RECONCILE = "--reconcile-interval=2"  # the periodic reconcile that retries failed add commands

# Flannel's dist/extension-vxlan, word for word (its ShutdownCommand is accepted and, as in Flannel, not run).
FLANNEL_VXLAN_EXAMPLE = {
    "PreStartupCommand": "export VNI=1; export IF_NAME=flannel-vxlan; ip link del \"$IF_NAME\" 2>/dev/null; "
                         "ip link add \"$IF_NAME\" type vxlan id \"$VNI\" dstport 8472 nolearning && "
                         "ip link set mtu 1450 dev \"$IF_NAME\" && cat \"/sys/class/net/${IF_NAME}/address\"",
    "PostStartupCommand": "export IF_NAME=flannel-vxlan; export SUBNET_IP=$(echo \"$SUBNET\" | cut -d'/' -f 1); "
                          "ip addr add \"${SUBNET_IP}/32\" dev \"$IF_NAME\" && ip link set \"$IF_NAME\" up",
    "ShutdownCommand": "export IF_NAME=flannel-vxlan; ip link del \"$IF_NAME\"",
    "SubnetAddCommand": "export SUBNET_IP=$(echo \"$SUBNET\" | cut -d'/' -f 1); export IF_NAME=flannel-vxlan; "
                        "read VTEP; ip route add \"$SUBNET\" nexthop via \"$SUBNET_IP\" dev \"$IF_NAME\" onlink && "
                        "ip neigh replace \"$SUBNET_IP\" dev \"$IF_NAME\" lladdr \"$VTEP\" && "
                        "bridge fdb add \"$VTEP\" dev \"$IF_NAME\" self dst \"$PUBLIC_IP\"",
}


@pytest.fixture
def lab(tmp_path, request):
    made = Lab(f"ove-{os.getpid() % 10000}x{next(_counter)}", state_root=str(tmp_path / "labs"))
    try:
        yield made
    finally:
        failed = getattr(request.node, "rep_call", None)
        if failed is not None and failed.failed:
            for node in made.state.nodes:
                print(f"--- {node.name}:\n{''.join(log_of(node).splitlines(True)[-40:])}")
        made.down()
        assert list_namespaces(made.prefix) == [], f"namespaces of {made.name} left behind"


def routes(node) -> str:
    return ip("route", "show", ns=node.ns)


def test_flannel_hostgw_example_pings_and_removal_deletes_the_route(lab):
    rows = up_with_pods(lab, nodes=3, backend="extension", agent_args=(RECONCILE,),
                        backend_options=FLANNEL_HOSTGW_EXAMPLE)
    assert lab.state.config["Backend"] == {"Type": "extension", **FLANNEL_HOSTGW_EXAMPLE}
    n1, n2, n3 = lab.state.nodes
    subnets = {row["node"]: row["subnet"] for row in rows}
    for node in (n1, n2, n3):
        for other in (n1, n2, n3):
            if other is not node:
                assert f"{subnets[other.name]} via {other.ip} dev eth0" in routes(node)
    all_pings_ok(lab)
    stored = {key: entry["value"] for key, entry in leases(lab).items()}
    assert all(v["BackendType"] == "extension" and "BackendData" not in v for v in stored.values()), stored
    # n3 leaves for good: its agent stops and its lease goes; the others run SubnetRemoveCommand.
    lab.stop_agent(n3)
    lab.etcdctl("del", f"{PREFIX}/subnets/{subnets['n3'].replace('/', '-')}")
    for node in (n1, n2):
        wait_until(lambda node=node: subnets["n3"] not in routes(node), 30, f"route to n3's subnet gone on {node.name}")
        assert f"{subnets['n2' if node is n1 else 'n1']} via" in routes(node)
    assert lab.readyz(n1)[1]["peers"] == 1


def test_failing_add_command_is_retried_until_it_succeeds(lab, tmp_path):
    gate = tmp_path / "gate"
    add = (f'[ -e {gate} ] || {{ echo "gate closed" >&2; exit 1; }}; '
           'ip route add "$SUBNET" via "$PUBLIC_IP"')
    rows = up_with_pods(lab, nodes=2, backend="extension", agent_args=(RECONCILE,),
                        backend_options={"SubnetAddCommand": add})
    n1, n2 = lab.state.nodes
    s2 = rows[1]["subnet"]
    wait_until(lambda: "(attempt 2;" in log_of(n1), 60, "a second failed attempt on n1")
    assert "extension: SubnetAddCommand for " f"{s2} at {n2.ip} failed (attempt 1; retried at every reconcile): " \
           "exit 1: gate closed" in log_of(n1)
    assert s2 not in routes(n1)
    status = lab.readyz(n1)[1]
    assert status["failing_commands"] == 1, status
    gate.touch()
    wait_until(lambda: f"{s2} via {n2.ip}" in routes(n1), 60, "the route after the gate opened")
    wait_until(lambda: f"{rows[0]['subnet']} via {n1.ip}" in routes(n2), 60, "n2's route to n1")
    all_pings_ok(lab)
    assert "failed attempts" in log_of(n1) and lab.readyz(n1)[1]["failing_commands"] == 0


def test_flannel_vxlan_example_carries_backend_data_to_peers_stdin(lab):
    if not kernel_supports("vxlan"):
        pytest.skip("this kernel cannot create vxlan devices")
    rows = up_with_pods(lab, nodes=3, backend="extension", backend_options=FLANNEL_VXLAN_EXAMPLE)
    all_pings_ok(lab)
    n1, n2, n3 = lab.state.nodes
    macs = {node.name: ip("-j", "link", "show", "flannel-vxlan", ns=node.ns) for node in (n1, n2, n3)}
    macs = {name: json.loads(out)[0]["address"] for name, out in macs.items()}
    stored = leases(lab)
    for row in rows:
        lease = stored[row["subnet"].replace("/", "-")]["value"]
        assert lease["BackendData"] == macs[row["node"]]  # PreStartupCommand's output, a JSON string
    fdb = ip("neigh", "show", "dev", "flannel-vxlan", ns=n1.ns)
    assert macs["n2"] in fdb and macs["n3"] in fdb
    with open(n1.log) as fh:
        assert "ShutdownCommand is not run" in fh.read()


def test_lab_default_survives_a_restart_and_removes_a_peer_that_left_meanwhile(lab):
    """``lab up --backend extension`` as is: pods ping; the agent of n1 is killed (-9), n3 leaves
    while it is down, and the restarted agent removes n3's route (from its record of connected
    peers) and adds the others again without an error (``ip route replace``)."""
    rows = up_with_pods(lab, nodes=3, backend="extension")
    assert lab.state.config["Backend"] == {"Type": "extension", **LAB_COMMANDS}
    all_pings_ok(lab)
    n1, n2, n3 = lab.state.nodes
    s3 = rows[2]["subnet"]
    assert lab.stop_agent(n1, sig=9) is not None
    all_pings_ok(lab)  # the routes are the kernel's: no agent needed to keep them
    lab.stop_agent(n3)
    lab.etcdctl("del", f"{PREFIX}/subnets/{s3.replace('/', '-')}")
    wait_until(lambda: s3 not in routes(n2), 30, "n2 removing n3's route")
    assert s3 in routes(n1)
    lab.start_agent(n1)
    lab.wait_ready([n1], timeout=60)
    wait_until(lambda: s3 not in routes(n1), 30, "the restarted n1 removing n3's route")
    status = lab.readyz(n1)[1]
    assert status["failing_commands"] == 0 and status["peers"] == 1, status
    assert [p["state"] for p in status["peer_status"].values()] == ["programmed"]
    p1, p2 = (next(p for p in pods_of(lab) if p.node == node.name) for node in (n1, n2))
    assert ping(p1.ns, p2.ipv4) == (3, 3) and ping(p2.ns, p1.ipv4) == (3, 3)
