"""The core agent end to end: real etcd and real agents in network namespaces (alloc backend)."""

import json
import os
import shutil
import signal

import pytest
from overlay_core.lease_keeper import EXHAUSTED_RETRY
from overlay_core.testing.netns import http_get, list_namespaces, nsexec
from overlay_lab.lab import HEALTH_PORT, PREFIX

from .helpers import ip, wait_until

pytestmark = [pytest.mark.netns, pytest.mark.etcd]


def leases(lab) -> dict[str, dict]:
    out = lab.etcdctl("get", "--prefix", f"{PREFIX}/subnets/", "-w", "json")
    data = json.loads(out)
    import base64

    return {base64.b64decode(kv["key"]).decode().rsplit("/", 1)[1]: {
        "value": json.loads(base64.b64decode(kv["value"])), "lease": kv.get("lease", 0),
        "mod_revision": kv["mod_revision"]} for kv in data.get("kvs", [])}


def lease_of(lab, node) -> str | None:
    """The key of ``node``'s lease; None while it holds none (between losing one and taking another)."""
    return next((k for k, v in leases(lab).items() if v["value"]["PublicIP"] == node.ip), None)


def subnet_file(node) -> dict:
    with open(node.subnet_file) as fh:
        return dict(line.split("=", 1) for line in fh.read().split())


def test_three_nodes_get_distinct_leases_and_down_removes_everything(lab):
    rows = lab.up(nodes=3, backend="alloc", network="10.5.0.0/16")
    assert [r["ready"] for r in rows] == [True] * 3
    assert len({r["subnet"] for r in rows}) == 3 and all(r["peers"] == 2 for r in rows)
    stored = leases(lab)
    assert len(stored) == 3
    for node, row in zip(lab.state.nodes, rows):
        key = row["subnet"].replace("/", "-")
        assert stored[key]["value"] == {"PublicIP": node.ip, "PublicIPv6": None}  # alloc: no BackendType
        assert stored[key]["lease"] != 0
        env = subnet_file(node)
        assert env["FLANNEL_NETWORK"] == "10.5.0.0/16" and env["FLANNEL_MTU"] == "1500"
        assert env["FLANNEL_SUBNET"] == row["subnet"].replace(".0/24", ".1/24")
    pids = [n.pid for n in lab.state.nodes] + [lab.state.etcd_pid]
    lab.down()
    assert list_namespaces(lab.prefix) == []
    alive = [p for p in pids if os.path.exists(f"/proc/{p}") and open(f"/proc/{p}/stat").read().split()[2] != "Z"]
    assert alive == []


def test_down_after_a_crash_without_state_file(lab):
    lab.up(nodes=2, backend="alloc")
    for node in lab.state.nodes:
        os.kill(node.pid, signal.SIGKILL)
    os.unlink(lab.state_file)
    removed = type(lab)(lab.name, state_root=os.path.dirname(lab.dir)).down()
    assert len(removed) == 4 and list_namespaces(lab.prefix) == []


def test_sigterm_exits_zero_and_restart_keeps_subnet_without_writing(lab):
    lab.up(nodes=2, backend="alloc")
    node = lab.node(1)
    key = lease_of(lab, node)
    before = leases(lab)[key]
    assert lab.stop_agent(node, signal.SIGTERM) == 0
    assert leases(lab)[key] == before  # lease left in place
    lab.start_agent(node)
    lab.wait_ready([node])
    assert lease_of(lab, node) == key and leases(lab)[key] == before  # same subnet, not even rewritten
    assert lab.stop_agent(node, signal.SIGINT) == 0


def test_own_lease_deleted_is_recreated_on_the_same_subnet(lab):
    lab.up(nodes=2, backend="alloc")
    node = lab.node(1)
    key = lease_of(lab, node)
    lab.etcdctl("del", f"{PREFIX}/subnets/{key}")
    wait_until(lambda: key in leases(lab), what="lease re-created")
    assert leases(lab)[key]["value"]["PublicIP"] == node.ip and leases(lab)[key]["lease"] != 0
    assert lab.readyz(node)[0] == 200


