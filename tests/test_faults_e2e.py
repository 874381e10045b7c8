"""Faults end to end (issue 10): etcd partitions and outages, hostile leases, a garbage config,
a 3-member etcd cluster losing a member, ``kill -9`` under TCP load, all in namespaces.

Short leases (``--subnet-lease-ttl``) keep the TTL scenarios to about a minute each. Every wait
is bounded; the only time bounds asserted are generous ones the fault itself needs. Measured
figures are printed (run with ``-s`` to see them).
"""

import ipaddress
import json
import signal
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
from overlay_core.testing.netns import NetnsError
from overlay_lab.lab import PREFIX
from overlay_lab.traffic import BackgroundPing, add_pods, iperf, pods_of, remove_pods

from .helpers import (
    all_pings_ok,
    etcd_connections,
    etcd_reachable,
    fdb,
    leases,
    log_of,
    metric,
    owned_routes,
    up_with_pods,
    vxlan_lease,
    vxlan_state,
    wait_until,
)

pytestmark = [pytest.mark.netns, pytest.mark.etcd]

TTL = 70  # seconds; the renew margin is at least a minute, so this renews every 10 s
TTL_ARGS = (f"--subnet-lease-ttl={TTL}", "--subnet-lease-renew-margin=1")
SENTINEL = "10.5.250.0-24"  # a valid peer lease written after a fault: proves events flow


def subnet_of(lab, node) -> str | None:
    return lab.readyz(node)[1].get("subnet")


def key(subnet: str) -> str:
    return subnet.replace("/", "-")


def vtep_mac(lab, node) -> str:
    return lab.readyz(node)[1]["vxlan_devices"]["flannel.1"]


def programs(node, subnet: str, public_ip: str, mac: str) -> bool:
    """Has ``node`` programmed a vxlan peer: route via flannel.1 and fdb entry to its public IP?"""
    route = f"{subnet} via {subnet.split('/')[0]} dev flannel.1 onlink"
    return route in owned_routes(node) and f"{mac} dst {public_ip} self permanent" in fdb(node)


def owned_prefixes(node) -> set[str]:
    return {line.split()[0] for line in owned_routes(node).splitlines() if line.strip()}


def store_of(lab, node) -> dict:
    return lab.readyz(node)[1].get("store") or {}


def rejected(lab, node) -> dict:
    return lab.readyz(node)[1].get("rejected_leases") or {}


def names(mapping: dict, name: str) -> bool:
    """Is lease ``name`` a key of ``mapping`` (by key name or full etcd key)?"""
    return any(k == name or k.endswith("/" + name) for k in mapping)


# -- 1. partition heal ---------------------------------------------------------------------------

def test_partition_heal_programs_the_node_that_took_our_old_subnet(lab):
    up_with_pods(lab, nodes=2, agent_args=TTL_ARGS)
    a, b = lab.state.nodes
    old = subnet_of(lab, a)
    lab.cut_etcd(a)
    wait_until(lambda: key(old) not in leases(lab), timeout=TTL + 30, what=f"{old} to expire while A is cut off")
    taker = lab.add_node()
    with open(taker.subnet_file, "w") as fh:  # the taker asks for A's old subnet, and gets it (it is free)
        first = ipaddress.ip_network(old)[1]
        fh.write(f"FLANNEL_NETWORK=10.5.0.0/16\nFLANNEL_SUBNET={first}/{old.split('/')[1]}\n")
    lab.start_agent(taker, *TTL_ARGS)
    lab.wait_ready([taker])
    assert subnet_of(lab, taker) == old
    lab.heal_etcd(a)
    healed = time.monotonic()
    wait_until(lambda: subnet_of(lab, a) not in (None, old), timeout=60, what="A to move to a new subnet")
    moved = time.monotonic() - healed
    new = subnet_of(lab, a)
    taker_mac = vtep_mac(lab, taker)
    wait_until(lambda: programs(a, old, taker.ip, taker_mac), timeout=20,
               what=f"A to program the taker's lease {old} (route and fdb)")
    print(f"\npartition heal: A moved {old} -> {new} {moved:.1f} s after the heal")
    assert metric(a, "overlay_watch_relists_total") == 0  # programmed from watch events, no re-list
    assert programs(a, subnet_of(lab, b), b.ip, vtep_mac(lab, b))
    for node in (b, taker):
        wait_until(lambda n=node: programs(n, new, a.ip, vtep_mac(lab, a)), timeout=20,
                   what=f"{node.name} to program A's new subnet")
    remove_pods(lab, a)  # A's pods are re-addressed from its new subnet, as after any subnet change
    add_pods(lab, a, 1)
    add_pods(lab, taker, 1)
    all_pings_ok(lab)
    assert "its key now names" not in log_of(a)


