"""tencent-vpc end to end: the lab's VPC router (fake API + metadata in ``ovl-<lab>-vpc``, every
CreateRoutes/DeleteRoutes applied to its kernel table) carries the pods' traffic; the agents keep
their own route right for their whole life.
"""

import json
import os

import pytest
from overlay_core.testing.netns import http_get
from overlay_lab.lab import HEALTH_PORT, PREFIX
from overlay_lab.traffic import ping, pods_of
from overlay_tencent_vpc.lab import CLOUD, console, router_routes

from .helpers import all_pings_ok, ip, up_with_pods, wait_until

pytestmark = pytest.mark.netns

FAST = ("--reconcile-interval=1",)


def router_table(lab) -> dict[str, str]:
    """The VPC router's routes to pod subnets: destination -> next hop."""
    out = {}
    for line in router_routes(lab).splitlines():
        words = line.split()
        if "via" in words and words[0].startswith("10."):
            out[words[0]] = words[words.index("via") + 1]
    return out


def subnets(lab) -> dict[str, str]:
    """Each node's leased subnet, by node address."""
    return {n.ip: lab.readyz(n)[1].get("subnet") for n in lab.state.nodes}


def metrics(node) -> dict[str, float]:
    _, body = http_get(node.ns, "127.0.0.1", HEALTH_PORT, "/metrics")
    out = {}
    for line in body.decode().splitlines():
        if line.startswith("overlay_tencent_vpc_"):
            name, value = line.rsplit(" ", 1)
            out[name] = float(value)
    return out


def lease_of(lab, node) -> str | None:
    data = json.loads(lab.etcdctl("get", "--prefix", f"{PREFIX}/subnets/", "-w", "json"))
    import base64

    for kv in data.get("kvs", []):
        if json.loads(base64.b64decode(kv["value"]))["PublicIP"] == node.ip:
            return base64.b64decode(kv["key"]).decode().rsplit("/", 1)[1]
    return None


def everything_shown(lab) -> str:
    """Every log, status and endpoint a person could look at."""
    texts = [json.dumps(lab.status())]
    for root, _, files in os.walk(lab.dir):
        for name in files:
            if name.endswith(".log"):
                with open(os.path.join(root, name), errors="replace") as fh:
                    texts.append(fh.read())
    for node in lab.state.nodes:
        for path in ("/readyz?verbose", "/metrics"):
            texts.append(http_get(node.ns, "127.0.0.1", HEALTH_PORT, path)[1].decode())
    return "\n".join(texts)


def test_pods_ping_through_routes_only_the_api_created_and_no_secret_is_shown(lab):
    up_with_pods(lab, nodes=3, backend="tencent-vpc", agent_args=FAST)
    owned = subnets(lab)
    wait_until(lambda: router_table(lab) == {s: a for a, s in owned.items()}, what="one VPC route per node")
    for node in lab.state.nodes:  # the nodes route nothing per peer: only the cluster network via the router
        routes = ip("route", "show", ns=node.ns)
        assert "10.5.0.0/16 via 192.0.2.254" in routes
        assert not [s for a, s in owned.items() if a != node.ip and s in routes]
    all_pings_ok(lab)
    node = lab.node(1)
    facts = lab.readyz(node)[1]
    assert facts["vpc"]["route_table"] == CLOUD.table_id and facts["peer_modes"] == {"vpc-routed": 2}
    counted = metrics(node)
    assert counted['overlay_tencent_vpc_api_calls_total{action="CreateRoutes"}'] == 1
    assert "overlay_tencent_vpc_route_table_limit 50.0" in http_get(node.ns, "127.0.0.1", HEALTH_PORT,
                                                                   "/metrics")[1].decode()
    # steady state: describes only, no write
    before = metrics(node)
    wait_until(lambda: metrics(node)['overlay_tencent_vpc_api_calls_total{action="DescribeRouteTables"}']
               >= before['overlay_tencent_vpc_api_calls_total{action="DescribeRouteTables"}'] + 2,
               what="two reconciles")
    after = metrics(node)
    assert after['overlay_tencent_vpc_api_calls_total{action="CreateRoutes"}'] == 1
    assert 'overlay_tencent_vpc_api_calls_total{action="DeleteRoutes"}' not in after
    # only the VPC route carries n1's pods: stopped agent (its route stays), route deleted by hand
    # -> n1's pod unreachable; the agent started again restores it
    lab.stop_agent(node)
    console(lab, "delete", owned[node.ip])
    a, b = pods_of(lab)[:2]
    assert ping(b.ns, a.ipv4, count=2)[1] == 0
    lab.start_agent(node, *FAST)
    lab.wait_ready([node])
    assert router_table(lab).get(owned[node.ip]) == node.ip
    assert ping(b.ns, a.ipv4, count=2) == (2, 2)
    shown = everything_shown(lab)
    assert CLOUD.secret_key not in shown and CLOUD.secret_id not in shown