def test_subnet_taken_over_while_running_moves_the_node(lab):
    lab.up(nodes=2, backend="alloc")
    node = lab.node(1)
    key = lease_of(lab, node)
    lab.etcdctl("put", f"{PREFIX}/subnets/{key}", '{"PublicIP":"192.0.2.99","PublicIPv6":null}')
    wait_until(lambda: lease_of(lab, node) not in (key, None), what="node moved to another subnet")
    new = lease_of(lab, node)
    wait_until(lambda: subnet_file(node)["FLANNEL_SUBNET"].startswith(new.split("-")[0][:-1]),
               what="subnet file rewritten")
    assert leases(lab)[key]["value"]["PublicIP"] == "192.0.2.99"  # the other owner is untouched


def test_returning_node_never_takes_a_subnet_someone_else_holds(lab):
    lab.up(nodes=2, backend="alloc")
    node = lab.node(1)
    key = lease_of(lab, node)
    lab.stop_agent(node)
    lab.etcdctl("del", f"{PREFIX}/subnets/{key}")  # our lease expired while we were away ...
    lab.etcdctl("put", f"{PREFIX}/subnets/{key}", '{"PublicIP":"192.0.2.77","PublicIPv6":null}')  # ... and was taken
    lab.start_agent(node)
    lab.wait_ready([node])
    assert lease_of(lab, node) != key
    assert leases(lab)[key]["value"]["PublicIP"] == "192.0.2.77"


def test_reservation_is_used_and_keeps_no_ttl(lab):
    lab.up(nodes=1, backend="alloc", start_agents=False)
    node = lab.node(1)
    lab.etcdctl("put", f"{PREFIX}/subnets/10.5.77.0-24", json.dumps({"PublicIP": node.ip, "PublicIPv6": None}))
    lab.start_agent(node)
    lab.wait_ready([node])
    stored = leases(lab)["10.5.77.0-24"]
    assert stored["lease"] == 0 and subnet_file(node)["FLANNEL_SUBNET"] == "10.5.77.1/24"
    assert lab.readyz(node)[1]["reservation"] is True


def test_backend_change_is_refused_and_reported_on_readyz(lab):
    lab.up(nodes=1, backend="alloc", agent_args=("--reconcile-interval=0.5",))
    node = lab.node(1)
    lab.etcdctl("put", f"{PREFIX}/config", '{"Network":"10.5.0.0/16","Backend":{"Type":"vxlan"}}')
    wait_until(lambda: lab.readyz(node)[0] == 503, what="readyz 503")
    facts = lab.readyz(node)[1]
    assert "refused" in facts["conflict"] and "'vxlan'" in facts["conflict"]
    lab.etcdctl("put", f"{PREFIX}/config", '{"Network":"10.5.0.0/16","Backend":{"Type":"alloc"}}')
    wait_until(lambda: lab.readyz(node)[0] == 200, what="ready again")


def test_etcd_unreachable_at_start_is_retried_until_it_comes(lab):
    lab.up(nodes=1, backend="alloc", start_agents=False)
    node = lab.node(1)
    lab.etcd.stop(signal.SIGKILL)
    lab.start_agent(node)
    wait_until(lambda: "retrying" in open(node.log).read(), what="retry message")
    assert lab.readyz(node)[0] == 503
    lab.etcd.start(os.path.join(lab.dir, "etcd.log"))
    lab.wait_ready([node], timeout=30)
    assert "Traceback" not in open(node.log).read()


@pytest.mark.parametrize("args, config, message", [
    ((), '{"Network":"10.5.0.0/16","Backend":{"Type":"nope"}}',
     "backend type 'nope' is unknown; known types: alloc, "),
    (("--etcd-cafile=/nonexistent/ca.pem",), None, "--etcd-cafile /nonexistent/ca.pem: file does not exist"),
    (("--iface=wlan9",), None, "no interface matches 'wlan9'"),
    (("--subnet-lease-renew-margin=0",), None, "out of range: use 1 to 1439 minutes"),
    (("--public-ip=not-an-ip",), None, "--public-ip 'not-an-ip' is not an IP address"),
])
def test_bad_input_is_one_line_without_traceback(lab, args, config, message):
    lab.up(nodes=1, backend="alloc", start_agents=False)
    if config:
        lab.etcdctl("put", f"{PREFIX}/config", config)
    node = lab.node(1)
    lab.start_agent(node, *args)
    assert lab.wait_exit(node, timeout=20) == 1
    log = open(node.log).read()
    errors = [line for line in log.splitlines() if line.startswith("overlay-core: error:")]
    assert len(errors) == 1 and message in errors[0], log
    assert "Traceback" not in log


