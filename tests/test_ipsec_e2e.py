"""IPsec end to end: real agents with their supervised charons (kernel-libipsec on this machine)
in lab namespaces, a real etcd, real ESP-in-UDP on the underlay."""

import json
import os
import re
import signal
import subprocess
import time
from pathlib import Path

import pytest
from overlay_core.testing.netns import http_get, ip
from overlay_ipsec.charon import kernel_has_esp, vici_session
from overlay_lab.lab import HEALTH_PORT, PREFIX
from overlay_lab.traffic import pods_of

from .helpers import all_pings_ok, no_ping_lost, up_with_pods, wait_until

pytestmark = [pytest.mark.netns, pytest.mark.etcd]


def state_dir(lab, node) -> Path:
    return Path(lab.node_dir(node)) / "state"


def vici(lab, node, command: str, message: dict | None = None) -> list:
    """One VICI command on the node's private charon socket (blocking, from the test)."""
    session = vici_session(state_dir(lab, node) / "ipsec" / "charon.vici")
    try:
        result = getattr(session, command)(message) if message is not None else getattr(session, command)()
        if result is None:
            return []
        return [result] if isinstance(result, dict) else list(result)
    finally:
        session.transport.close()


def conns(lab, node) -> list[str]:
    return sorted(name for item in vici(lab, node, "list_conns") for name in item)


def installed(lab, node) -> dict[str, tuple[str, str]]:
    """Per connection with an INSTALLED CHILD_SA: (IKE_SA unique id, CHILD_SA unique id)."""
    out = {}
    for item in vici(lab, node, "list_sas"):
        for name, ike in item.items():
            for child in (ike.get("child-sas") or {}).values():
                if child.get("state") == b"INSTALLED" and ike.get("state") == b"ESTABLISHED":
                    out[name] = (ike["uniqueid"].decode(), child["uniqueid"].decode())
    return out


def all_established(lab) -> bool:
    peers = len(lab.state.nodes) - 1
    return all(len(installed(lab, node)) == peers for node in lab.state.nodes)


def charon_pid(lab, node) -> int:
    return lab.readyz(node)[1]["helpers"]["charon"]["pid"]


def up(lab, nodes: int) -> None:
    up_with_pods(lab, nodes=nodes, backend="ipsec")
    wait_until(lambda: all_established(lab), timeout=30, what="every CHILD_SA installed")


def capture(ns: str, seconds: int, packets: int) -> subprocess.Popen:
    """A bounded tcpdump of IPv4 on the node's underlay port (etcd's TCP and the nodes' own IGMP
    membership reports left out)."""
    return subprocess.Popen(["ip", "netns", "exec", ns, "timeout", str(seconds), "tcpdump", "-n", "-l", "-i", "eth0",
                             "-c", str(packets), "ip and not tcp port 2379 and not igmp"], stdout=subprocess.PIPE,
                            stderr=subprocess.DEVNULL, text=True)


def test_ping_matrix_over_esp_in_udp_and_the_psk_stays_secret(lab):
    up(lab, 3)
    all_pings_ok(lab)
    n1, n2, _ = lab.state.nodes
    with open(n1.subnet_file) as fh:
        assert "FLANNEL_MTU=1400" in fh.read()  # 1500 - 77 - 8, capped at ipsec0's 1400
    wait_until(lambda: lab.readyz(n1)[1]["ipsec"]["sas"] == {"established": 2}, timeout=15,
               what="SA state in /readyz (refreshed every 5 s)")
    facts = lab.readyz(n1)[1]
    assert facts["ipsec"]["mode"] == "libipsec"
    assert {s["state"] for s in facts["peer_status"].values()} == {"established"}
    assert all(s["rekey_in_s"] > 0 for s in facts["peer_status"].values())

    # the underlay carries IKE and ESP in UDP only: no pod packet in clear
    a, b = pods_of(lab)[:2]
    pcap = capture(n2.ns, 10, 30)
    time.sleep(1.0)
    subprocess.run(["ip", "netns", "exec", a.ns, "ping", "-n", "-q", "-c", "5", "-i", "0.2", b.ipv4], check=True,
                   capture_output=True, timeout=30)
    out, _ = pcap.communicate(timeout=20)
    lines = [line for line in out.splitlines() if line.strip()]
    assert lines and not [line for line in lines if "ICMP" in line]
    assert all(re.search(r"\.(500|4500)[ :>]", line) for line in lines), "\n".join(lines)
    assert any("UDP-encap" in line or "ESP" in line for line in lines), lines

    # the PSK: in no log, /readyz, /metrics, lab status, or state file; charon's files are root's only
    psk = lab.state.config["Backend"]["PSK"]
    assert len(psk) >= 96
    status, metrics = http_get(n1.ns, "127.0.0.1", HEALTH_PORT, "/metrics")
    assert status == 200 and b'overlay_peer_tx_bytes{peer="' in metrics
    assert b'overlay_peers_by_state{state="established"} 2.0' in metrics
    shown = [metrics.decode(), json.dumps(lab.status())]
    for node in lab.state.nodes:
        shown.append(json.dumps(lab.readyz(node)[1]))
        with open(node.log) as fh:
            shown.append(fh.read())
        private = state_dir(lab, node) / "ipsec"
        assert private.stat().st_mode & 0o777 == 0o700
        assert (private / "strongswan.conf").stat().st_mode & 0o777 == 0o600
        for root, _, files in os.walk(state_dir(lab, node)):
            for name in files:
                path = Path(root, name)
                if path.is_file():
                    assert psk not in path.read_text(errors="replace"), path
    assert not [text for text in shown if psk in text]
    with open(n1.log) as fh:
        assert '"PSK":"***"' in fh.read()  # the agent logs its config with the PSK masked