@pytest.mark.parametrize("action", ["delete", "disable"])
def test_route_deleted_or_disabled_in_the_console_is_restored(lab, action):
    up_with_pods(lab, nodes=2, backend="tencent-vpc", agent_args=("--reconcile-interval=3",))
    node = lab.node(1)
    subnet = subnets(lab)[node.ip]
    wait_until(lambda: router_table(lab).get(subnet) == node.ip, what="n1's VPC route")
    console(lab, action, subnet)
    assert subnet not in router_table(lab)  # the router forwards n1's pods no more ...
    wait_until(lambda: router_table(lab).get(subnet) == node.ip, timeout=30, what="route restored")
    all_pings_ok(lab)  # ... until the reconcile put the route back
    assert metrics(node)['overlay_tencent_vpc_api_calls_total{action="CreateRoutes"}'] == 2
    if action == "disable":  # Flannel's rule: a disabled own route is deleted and created again
        assert metrics(node)['overlay_tencent_vpc_api_calls_total{action="DeleteRoutes"}'] == 1


def test_lease_change_moves_the_route(lab):
    lab.up(nodes=2, backend="tencent-vpc", agent_args=FAST)
    node = lab.node(1)
    key = lease_of(lab, node)
    old = key.replace("-", "/")
    wait_until(lambda: router_table(lab).get(old) == node.ip, what="n1's VPC route")
    lab.etcdctl("put", f"{PREFIX}/subnets/{key}", '{"PublicIP":"192.0.2.99","PublicIPv6":null}')
    wait_until(lambda: lease_of(lab, node) not in (key, None), what="n1 moved to another subnet")
    new = lease_of(lab, node).replace("-", "/")
    wait_until(lambda: router_table(lab).get(new) == node.ip and old not in router_table(lab), timeout=30,
               what="old route deleted, new one created")
    assert sorted(router_table(lab).values()) == sorted(n.ip for n in lab.state.nodes)


def test_full_route_table_leaves_the_node_not_ready_with_the_reason(lab):
    # credentials in the network config this time (the lab otherwise gives them through the environment)
    options = {"RouteTableLimit": 2, "AccessKeyID": CLOUD.secret_id, "AccessKeySecret": CLOUD.secret_key}
    lab.up(nodes=3, backend="tencent-vpc", backend_options=options, agent_args=FAST, start_agents=False)
    first, last = lab.state.nodes[:2], lab.node(3)
    no_env = {"ACCESS_KEY_ID": "", "ACCESS_KEY_SECRET": ""}
    for node in first:
        lab.start_agent(node, *FAST, env=no_env)
    lab.wait_ready(first)
    lab.start_agent(last, *FAST, env=no_env)

    def refused():
        status, facts = lab.readyz(last)
        return status == 503 and "full" in facts.get("not_ready", "") and facts

    wait_until(refused, timeout=30, what="n3 not ready: table full")
    reason = refused()["not_ready"]
    assert "\n" not in reason and CLOUD.table_id in reason and "RouteTableLimit 2" in reason
    assert [r["ready"] for r in lab.status()] == [True, True, False]
    assert len(router_table(lab)) == 2
    shown = everything_shown(lab)
    assert CLOUD.secret_key not in shown and CLOUD.secret_id not in shown


def test_refused_key_stops_the_agent_with_one_line_and_never_shows_it(lab):
    lab.up(nodes=1, backend="tencent-vpc", start_agents=False)
    node = lab.node(1)
    wrong = "wrong-secret-value-42"
    lab.start_agent(node, env={"ACCESS_KEY_SECRET": wrong})
    assert lab.wait_exit(node, 30) == 1
    with open(node.log) as fh:
        log = fh.read()
    last = log.strip().splitlines()[-1]
    assert last.startswith("overlay-core: error: tencent-vpc: the VPC API") and "AuthFailure" in last
    assert "vpc:CreateRoutes" in last and "Traceback" not in log
    assert wrong not in log and CLOUD.secret_id not in log
    assert router_table(lab) == {}