def test_flanneld_environment_variables_are_honoured(lab):
    lab.up(nodes=1, backend="alloc", start_agents=False)
    node = lab.node(1)
    env = {"FLANNELD_ETCD_ENDPOINTS": lab.etcd.url, "FLANNELD_IFACE": "eth0",
           "FLANNELD_SUBNET_FILE": node.subnet_file, "FLANNELD_HEALTHZ_PORT": str(HEALTH_PORT),
           "FLANNELD_IP_MASQ": "true"}
    import subprocess
    import sys

    with open(node.log, "ab") as log:
        proc = subprocess.Popen(["ip", "netns", "exec", node.ns, sys.executable, "-m", "overlay_core", "run"],
                                env={**os.environ, **env}, stdout=log, stderr=log, start_new_session=True)
    node.pid = proc.pid
    lab.wait_ready([node])
    assert subnet_file(node)["FLANNEL_IPMASQ"] == "true"


def test_ip_masq_rules_are_flannels_iptables_chains_and_restored_after_drift(lab):
    lab.up(nodes=1, backend="alloc", start_agents=False)
    node = lab.node(1)
    nsexec(node.ns, "nft", "add", "table", "ip", "flannel-ipv4")  # left over from nftables mode
    lab.start_agent(node, "--ip-masq", "--iptables-resync=1")
    lab.wait_ready([node])
    subnet = lease_of(lab, node).replace("-", "/")
    masq = '-m comment --comment "flanneld masq"'

    def nat():
        listing = nsexec(node.ns, "iptables", "-t", "nat", "-S").stdout
        return [line for line in listing.splitlines() if "FLANNEL" in line]

    text = nat()
    assert text == [  # what Flannel's e2e suite greps for, in its order
        "-N FLANNEL-POSTRTG",
        f"-A POSTROUTING {masq} -j FLANNEL-POSTRTG",
        f"-A FLANNEL-POSTRTG -m mark --mark 0x4000/0x4000 {masq} -j RETURN",
        f"-A FLANNEL-POSTRTG -s {subnet} -d 10.5.0.0/16 {masq} -j RETURN",
        f"-A FLANNEL-POSTRTG -s 10.5.0.0/16 -d {subnet} {masq} -j RETURN",
        f"-A FLANNEL-POSTRTG ! -s 10.5.0.0/16 -d {subnet} {masq} -j RETURN",
        f"-A FLANNEL-POSTRTG -s 10.5.0.0/16 ! -d 224.0.0.0/4 {masq} -j MASQUERADE --random-fully",
        f"-A FLANNEL-POSTRTG ! -s 10.5.0.0/16 -d 10.5.0.0/16 {masq} -j MASQUERADE --random-fully",
    ]
    forward = nsexec(node.ns, "iptables", "-t", "filter", "-S").stdout
    assert '-A FORWARD -m comment --comment "flanneld forward" -j FLANNEL-FWD' in forward
    assert forward.count("-A FLANNEL-FWD") == 2
    assert nsexec(node.ns, "nft", "list", "table", "ip", "flannel-ipv4", check=False).returncode != 0  # cleaned
    nsexec(node.ns, "iptables", "-t", "nat", "-F", "FLANNEL-POSTRTG")
    wait_until(lambda: nat() == text, what="rules restored")

    def repairs() -> bytes:  # counted once the repair returns, a moment after the rules are back
        body = http_get(node.ns, "127.0.0.1", HEALTH_PORT, "/metrics")[1]
        return next(line for line in body.splitlines() if line.startswith(b"overlay_firewall_repairs_total "))

    wait_until(lambda: repairs() != b"overlay_firewall_repairs_total 0.0", what="the repair counted")
    assert repairs() == b"overlay_firewall_repairs_total 1.0"
    assert lab.stop_agent(node) == 0
    assert nat() == text  # never flushed on shutdown