def test_child_sa_terminated_by_hand_and_charon_killed_come_back(lab):
    up(lab, 2)
    n1, n2 = lab.state.nodes
    (conn, (ike_id, _)), = installed(lab, n1).items()
    uri = f"unix://{state_dir(lab, n1) / 'ipsec' / 'charon.vici'}"
    subprocess.run(["swanctl", "--terminate", "--ike", conn, "--uri", uri], check=True, capture_output=True,
                   timeout=30)
    wait_until(lambda: installed(lab, n1).get(conn, (ike_id,))[0] != ike_id, timeout=15,
               what="a new IKE_SA and CHILD_SA after the terminate")
    all_pings_ok(lab)

    pid = charon_pid(lab, n1)
    os.kill(pid, signal.SIGKILL)
    wait_until(lambda: lab.readyz(n1)[1].get("helpers", {}).get("charon", {}).get("state") == "running"
               and charon_pid(lab, n1) != pid, timeout=30, what="charon restarted by the supervisor")
    assert lab.readyz(n1)[1]["helpers"]["charon"]["restarts"] >= 1
    wait_until(lambda: all_established(lab), timeout=45, what="SAs re-established after the restart")
    wait_until(lambda: all(sent == got for sent, got in _matrix(lab).values()), timeout=20, what="pings")
    with open(n1.log) as fh:
        log = fh.read()
    assert "helper charon (pid %d) was killed by SIGKILL" % pid in log
    rules = ip("rule", "show", ns=n1.ns)
    assert len(re.findall(r"lookup 220\b", rules)) == 1, rules  # charon's rule, not duplicated


def _matrix(lab):
    from overlay_lab.traffic import ping_matrix

    return ping_matrix(lab, count=2)


def test_node_leaving_removes_its_connection_everywhere(lab):
    up(lab, 3)
    n1, n2, n3 = lab.state.nodes
    s3 = lab.readyz(n3)[1]["subnet"]
    pid3 = charon_pid(lab, n3)
    assert lab.stop_agent(n3) == 0
    os.kill(pid3, signal.SIGTERM)  # the node goes away, its charon with it
    lab.etcdctl("del", f"{PREFIX}/subnets/{s3.replace('/', '-')}")

    def forgotten(node) -> bool:
        shared = [k.decode() for item in vici(lab, node, "get_shared") for k in item.get("keys", [])]
        return (not any(s3 in name for name in conns(lab, node))
                and not any(n3.ip in key for key in shared)
                and s3 not in ip("route", "show", ns=node.ns)
                and not any(n3.ip.encode() == ike.get("remote-host")
                            for item in vici(lab, node, "list_sas") for ike in item.values()))

    for node in (n1, n2):
        wait_until(lambda node=node: forgotten(node), timeout=20, what=f"{n3.name} forgotten by {node.name}")
        assert len(conns(lab, node)) == 1 and lab.readyz(node)[1]["peers"] == 1
    wait_until(lambda: len(installed(lab, n1)) == 1, timeout=10, what="n1-n2 still up")
    assert _matrix(lab)[("n1p1", "n2p1")] == (2, 2)


