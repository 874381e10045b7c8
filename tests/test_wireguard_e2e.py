"""WireGuard end to end: real agents in namespaces, real etcd, real wireguard-go, real packets.

The tests pin the wireguard-go path (``OVERLAY_WIREGUARD_DATAPATH=wireguard-go``), so they test
it also where the kernel module exists; ``test_kernel_data_path_ping_matrix`` runs the kernel
path and skips where the module is absent (as on the machine these were written on)."""

import base64
import json
import os
import shutil
import signal
import subprocess

import pytest
from overlay_core.testing.netns import http_get, ip
from overlay_lab.lab import HEALTH_PORT, PREFIX
from overlay_lab.traffic import ping, ping_matrix, pods_of
from overlay_wireguard.kernel import DATA_PATH_ENV, kernel_wireguard_available
from overlay_wireguard.keys import KeyPair, public_key_of

from .helpers import lease_revisions, no_ping_lost, up_with_pods, wait_until

pytestmark = [pytest.mark.netns, pytest.mark.etcd,
              pytest.mark.skipif(not shutil.which("wireguard-go"), reason="wireguard-go is not installed")]

PSK = base64.b64encode(bytes(range(100, 132))).decode()


@pytest.fixture
def lab(make_lab):
    """A lab whose agents take the wireguard-go path even where the kernel module exists."""
    return make_lab(env={DATA_PATH_ENV: "wireguard-go"})


def pings_ok(lab) -> dict:
    """The pod ping matrix once every pair answers. Two nodes that start a handshake with each
    other at the same moment both drop it and retry after WireGuard's 5 s rekey timeout, so the
    first pings of a fresh pair may be lost; that wait is bounded here."""
    matrices = []

    def all_answer() -> bool:
        matrices.append(ping_matrix(lab, count=2))
        return all(sent == got > 0 for sent, got in matrices[-1].values())

    wait_until(all_answer, timeout=60, what="every pod answering every other")
    return matrices[-1]


def facts(lab, node) -> dict:
    return lab.readyz(node)[1]


def wg(lab, node, *args, device="flannel-wg") -> str:
    """``wg`` as an operator runs it: inside the mount namespace of the node's wireguard-go (its
    socket directory is the node's own) and the node's network namespace."""
    pid = facts(lab, node)["wireguard_devices"][device]["wireguard_go_pid"]
    return subprocess.run(["nsenter", "--target", str(pid), "--mount", "--net", "wg", *args], capture_output=True,
                          text=True, check=True, timeout=30).stdout


def public_key(lab, node) -> str:
    with open(os.path.join(lab.node_dir(node), "wgkey")) as fh:
        return public_key_of(fh.read())


def peer_keys(lab, node, device="flannel-wg") -> set[str]:
    return set(wg(lab, node, "show", device, "peers").split())


def assert_no_secrets(lab, psk: str = "") -> None:
    """No private key (base64 or hex) and no PSK in any agent or wireguard-go log, /readyz, /metrics
    or lab status."""
    secrets = []
    for node in lab.state.nodes:
        with open(os.path.join(lab.node_dir(node), "wgkey")) as fh:
            private = fh.read().strip()
        secrets += [private, base64.b64decode(private).hex()]
    if psk:
        secrets += [psk, base64.b64decode(psk).hex()]
    texts = [json.dumps(lab.status())]
    for node in lab.state.nodes:
        with open(node.log) as fh:
            texts.append(fh.read())
        helpers = os.path.join(lab.node_dir(node), "state", "helpers")
        for name in os.listdir(helpers) if os.path.isdir(helpers) else []:  # none on the kernel path
            with open(os.path.join(helpers, name), errors="replace") as fh:
                texts.append(fh.read())
        texts.append(json.dumps(facts(lab, node)))
        texts.append(http_get(node.ns, "127.0.0.1", HEALTH_PORT, "/metrics")[1].decode())
    assert all(len(t) > 50 for t in texts)
    leaked = [i for i, text in enumerate(texts) for s in secrets if s in text]
    assert leaked == [], "a key or the PSK leaked"