def test_enable_nftables_gives_flannels_nft_tables_and_removes_iptables_leftovers(lab):
    lab.up(nodes=1, backend="alloc", extra_config={"EnableNFTables": True}, start_agents=False)
    node = lab.node(1)
    for table, parent, chain, comment in (("nat", "POSTROUTING", "FLANNEL-POSTRTG", "flanneld masq"),
                                          ("filter", "FORWARD", "FLANNEL-FWD", "flanneld forward")):
        nsexec(node.ns, "iptables", "-t", table, "-N", chain)  # left over from iptables mode ...
        for _ in range(2):  # ... with a duplicated jump
            nsexec(node.ns, "iptables", "-t", table, "-A", parent, "-m", "comment", "--comment", comment, "-j", chain)
    lab.start_agent(node, "--ip-masq", "--iptables-resync=1")
    lab.wait_ready([node])
    subnet = lease_of(lab, node).replace("-", "/")

    def rules():
        return nsexec(node.ns, "nft", "list", "table", "ip", "flannel-ipv4", check=False).stdout

    text = rules()
    for line in ("chain postrtg", "type nat hook postrouting priority srcnat; policy accept;",
                 "meta mark & 0x00004000 == 0x00004000 return",
                 f"ip saddr {subnet} ip daddr 10.5.0.0/16 return",
                 f"ip saddr 10.5.0.0/16 ip daddr {subnet} return",
                 f"ip saddr != 10.5.0.0/16 ip daddr {subnet} return",
                 "ip saddr 10.5.0.0/16 ip daddr != 224.0.0.0/4 masquerade fully-random",
                 "ip saddr != 10.5.0.0/16 ip daddr 10.5.0.0/16 masquerade fully-random",
                 "chain forward", "ip saddr 10.5.0.0/16 accept", "ip daddr 10.5.0.0/16 accept"):
        assert line in text
    for table in ("nat", "filter"):  # Flannel itself leaves FLANNEL-FWD behind
        assert "FLANNEL" not in nsexec(node.ns, "iptables", "-t", table, "-S").stdout
    nsexec(node.ns, "nft", "delete", "table", "ip", "flannel-ipv4")
    wait_until(lambda: rules() == text, what="rules restored")


def test_missing_firewall_tool_fails_before_any_lease_is_written(lab, tmp_path):
    lab.up(nodes=1, backend="alloc", start_agents=False)
    node = lab.node(1)
    bin_dir = tmp_path / "bin"  # a PATH with ip but without iptables
    bin_dir.mkdir()
    (bin_dir / "ip").symlink_to(shutil.which("ip"))
    lab.start_agent(node, env={"PATH": str(bin_dir)})
    assert lab.wait_exit(node, timeout=20) == 1
    log = open(node.log).read()
    errors = [line for line in log.splitlines() if line.startswith("overlay-core: error:")]
    assert len(errors) == 1 and "iptables is missing" in errors[0], log
    assert "Traceback" not in log and "Exception ignored" not in log
    assert leases(lab) == {}  # nothing left in the store for 24 h


NO_LIBNFTABLES = """
import ctypes

_load = ctypes.CDLL.__init__


def _refuse_libnftables(self, name, *args, **kwargs):
    if name and "nftables" in str(name):
        raise OSError(f"{name}: cannot open shared object file: No such file or directory")
    _load(self, name, *args, **kwargs)


ctypes.CDLL.__init__ = _refuse_libnftables
"""


def test_node_without_libnftables_runs_on_iptables_without_a_traceback(lab, tmp_path):
    site = tmp_path / "site"  # a sitecustomize that makes libnftables unloadable in the agent
    site.mkdir()
    (site / "sitecustomize.py").write_text(NO_LIBNFTABLES)
    lab.up(nodes=1, backend="alloc", start_agents=False)
    node = lab.node(1)
    lab.start_agent(node, "--ip-masq", env={"PYTHONPATH": str(site)})
    lab.wait_ready([node])
    assert "FLANNEL-POSTRTG" in nsexec(node.ns, "iptables", "-t", "nat", "-S").stdout
    assert lab.stop_agent(node) == 0
    log = open(node.log).read()
    assert "Traceback" not in log and "Exception ignored" not in log, log
    lab.etcdctl("put", f"{PREFIX}/config", '{"Network":"10.5.0.0/16","EnableNFTables":true,"Backend":{"Type":"alloc"}}')
    lab.etcdctl("del", "--prefix", f"{PREFIX}/subnets/")
    lab.start_agent(node, "--ip-masq", env={"PYTHONPATH": str(site)})
    assert lab.wait_exit(node, timeout=20) == 1
    log = open(node.log).read()
    assert "overlay-core: error: EnableNFTables is true but libnftables cannot be loaded" in log
    assert "Traceback" not in log and "Exception ignored" not in log, log
    assert leases(lab) == {}


