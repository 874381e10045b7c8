"""status, doctor and cleanup end to end: real agents in namespaces (prefix ``ovo-``), real etcd.

Faults are injected inside a node's namespace only; each test's lab is taken down whether it
passed or not, and its namespaces checked gone.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from overlay_core.lab.etcdserver import EtcdServer
from overlay_core.lab.lab import ETCD_IP, HEALTH_PORT, PREFIX, Lab
from overlay_core.lab.netns import ip, list_namespaces, nsexec
from overlay_core.lab.traffic import add_pods

from .helpers import leases

pytestmark = [pytest.mark.netns, pytest.mark.etcd]


class OpsLab(Lab):
    """The lab under this suite's own namespace prefix ``ovo-``."""

    def __init__(self, name: str, state_root: str) -> None:
        super().__init__(name, state_root)
        self.prefix = f"ovo-{name}-"
        self.switch = f"{self.prefix}sw"
        self.etcd_ns = f"{self.prefix}etcd"
        self.etcd = EtcdServer(os.path.join(self.dir, "etcd-data"), str(ETCD_IP), netns=self.etcd_ns)
        self.etcds = [self.etcd]


@pytest.fixture
def ops_lab(tmp_path):
    lab = OpsLab(f"p{os.getpid() % 10000}", str(tmp_path / "labs"))
    try:
        yield lab
    finally:
        lab.down()
        assert list_namespaces(lab.prefix) == [], "namespaces left behind"


def flags(lab, node) -> list[str]:
    """The agent's own flags (as ``Lab.start_agent`` gives them): ops commands take the same."""
    return [f"--etcd-endpoints={lab.etcd_endpoints}", "--iface=eth0", f"--subnet-file={node.subnet_file}",
            f"--healthz-port={HEALTH_PORT}", f"--state-dir={os.path.join(lab.node_dir(node), 'state')}"]


def ops(lab, node, verb: str, *args: str, wrap: tuple[str, ...] = ()) -> subprocess.CompletedProcess:
    cmd = [*wrap, sys.executable, "-m", "overlay_core", verb, *flags(lab, node), *args]
    return subprocess.run(["ip", "netns", "exec", node.ns, *cmd], capture_output=True, text=True, timeout=120)


def doctor(lab, node, *args: str, wrap: tuple[str, ...] = ()) -> tuple[int, dict[str, list[dict]]]:
    """Exit status and the checks by name."""
    proc = ops(lab, node, "doctor", "--json", *args, wrap=wrap)
    assert proc.stdout, proc.stderr
    by_name: dict[str, list[dict]] = {}
    for check in json.loads(proc.stdout)["checks"]:
        by_name.setdefault(check["name"], []).append(check)
    return proc.returncode, by_name


def levels(checks: dict, name: str) -> set[str]:
    return {c["level"] for c in checks.get(name, [])}


def text(checks: dict, name: str) -> str:
    return " | ".join(c["message"] for c in checks.get(name, []))


def sh(node, *args: str) -> None:
    nsexec(node.ns, *args)


def test_status_shows_lease_store_and_peers(ops_lab):
    lab = ops_lab
    lab.up(nodes=2)
    n1, n2 = lab.node(1), lab.node(2)
    facts2 = lab.readyz(n2)[1]

    proc = ops(lab, n1, "status")
    assert proc.returncode == 0, proc.stderr
    own = lab.readyz(n1)[1]["subnet"]
    out = proc.stdout
    assert own in out and "backend vxlan" in out and "public IP 192.0.2.1" in out and "expires in" in out
    assert lab.etcd_endpoints in out and "connected" in out and "revision" in out
    header = next(line for line in out.splitlines() if line.startswith("SUBNET"))
    assert header.split()[:4] == ["SUBNET", "PUBLIC", "IP", "STATE"] and "MODE" in header
    row = next(line for line in out.splitlines() if line.startswith(facts2["subnet"]))
    assert row.split()[1:4] == ["192.0.2.2", "programmed", "vxlan"]

    info = json.loads(ops(lab, n1, "status", "--json").stdout)
    assert info["ready"] is True
    assert info["lease"]["subnet"] == own and info["lease"]["backend"] == "vxlan"
    assert 0 < info["lease"]["expires_in"] <= 86400
    assert info["store"]["connected"] is True and info["store"]["revision"] > 0
    assert [(p["subnet"], p["public_ip"], p["state"], p["mode"]) for p in info["peers"]] == [
        (facts2["subnet"], "192.0.2.2", "programmed", "vxlan")]

    lab.stop_agent(n1)
    gone = ops(lab, n1, "status")
    assert gone.returncode == 1 and gone.stdout == ""
    assert len(gone.stderr.strip().splitlines()) == 1 and "no agent answers" in gone.stderr