# -- 2. hostile and impossible leases ---------------------------------------------------------------

PEER_HALF = "<upper half of n2's subnet>"


@pytest.mark.parametrize("name, public_ip", [
    pytest.param("192.0.2.0-24", "192.0.2.50", id="underlay-prefix"),
    pytest.param("10.99.0.0-24", "192.0.2.50", id="outside-network"),
    pytest.param("10.5.0.0-16", "192.0.2.50", id="whole-network"),
    pytest.param("10.5.200.0-25", "192.0.2.50", id="wrong-prefix-length"),
    pytest.param(PEER_HALF, "192.0.2.50", id="inside-node-subnets"),  # n1: a peer's; n2: its own
    pytest.param("10.5.201.0-24", "10.5.1.1", id="public-ip-in-pod-network"),
])
def test_hostile_lease_is_not_programmed_and_is_reported(lab, name, public_ip):
    up_with_pods(lab, nodes=2)
    nodes = lab.state.nodes
    if name == PEER_HALF:
        name = f"{ipaddress.ip_network(subnet_of(lab, nodes[1]))[128]}-25"
    prefix = name.replace("-", "/")
    lab.etcdctl("put", f"{PREFIX}/subnets/{name}", vxlan_lease(public_ip))
    lab.etcdctl("put", f"{PREFIX}/subnets/{SENTINEL}", vxlan_lease("192.0.2.60", "c6:d2:32:6f:8f:45"))
    sentinel = SENTINEL.replace("-", "/")
    for node in nodes:  # the hostile put came first: once the sentinel is in, it was handled
        wait_until(lambda n=node: sentinel in owned_prefixes(n), timeout=15,
                   what=f"{node.name} to program the valid lease written after {name}")
    for node in nodes:
        assert prefix not in owned_prefixes(node), f"{node.name} programmed {name}"
        assert etcd_reachable(lab, node), f"{node.name} lost its underlay"
    all_pings_ok(lab)
    for node in nodes:
        wait_until(lambda n=node: names(rejected(lab, n), name), timeout=10,
                   what=f"{node.name}'s /readyz to list {name} in rejected_leases")
        assert metric(node, "overlay_leases_rejected_total") >= 1
        warnings = [line for line in log_of(node).splitlines()
                    if "WARNING" in line and "skipping lease" in line and name in line]
        assert len(warnings) == 1, warnings
    lab.etcdctl("del", f"{PREFIX}/subnets/{name}")
    for node in nodes:
        wait_until(lambda n=node: not names(rejected(lab, n), name), timeout=10,
                   what=f"{node.name}'s rejected_leases to drop {name} once deleted")


# -- 3. garbage config at runtime ---------------------------------------------------------------------