FLANNELD_UNIT_FLAGS = (  # flags a flanneld systemd unit may carry; the kube ones have no effect with etcd
    "--ip-blackhole-route", "--iptables-resync=1", "--kube-api-url=", "--kube-annotation-prefix=example.com",
    "--kubeconfig-file=/nonexistent", "--net-config-path=/nonexistent/net-conf.json",
    "--set-node-network-unavailable=false", "-vmodule=main=2", "-log_backtrace_at=main.go:1", "-v=0",
)


def test_flanneld_unit_flags_start_and_the_blackhole_routes_are_kept(lab):
    lab.up(nodes=1, backend="alloc", ipv6="dual", agent_args=FLANNELD_UNIT_FLAGS)
    node = lab.node(1)
    facts = lab.readyz(node)[1]

    def blackholes():
        return (ip("route", "show", "type", "blackhole", ns=node.ns)
                + ip("-6", "route", "show", "type", "blackhole", ns=node.ns)).split()

    for subnet in (facts["subnet"], facts["ipv6_subnet"]):
        wait_until(lambda: subnet in blackholes(), what=f"blackhole route for {subnet}")  # noqa: B023
    assert "79" not in blackholes()  # not proto 79: never mistaken for a peer route
    ip("route", "del", "blackhole", facts["subnet"], ns=node.ns)
    wait_until(lambda: facts["subnet"] in blackholes(), what="blackhole route restored")
    assert f"added blackhole route {facts['ipv6_subnet']}" in open(node.log).read()


def test_health_endpoints(lab):
    lab.up(nodes=2, backend="alloc")
    node = lab.node(1)
    assert http_get(node.ns, "127.0.0.1", HEALTH_PORT, "/healthz") == (200, b"overlay is running\n")
    status, body = http_get(node.ns, "127.0.0.1", HEALTH_PORT, "/metrics")
    assert status == 200 and b"overlay_peers 1.0" in body and b"overlay_etcd_connected 1.0" in body
    assert http_get(node.ns, "127.0.0.1", HEALTH_PORT, "/nope")[0] == 404


def test_agents_racing_for_the_last_subnets_all_get_distinct_ones(lab):
    six = {"SubnetMin": "10.5.1.0", "SubnetMax": "10.5.6.0"}
    lab.up(nodes=7, backend="alloc", extra_config=six, start_agents=False)
    for node in lab.state.nodes:  # all at once: every create races with the others
        lab.start_agent(node)
    wait_until(lambda: sum(lab.readyz(n)[0] == 200 for n in lab.state.nodes) == 6, timeout=30,
               what="six ready nodes")
    ready = [n for n in lab.state.nodes if lab.readyz(n)[0] == 200]
    assert sorted(lab.readyz(n)[1]["subnet"] for n in ready) == [f"10.5.{i}.0/24" for i in range(1, 7)]
    (waiting,) = [n for n in lab.state.nodes if n not in ready]
    wait_until(lambda: "waiting" in lab.readyz(waiting)[1], timeout=20, what="the seventh node to give up this round")
    status, facts = lab.readyz(waiting)
    assert status == 503 and facts["phase"] == "acquiring-lease"
    assert facts["waiting"].startswith("no free subnet: 6 of 6 /24 subnets of 10.5.0.0/16")
    # still running through more than one retry round (an agent that gave up would have exited)
    assert waiting.pid and lab.wait_exit(waiting, timeout=EXHAUSTED_RETRY * 1.5) is None
    assert lab.readyz(waiting)[1]["phase"] == "acquiring-lease"
    freed = lab.readyz(ready[0])[1]["subnet"]
    lab.stop_agent(ready[0])
    lab.etcdctl("del", f"{PREFIX}/subnets/{freed.replace('/', '-')}")  # that node left for good
    wait_until(lambda: lab.readyz(waiting)[0] == 200, timeout=20, what="the waiting node got the freed subnet")
    assert lab.readyz(waiting)[1]["subnet"] == freed