def test_doctor_finds_each_injected_fault(ops_lab):
    lab = ops_lab
    lab.up(nodes=2)
    n1 = lab.node(1)
    add_pods(lab, n1, 1)
    sh(n1, "sysctl", "-qw", "net.ipv4.ip_forward=1", "net.ipv4.conf.all.rp_filter=2",
       "net.ipv4.conf.eth0.rp_filter=2")

    code, checks = doctor(lab, n1)
    worst = {name: levels(checks, name) for name in checks}
    assert code == 0, worst
    peers = text(checks, "peers")
    assert "1 peer answers ping" in peers and "UDP 8472 itself cannot be probed" in peers
    assert "vxlan works" in text(checks, "kernel") and "pid" in text(checks, "agent")

    sh(n1, "sysctl", "-qw", "net.ipv4.conf.all.rp_filter=1")
    code, checks = doctor(lab, n1)
    assert code == 1 and levels(checks, "rp_filter") == {"warn"} and "on flannel.1 " in text(checks, "rp_filter")
    sh(n1, "sysctl", "-qw", "net.ipv4.conf.all.rp_filter=2")

    sh(n1, "sysctl", "-qw", "net.ipv4.ip_forward=0")
    code, checks = doctor(lab, n1)
    assert code == 2 and levels(checks, "forwarding") == {"fail"} and "ip_forward=0" in text(checks, "forwarding")
    sh(n1, "sysctl", "-qw", "net.ipv4.ip_forward=1")

    ip("link", "set", "veth1", "mtu", "1500", ns=n1.ns)  # a pod port bigger than FLANNEL_MTU (1450)
    code, checks = doctor(lab, n1)
    assert code == 2 and levels(checks, "mtu") == {"fail"} and "veth1 1500" in text(checks, "mtu")
    ip("link", "set", "veth1", "mtu", "1450", ns=n1.ns)
    ip("link", "set", "eth0", "mtu", "1450", ns=n1.ns)  # the underlay shrank under the agent
    code, checks = doctor(lab, n1)
    assert code == 2 and "fell from 1500" in text(checks, "mtu") and "to 1450" in text(checks, "mtu")
    ip("link", "set", "eth0", "mtu", "1500", ns=n1.ns)

    sh(n1, "nft", "add table inet ovotest; add chain inet ovotest ovofwd { type filter hook forward priority -10; }; "
       "add rule inet ovotest ovofwd ip daddr 10.5.0.0/16 drop")
    code, checks = doctor(lab, n1)
    assert code == 2 and levels(checks, "firewall") == {"fail"}
    found = text(checks, "firewall")
    assert "inet ovotest ovofwd" in found and "drops the network's traffic" in found
    sh(n1, "nft", "delete table inet ovotest")

    sh(n1, "nft", "add table inet ovotest; add chain inet ovotest ovoinput { type filter hook input priority 0; }; "
       "add rule inet ovotest ovoinput udp dport 8472 drop")
    code, checks = doctor(lab, n1)
    assert code == 2 and levels(checks, "port") == {"fail"} and "UDP port 8472" in text(checks, "port")
    sh(n1, "nft", "delete table inet ovotest")

    code, checks = doctor(lab, n1)
    assert code == 0, {name: levels(checks, name) for name in checks}


def test_doctor_missing_tun_for_a_backend_that_needs_it(ops_lab):
    """TUN hidden honestly: doctor runs in a mount namespace whose /dev/net is an empty tmpfs."""
    lab = ops_lab
    lab.up(nodes=1, start_agents=False)
    n1 = lab.node(1)
    lab.etcdctl("put", "/ovo-tun/config", json.dumps({"Network": "10.6.0.0/16", "Backend": {"Type": "udp"}}))
    code, checks = doctor(lab, n1, "--etcd-prefix=/ovo-tun")
    assert levels(checks, "kernel") == {"ok"} and "tun works" in text(checks, "kernel")
    hide = ("unshare", "--mount", "--propagation", "private",
            "sh", "-c", 'mount -t tmpfs none /dev/net && exec "$@"', "-")
    code, checks = doctor(lab, n1, "--etcd-prefix=/ovo-tun", wrap=hide)
    assert code == 2 and levels(checks, "kernel") == {"fail"}
    assert "udp needs tun: /dev/net/tun does not exist" in text(checks, "kernel")
    assert levels(checks, "agent") == {"warn"}  # and it says no agent runs