def test_ipv4_ping_matrix_devices_keys_and_status(lab):
    rows = up_with_pods(lab, nodes=3, backend="wireguard", backend_options={"PSK": PSK})
    pings_ok(lab)
    n1, n2, n3 = lab.state.nodes
    keys = [public_key(lab, n) for n in lab.state.nodes]
    assert len(set(keys)) == 3  # each node has a key file of its own
    assert facts(lab, n1)["wireguard_public_key"] == keys[0]
    link = ip("-d", "addr", "show", "flannel-wg", ns=n1.ns)
    assert "mtu 1420" in link and "tun" in link and f"inet {rows[0]['subnet'].split('/')[0]}/32" in link
    assert "10.5.0.0/16 dev flannel-wg proto 79" in ip("route", ns=n1.ns)
    with open(n1.subnet_file) as fh:
        assert "FLANNEL_MTU=1420" in fh.read()
    dump = wg(lab, n1, "show", "flannel-wg", "dump").splitlines()
    assert dump[0].split("\t")[1:3] == [keys[0], "51820"]
    peers = {line.split("\t")[0]: line.split("\t") for line in dump[1:]}
    assert set(peers) == set(keys[1:])
    for row, node, key in zip(rows[1:], (n2, n3), keys[1:]):
        assert peers[key][2:4] == [f"{node.ip}:51820", row["subnet"]]
        assert peers[key][1] == PSK  # the PSK is set on every peer
    wait_until(lambda: {s["state"] for s in facts(lab, n1)["peer_status"].values()} == {"up"}, timeout=20,
               what="every peer up in /readyz")
    status = facts(lab, n1)["peer_status"][rows[1]["subnet"].replace("/", "-")]
    assert status["endpoint"] == f"{n2.ip}:51820" and status["handshake_age_s"] < 60 and status["rx_bytes"] > 0
    metrics = http_get(n1.ns, "127.0.0.1", HEALTH_PORT, "/metrics")[1].decode()
    assert 'overlay_peers_by_state{state="up"} 2.0' in metrics and "overlay_peer_rx_bytes{peer=" in metrics
    assert "overlay_peer_handshake_age_seconds{peer=" in metrics
    assert_no_secrets(lab, PSK)


def test_dual_stack_ping_matrix(lab):
    up_with_pods(lab, nodes=3, backend="wireguard", ipv6="dual")
    matrix = pings_ok(lab)
    assert all(sent == 4 for sent, _ in matrix.values())  # both families answered
    n1 = lab.node(1)
    assert "2001:db8:10::/48 dev flannel-wg-v6 proto 79" in ip("-6", "route", ns=n1.ns)
    assert len(peer_keys(lab, n1, "flannel-wg-v6")) == 2
    endpoints = wg(lab, n1, "show", "flannel-wg-v6", "endpoints", device="flannel-wg-v6")
    assert "[2001:db8::2]:51821" in endpoints and "[2001:db8::3]:51821" in endpoints


def test_dual_stack_on_one_device_in_auto_mode(lab):
    up_with_pods(lab, nodes=2, backend="wireguard", ipv6="dual", backend_options={"Mode": "auto"})
    matrix = pings_ok(lab)
    assert all(sent == 4 for sent, _ in matrix.values())
    n1, n2 = lab.state.nodes
    assert "flannel-wg-v6" not in ip("link", ns=n1.ns)
    assert "2001:db8:10::/48 dev flannel-wg proto 79" in ip("-6", "route", ns=n1.ns)
    peer = wg(lab, n1, "show", "flannel-wg", "dump").splitlines()[1].split("\t")
    assert peer[2] == f"{n2.ip}:51820"  # auto: a peer with a (documentation, not RFC 1918) IPv4 is dialled on IPv4
    assert sorted(peer[3].split(",")) == sorted(facts(lab, n2)[k] for k in ("subnet", "ipv6_subnet"))