def test_pod_traffic_fails_closed_while_a_child_sa_is_down(lab):
    up(lab, 2)
    n1, n2 = lab.state.nodes
    a, b = pods_of(lab)
    s2 = lab.readyz(n2)[1]["subnet"]
    assert f"unreachable {s2} proto 79" in ip("route", "show", ns=n1.ns)
    # a default route towards n2: without the unreachable route, a's packets would reach b in clear
    ip("route", "add", "default", "via", n2.ip, ns=n1.ns)
    ip("route", "add", "default", "via", n1.ip, ns=n2.ns)
    assert lab.stop_agent(n2) == 0  # nobody re-adds n2's side of the connection
    (conn,) = conns(lab, n2)
    vici(lab, n2, "unload_conn", {"name": conn})
    wait_until(lambda: s2 not in ip("route", "show", "table", "220", ns=n1.ns), timeout=20,
               what="n1's CHILD_SA to n2 gone")
    route = subprocess.run(["ip", "-n", n1.ns, "route", "get", b.ipv4, "from", a.ipv4, "iif", "cni0"],
                           capture_output=True, text=True)
    assert route.returncode != 0 and "No route to host" in route.stderr, route
    pcap = capture(n1.ns, 6, 20)
    time.sleep(1.0)
    lost = subprocess.run(["ip", "netns", "exec", a.ns, "ping", "-n", "-q", "-c", "3", "-i", "0.2", "-W", "1",
                           b.ipv4], capture_output=True, text=True, timeout=30)
    out, _ = pcap.communicate(timeout=20)
    assert lost.returncode != 0 and not [line for line in out.splitlines() if "ICMP" in line], out
    ip("route", "del", s2, "proto", "79", ns=n1.ns)  # our route deleted by hand: restored
    wait_until(lambda: f"unreachable {s2} proto 79" in ip("route", "show", ns=n1.ns), timeout=10,
               what="unreachable route restored")
    lab.start_agent(n2)  # adopts its charon and loads the connection again
    lab.wait_ready([n2])
    wait_until(lambda: all_established(lab), timeout=45, what="CHILD_SAs back")
    all_pings_ok(lab)


def test_agent_kill9_and_restart_lose_no_ping(lab):
    up(lab, 2)
    n1 = lab.node(1)
    a, b = pods_of(lab)
    pid = charon_pid(lab, n1)
    before = installed(lab, n1)
    with no_ping_lost(a.ns, b.ipv4, 400):
        assert lab.stop_agent(n1, signal.SIGKILL) == -9
        lab.start_agent(n1)
        lab.wait_ready([n1])
    helper = lab.readyz(n1)[1]["helpers"]["charon"]
    assert helper["pid"] == pid and helper["adopted"] is True
    assert installed(lab, n1) == before  # the same SAs: nothing was renegotiated


def test_bad_options_are_one_line_errors_before_any_peer(lab):
    lab.up(nodes=1, backend="ipsec", start_agents=False, backend_options={"ESPProposal": "aes128gcm16-nosuchalg"})
    n1 = lab.node(1)
    lab.start_agent(n1)
    assert lab.wait_exit(n1, 30) == 1
    with open(n1.log) as fh:
        log = fh.read()
    assert "overlay-core: error: ipsec: ESPProposal 'aes128gcm16-nosuchalg' is not a proposal charon accepts" in log
    assert "Traceback" not in log and "acquired" not in log  # refused by charon before any lease
    lab.etcdctl("put", f"{PREFIX}/config", '{"Network":"10.5.0.0/16","Backend":{"Type":"ipsec","PSK":"too-short"}}')
    lab.start_agent(n1)
    assert lab.wait_exit(n1, 30) == 1
    with open(n1.log) as fh:
        log = fh.read()
    assert "overlay-core: error: ipsec: PSK must be at least 96 characters" in log and "too-short" not in log


@pytest.mark.skipif(not kernel_has_esp(), reason="this kernel has no ESP (xfrm states cannot be added): the agent "
                    "runs libipsec mode here; kernel mode is tested down to its exact xfrm policies in plugins/ipsec")
def test_kernel_mode_policies_and_ping(lab):
    up(lab, 2)
    all_pings_ok(lab)
    n1, n2 = lab.state.nodes
    assert lab.readyz(n1)[1]["ipsec"]["mode"] == "kernel"
    policies = subprocess.run(["ip", "-n", n1.ns, "xfrm", "policy"], capture_output=True, text=True).stdout
    assert policies.count("reqid 11 mode tunnel") == 3