def test_cleanup_removes_ours_and_nothing_else(ops_lab):
    lab = ops_lab
    lab.up(nodes=2, extra_config={"EnableNFTables": True}, agent_args=("--ip-blackhole-route",))
    n1, n2 = lab.node(1), lab.node(2)
    add_pods(lab, n1, 1)
    own = lab.readyz(n1)[1]["subnet"]
    key = own.replace("/", "-")
    refused = ops(lab, n1, "cleanup")
    assert refused.returncode == 1 and "an agent runs in this network namespace" in refused.stderr

    # what someone else put there: a device (also a vxlan one), routes (one inside the network) and a table
    ip("link", "add", "ovobr0", "type", "bridge", ns=n1.ns)
    ip("link", "add", "vxfor", "type", "vxlan", "id", "42", "dstport", "4789", ns=n1.ns)
    ip("route", "add", "10.99.0.0/16", "via", "192.0.2.2", ns=n1.ns)
    ip("route", "add", "10.5.250.0/24", "via", "192.0.2.2", "proto", "static", ns=n1.ns)
    sh(n1, "nft", "add table inet ovoforeign")
    lab.stop_agent(n1)
    ip("route", "replace", "blackhole", own, ns=n1.ns)  # as --ip-blackhole-route keeps it (its first check waits)

    dry = ops(lab, n1, "cleanup", "--dry-run")
    assert dry.returncode == 0, dry.stderr
    assert "would remove device flannel.1 (vxlan)" in dry.stdout
    assert "flannel.1" in ip("link", "show", ns=n1.ns)

    done = ops(lab, n1, "cleanup", "--release-lease")
    assert done.returncode == 0, done.stdout + done.stderr
    out = done.stdout
    for expected in ("removed device flannel.1 (vxlan)", "removed nft table ip flannel-ipv4",
                     f"removed blackhole route {own}", f"removed subnet file {n1.subnet_file}",
                     f"removed lease {PREFIX}/subnets/{key} in etcd", "removed route 10.5.", "(kernel)"):
        assert expected in out, out
    links = ip("link", "show", ns=n1.ns)
    assert "flannel" not in links and "ovobr0" in links and "vxfor" in links
    assert ip("route", "show", "proto", "79", ns=n1.ns) == ""
    routes = ip("route", "show", ns=n1.ns)
    assert "10.99.0.0/16" in routes and "10.5.250.0/24" in routes and "blackhole" not in routes
    tables = nsexec(n1.ns, "nft", "list", "tables").stdout
    assert "ovoforeign" in tables and "flannel" not in tables
    assert not os.path.exists(n1.subnet_file)
    assert key not in leases(lab) and lab.readyz(n2)[1]["subnet"].replace("/", "-") in leases(lab)

    again = ops(lab, n1, "cleanup", "--release-lease")
    assert again.returncode == 0 and again.stdout.startswith("nothing of overlay's found"), again.stdout
    assert "removed" not in again.stdout


def test_cleanup_stops_the_recorded_helper_and_removes_its_device(ops_lab):
    """udp: the forwarder (a supervised helper that outlives the agent) and its TUN device."""
    lab = ops_lab
    lab.up(nodes=2, backend="udp")
    n1 = lab.node(1)
    helper = lab.readyz(n1)[1]["helpers"]["udp-forwarder-flannel0"]["pid"]
    lab.stop_agent(n1)
    assert os.path.exists(f"/proc/{helper}")  # it carries the data path while the agent is away

    done = ops(lab, n1, "cleanup")
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"removed helper process udp-forwarder-flannel0 (pid {helper})" in done.stdout
    assert "removed device flannel0 (tun)" in done.stdout
    assert not os.path.exists(f"/proc/{helper}") or open(f"/proc/{helper}/stat").read().split(") ")[1][0] == "Z"
    assert "flannel0" not in ip("link", "show", ns=n1.ns)
    assert list(Path(lab.node_dir(n1), "state", "helpers").glob("*.json")) == []  # its record is gone

    again = ops(lab, n1, "cleanup")
    assert again.returncode == 0 and again.stdout.startswith("nothing of overlay's found"), again.stdout
    assert "removed" not in again.stdout