def test_garbage_config_keeps_the_data_plane_and_is_reported(lab):
    interval = 1.0
    up_with_pods(lab, nodes=2, agent_args=(f"--reconcile-interval={interval:g}",))
    nodes = lab.state.nodes
    good = json.dumps(lab.state.config)
    marks = {node.name: len(log_of(node)) for node in nodes}
    lab.etcdctl("put", f"{PREFIX}/config", "not json")
    time.sleep(3 * interval)  # a few config checks see the garbage
    all_pings_ok(lab)
    for node in nodes:
        wait_until(lambda n=node: lab.readyz(n)[1].get("config_error"), timeout=15,
                   what=f"{node.name}'s /readyz to show config_error")
        error = lab.readyz(node)[1]["config_error"]
        assert isinstance(error, str) and "\n" not in error
    time.sleep(3 * interval)  # more checks of the same garbage: still one warning
    for node in nodes:
        since = log_of(node)[marks[node.name]:].splitlines()
        warnings = [line for line in since if "WARNING" in line and "config" in line.lower()]
        assert len(warnings) == 1, warnings
    lab.etcdctl("put", f"{PREFIX}/config", good)
    for node in nodes:
        wait_until(lambda n=node: "config_error" not in lab.readyz(n)[1], timeout=15,
                   what=f"{node.name}'s config_error to clear once the config is restored")
        assert lab.readyz(node)[0] == 200


# -- 4. etcd outages -------------------------------------------------------------------------------

SETTLE = 5.0  # seconds for every node's watch to deliver the re-created leases (a loaded 2-core machine)


def test_etcd_black_holed_for_longer_than_the_ttl(lab):
    up_with_pods(lab, nodes=2, agent_args=TTL_ARGS)
    nodes = lab.state.nodes
    before = {node.ip: key(subnet_of(lab, node)) for node in nodes}
    p1, p2 = pods_of(lab)
    seconds = TTL + 35  # from before the cut to well after the heal
    pings = [BackgroundPing(p1.ns, p2.ipv4, seconds), BackgroundPing(p2.ns, p1.ipv4, seconds)]
    try:
        time.sleep(1)
        cut_wall = time.time()
        for node in nodes:
            lab.cut_etcd(node)
        wait_until(lambda: not leases(lab), timeout=TTL + 15, what="every lease to expire during the outage")
        time.sleep(max(0.0, cut_wall + TTL + 2 - time.time()))
        for node in nodes:
            lab.heal_etcd(node)
        heal_wall = time.time()
        wait_until(lambda: {v["value"]["PublicIP"]: k for k, v in leases(lab).items()} == before, timeout=60,
                   what="every node to hold its old subnet again")
        back_wall = time.time()
        results = [ping.result() for ping in pings]
    finally:
        for ping in pings:
            ping.stop()
    lost = sorted(t for ping in pings for t in ping.lost())
    during = [t for t in lost if t < heal_wall]
    rejoining = [t for t in lost if heal_wall <= t < back_wall + SETTLE]
    print(f"\noutage {heal_wall - cut_wall:.0f} s (TTL {TTL} s): leases back {back_wall - heal_wall:.1f} s after "
          f"the heal; pings {results}; lost during the outage {len(during)}, while rejoining {len(rejoining)} "
          f"({', '.join(f'{t - heal_wall:+.2f} s' for t in rejoining[:10])})")
    assert all(sent == ping.count for (sent, _), ping in zip(results, pings))
    assert during == [], "pings lost while etcd was away"
    assert [t for t in lost if t >= back_wall + SETTLE] == [], "pings lost after every lease was back"
    for node in nodes:
        assert lab.readyz(node)[0] == 200
        wait_until(lambda n=node: metric(n, "overlay_etcd_connected") == 1, timeout=30, what="etcd connected")
        assert store_of(lab, node).get("connected") is True