def test_underlay_sees_only_wireguard_udp(lab):
    up_with_pods(lab, nodes=2, backend="wireguard")
    a, b = pods_of(lab)
    capture = subprocess.Popen(["ip", "netns", "exec", lab.switch, "timeout", "20", "tcpdump", "-n", "-l", "-i", "br0",
                                "-c", "30", "ip and not igmp"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               text=True)
    capture.stderr.readline()  # "listening on br0": the capture runs
    assert ping(a.ns, b.ipv4, count=10, interval=0.1) == (10, 10)
    out, _ = capture.communicate(timeout=40)
    lines = [line for line in out.splitlines() if line.strip()]
    wire = [line for line in lines if " UDP" in line and (".51820 >" in line or ".51820:" in line)]
    assert len(wire) >= 20, lines  # 10 echo requests and 10 replies, at least
    assert all(line in wire or "192.0.2.100" in line for line in lines), lines  # else only etcd traffic
    assert not any("ICMP" in line for line in lines), lines


def test_leaving_node_disappears_from_peer_lists(lab):
    lab.up(nodes=3, backend="wireguard")
    n1, n2, n3 = lab.state.nodes
    gone = public_key(lab, n3)
    assert gone in peer_keys(lab, n1) and gone in peer_keys(lab, n2)
    key = facts(lab, n3)["subnet"].replace("/", "-")
    lab.stop_agent(n3)
    lab.etcdctl("del", f"{PREFIX}/subnets/{key}")  # its lease is gone (as when it expires)
    wait_until(lambda: gone not in peer_keys(lab, n1) and gone not in peer_keys(lab, n2), timeout=10,
               what="the leaving node removed from every peer list")
    assert peer_keys(lab, n1) == {public_key(lab, n2)}


def test_peers_changed_by_hand_are_put_back(lab):
    up_with_pods(lab, nodes=2, backend="wireguard", agent_args=("--reconcile-interval=1",))
    n1, n2 = lab.state.nodes
    before = wg(lab, n1, "show", "flannel-wg", "dump").splitlines()[1:]
    wg(lab, n1, "set", "flannel-wg", "peer", public_key(lab, n2), "remove")
    stranger = KeyPair.generate().public
    wg(lab, n1, "set", "flannel-wg", "peer", stranger, "allowed-ips", "10.5.250.0/24", "endpoint", "192.0.2.50:51820")
    wait_until(lambda: peer_keys(lab, n1) == {public_key(lab, n2)}, timeout=15, what="peer restored, stranger removed")
    after = [line.split("\t")[:4] for line in wg(lab, n1, "show", "flannel-wg", "dump").splitlines()[1:]]
    assert after == [line.split("\t")[:4] for line in before]
    ip("route", "del", "10.5.0.0/16", "dev", "flannel-wg", ns=n1.ns)
    wait_until(lambda: "10.5.0.0/16 dev flannel-wg" in ip("route", ns=n1.ns), timeout=15, what="route restored")
    pings_ok(lab)
    with open(n1.log) as fh:
        assert "reconcile: set" in fh.read()


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL])
def test_agent_stop_and_restart_lose_no_ping_and_adopt_wireguard_go(lab, sig):
    up_with_pods(lab, nodes=2, backend="wireguard", backend_options={"PSK": PSK})
    n1 = lab.node(1)
    a, b = pods_of(lab)
    pid = facts(lab, n1)["wireguard_devices"]["flannel-wg"]["wireguard_go_pid"]
    index = facts(lab, n1)["wireguard_devices"]["flannel-wg"]["index"]
    leases_before = lease_revisions(lab)
    assert ping(a.ns, b.ipv4, count=2)[1] == 2  # handshake done before the clock starts
    with no_ping_lost(a.ns, b.ipv4, 300):
        assert lab.stop_agent(n1, sig) == (0 if sig == signal.SIGTERM else -9)
        assert os.path.exists(f"/proc/{pid}")  # wireguard-go outlives its agent, stopped or killed
        lab.start_agent(n1)
        lab.wait_ready([n1])
    after = facts(lab, n1)
    assert after["wireguard_devices"]["flannel-wg"]["wireguard_go_pid"] == pid
    assert after["wireguard_devices"]["flannel-wg"]["index"] == index
    assert after["helpers"]["wireguard-go-flannel-wg"]["adopted"] is True
    assert lease_revisions(lab) == leases_before  # same key, same data: the lease was not rewritten
    with open(n1.log) as fh:
        assert f"adopted wireguard-go for flannel-wg (pid {pid}" in fh.read()
    assert_no_secrets(lab, PSK)


def test_killed_wireguard_go_is_restarted_and_reconfigured(lab):
    up_with_pods(lab, nodes=2, backend="wireguard")
    n1, n2 = lab.state.nodes
    pid = facts(lab, n1)["wireguard_devices"]["flannel-wg"]["wireguard_go_pid"]
    os.kill(pid, signal.SIGKILL)

    def restarted() -> bool:
        helper = facts(lab, n1).get("helpers", {}).get("wireguard-go-flannel-wg", {})
        return helper.get("state") == "running" and helper.get("pid") not in (None, pid)

    wait_until(restarted, timeout=30, what="wireguard-go restarted by the supervisor")
    wait_until(lambda: peer_keys(lab, n1) == {public_key(lab, n2)}, timeout=15, what="peers pushed again")
    wait_until(lambda: "10.5.0.0/16 dev flannel-wg" in ip("route", ns=n1.ns), timeout=15, what="route back")
    pings_ok(lab)
    assert facts(lab, n1)["helpers"]["wireguard-go-flannel-wg"]["restarts"] >= 1