def test_brief_outage_over_the_renewal_time_keeps_the_lease(lab):
    lab.up(nodes=1, agent_args=TTL_ARGS)
    node = lab.node(1)
    name = key(subnet_of(lab, node))
    first = leases(lab)[name]
    assert first["lease"] != 0

    def renewal_at() -> float:  # unix time of the next renewal: expiry minus the margin
        return metric(node, "overlay_lease_expiry_timestamp_seconds") - 60

    wait_until(lambda: renewal_at() - time.time() > 3, timeout=TTL, what="a renewal a few seconds ahead")
    due = renewal_at()
    time.sleep(max(0.0, due - 2 - time.time()))
    renewed = metric(node, "overlay_lease_renewals_total", 'result="ok"')
    lab.cut_etcd(node)
    time.sleep(max(0.0, due + 20 - time.time()))  # the renewal fails; 40 s of the TTL are left
    lab.heal_etcd(node)
    healed = time.monotonic()
    wait_until(lambda: metric(node, "overlay_lease_renewals_total", 'result="ok"') > renewed, timeout=TTL,
               what="a renewal after the outage")
    print(f"\nrenewal spanned by a 22 s outage: renewed {time.monotonic() - healed:.1f} s after the heal")
    now = leases(lab).get(name)
    assert now is not None and now["value"] == first["value"]
    assert now["lease"] == first["lease"], "the etcd lease expired: the key was re-created"
    assert now["mod_revision"] == first["mod_revision"], "the key was rewritten"
    assert "re-creating it on the same subnet" not in log_of(node)


def test_black_holed_etcd_is_noticed_and_recovered(lab):
    lab.up(nodes=2)
    node = lab.node(1)
    assert metric(node, "overlay_etcd_connected") == 1

    def track(connected: bool, start: float, timeout: float = 30.0) -> dict[str, float | None]:
        """Seconds from ``start`` until the metric and /readyz each show ``connected``."""
        seen: dict[str, float | None] = {"metric": None, "readyz": None}
        deadline = start + timeout
        while time.monotonic() < deadline and None in seen.values():
            now = time.monotonic() - start
            if seen["metric"] is None and metric(node, "overlay_etcd_connected") == float(connected):
                seen["metric"] = now
            if seen["readyz"] is None and store_of(lab, node).get("connected") is connected:
                seen["readyz"] = now
            time.sleep(0.1)
        return seen

    cut_wall, cut = time.time(), time.monotonic()
    lab.cut_etcd(node)
    noticed = track(False, cut)
    down_store, down_status = store_of(lab, node), lab.readyz(node)[0]
    heal_wall, healed = time.time(), time.monotonic()
    lab.heal_etcd(node)
    recovered = track(True, healed)
    up_store = store_of(lab, node)
    print(f"\nblack hole on {node.name}: noticed after {noticed} s, recovered after {recovered} s")
    assert noticed["metric"] is not None and noticed["metric"] < 30
    assert recovered["metric"] is not None and recovered["metric"] < 30
    assert down_status == 200  # the data plane is right: ready stays true, the body says why
    assert "the data plane stays as it is" in log_of(node) and "etcd: working again" in log_of(node)
    assert noticed["readyz"] is not None and noticed["readyz"] < 30
    assert recovered["readyz"] is not None and recovered["readyz"] < 30
    assert down_store["connected"] is False and cut_wall - 1 <= down_store["since"] <= time.time()
    assert lab.etcd.url in down_store["endpoints"]
    assert up_store["connected"] is True and heal_wall - 1 <= up_store["since"] <= time.time()


# -- 6. a 3-member etcd cluster losing the member in use ---------------------------------------------------

def test_etcd_cluster_losing_the_leader_the_agents_use(lab):
    up_with_pods(lab, nodes=2, etcd_members=3)
    n1 = lab.node(1)
    wait_until(lambda: len(etcd_connections(n1)) == 1, timeout=10, what="n1's agent to settle on one member")
    (used,) = etcd_connections(n1)
    first = next(m for m in lab.etcds if m.host == used)  # the member n1's agent uses
    ids = {m["name"]: m["ID"] for m in json.loads(lab.etcdctl("member", "list", "-w", "json"))["members"]}
    first_id = ids[first.name]
    in_use = {node.name: sorted(etcd_connections(node)) for node in lab.state.nodes}
    survivors = ",".join(m.url for m in lab.etcds if m is not first)

    def leaders(endpoints: str = "") -> dict[str, int]:
        """The leader each endpoint reports (0: none), by endpoint URL."""
        try:
            found = json.loads(lab.etcdctl("endpoint", "status", "-w", "json", endpoints=endpoints))
        except NetnsError:
            return {}
        return {s["Endpoint"]: s["Status"].get("leader", 0) for s in found}

    leader = set(leaders().values())
    if leader != {first_id}:  # make it the leader too: lose both at once
        (leader_id,) = leader
        leader_url = next(m.url for m in lab.etcds if ids[m.name] == leader_id)
        lab.etcdctl("move-leader", f"{first_id:x}", endpoints=leader_url)
        wait_until(lambda: set(leaders().values()) == {first_id}, timeout=10, what=f"{first.name} to lead")

    def new_leader() -> bool:
        seen = set(leaders(survivors).values())
        return len(seen) == 1 and not seen & {0, first_id}
    p1, p2 = pods_of(lab)
    ping = BackgroundPing(p1.ns, p2.ipv4, seconds=20)
    try:
        time.sleep(1)
        first.stop(signal.SIGKILL)
        killed = time.monotonic()
        wait_until(new_leader, timeout=30, what="the other two members to elect a leader")
        elected = time.monotonic() - killed
        lab.etcdctl("put", f"{PREFIX}/subnets/{SENTINEL}", vxlan_lease("192.0.2.60", "c6:d2:32:6f:8f:45"),
                    endpoints=survivors)
        written = time.monotonic()
        for node in lab.state.nodes:
            wait_until(lambda n=node: programs(n, SENTINEL.replace("-", "/"), "192.0.2.60", "c6:d2:32:6f:8f:45"),
                       timeout=30, what=f"{node.name} to program a lease written after the member died")
        programmed = time.monotonic() - written
        joiner = lab.add_node()
        lab.start_agent(joiner)
        lab.wait_ready([joiner], timeout=60)
        joined = subnet_of(lab, joiner)
        for node in lab.state.nodes[:2]:
            wait_until(lambda n=node: programs(n, joined, joiner.ip, vtep_mac(lab, joiner)), timeout=30,
                       what=f"{node.name} to program the node that joined after the member died")
        sent, got = ping.result()
    finally:
        ping.stop()
    print(f"\nmembers in use {in_use}; {first.name} (n1's and the leader) killed: new leader in {elected:.1f} s; "
          "a lease written then "
          f"was programmed everywhere {programmed:.1f} s after the write; pings {sent}/{got}")
    assert sent == got == ping.count
    assert "etcd: working again" in log_of(n1)  # n1 lost its member and failed over
    add_pods(lab, joiner, 1)
    all_pings_ok(lab)


# -- 7. kill -9 under TCP load ---------------------------------------------------------------------

def test_kill_9_during_tcp_keeps_the_data_plane_and_restart_adopts_it(lab):
    up_with_pods(lab, nodes=2)
    nodes = lab.state.nodes
    kernel = {node.name: vxlan_state(node) for node in nodes}
    stored = leases(lab)
    p1, p2 = pods_of(lab)
    ping = BackgroundPing(p1.ns, p2.ipv4, seconds=12)
    try:
        with ThreadPoolExecutor(1) as pool:
            tcp = pool.submit(iperf, p2.ns, p1.ns, p2.ipv4, 8)
            for node in nodes:
                time.sleep(2)
                assert lab.stop_agent(node, signal.SIGKILL) == -signal.SIGKILL
            mbits = tcp.result(timeout=60)
        sent, got = ping.result()
    finally:
        ping.stop()
    print(f"\nkill -9 of both agents during iperf3: {mbits:.0f} Mbit/s, pings {sent}/{got}")
    assert mbits > 0
    assert sent == got == ping.count
    for node in nodes:
        lab.start_agent(node)
    lab.wait_ready()
    assert leases(lab) == stored  # same subnets, not even rewritten
    for node in nodes:
        assert vxlan_state(node) == kernel[node.name], f"{node.name} re-programmed what it should adopt"
        assert "reusing lease" in log_of(node)
    all_pings_ok(lab)