def test_bad_psk_is_a_one_line_error_without_the_value(lab):
    lab.up(nodes=1, backend="wireguard", start_agents=False, backend_options={"PSK": "c2VjcmV0"})
    n1 = lab.node(1)
    lab.start_agent(n1)
    assert lab.wait_exit(n1, 20) == 1
    with open(n1.log) as fh:
        log = fh.read()
    assert "wireguard: PSK must be the base64 text of a 32-byte key" in log
    assert "c2VjcmV0" not in log.split("network config:")[-1].split("\n", 1)[1] and "Traceback" not in log


def test_wireguard_go_of_a_device_the_config_dropped_is_stopped(lab):
    lab.up(nodes=1, backend="wireguard", ipv6="dual")
    n1 = lab.node(1)
    v6_pid = facts(lab, n1)["wireguard_devices"]["flannel-wg-v6"]["wireguard_go_pid"]
    v4_pid = facts(lab, n1)["wireguard_devices"]["flannel-wg"]["wireguard_go_pid"]
    assert lab.stop_agent(n1) == 0
    config = {**lab.state.config, "Backend": {"Type": "wireguard", "Mode": "auto"}}  # one device for both families
    lab.write_config(config)
    lab.start_agent(n1)
    lab.wait_ready([n1])
    wait_until(lambda: not os.path.exists(f"/proc/{v6_pid}"), timeout=10, what="the left-over wireguard-go gone")
    assert "flannel-wg-v6" not in ip("link", ns=n1.ns)
    assert facts(lab, n1)["wireguard_devices"]["flannel-wg"]["wireguard_go_pid"] == v4_pid  # adopted, not restarted
    assert "2001:db8:10::/48 dev flannel-wg proto 79" in ip("-6", "route", ns=n1.ns)
    with open(n1.log) as fh:
        assert "stopped wireguard-go for flannel-wg-v6" in fh.read()


def test_flannel_written_lease_is_a_peer_until_it_goes(lab):
    lab.up(nodes=1, backend="wireguard")
    n1 = lab.node(1)
    key = KeyPair.generate().public
    value = ('{"PublicIP":"192.0.2.50","PublicIPv6":null,"BackendType":"wireguard",'
             f'"BackendData":{{"PublicKey":"{key}","Port":0}}}}')  # Port 0: a Flannel before ports were advertised
    lab.etcdctl("put", f"{PREFIX}/subnets/10.5.200.0-24", value)
    wait_until(lambda: key in peer_keys(lab, n1), timeout=10, what="the Flannel lease's peer")
    line = next(x for x in wg(lab, n1, "show", "flannel-wg", "dump").splitlines() if x.startswith(key))
    assert line.split("\t")[2:4] == ["192.0.2.50:51820", "10.5.200.0/24"]
    assert facts(lab, n1)["peer_status"]["10.5.200.0-24"]["state"] == "programmed"  # no handshake: nobody there
    lab.etcdctl("put", f"{PREFIX}/subnets/10.5.201.0-24", value.replace(key, "not-a-key"))
    wait_until(lambda: "10.5.201.0-24" in facts(lab, n1).get("peer_status", {}), timeout=10, what="bad lease judged")
    skipped = facts(lab, n1)["peer_status"]["10.5.201.0-24"]
    assert skipped["state"] == "skipped" and "PublicKey that is not base64" in skipped["reason"]
    lab.etcdctl("del", f"{PREFIX}/subnets/10.5.200.0-24")
    wait_until(lambda: key not in peer_keys(lab, n1), timeout=10, what="the peer removed with its lease")


def test_kernel_data_path_ping_matrix(make_lab):
    found = kernel_wireguard_available()
    if not found.available:
        pytest.skip(f"kernel data path not testable here: {found.reason}")
    lab = make_lab(env={DATA_PATH_ENV: "kernel"})
    up_with_pods(lab, nodes=3, backend="wireguard", backend_options={"PSK": PSK})
    pings_ok(lab)
    n1 = lab.node(1)
    assert facts(lab, n1)["wireguard_data_path"] == "kernel"
    assert "wireguard" in ip("-d", "link", "show", "flannel-wg", ns=n1.ns)  # a kernel device, no TUN
    assert facts(lab, n1)["wireguard_devices"]["flannel-wg"]["kernel"] is True
    with open(n1.log) as fh:
        assert "kernel data path" in fh.read()
    dump = subprocess.run(["ip", "netns", "exec", n1.ns, "wg", "show", "flannel-wg", "dump"], capture_output=True,
                          text=True, check=True, timeout=30).stdout.splitlines()
    assert dump[0].split("\t")[1:3] == [public_key(lab, n1), "51820"] and len(dump) == 3
    assert_no_secrets(lab, PSK)
