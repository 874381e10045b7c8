"""The conformance kit: the contract every backend keeps, run against it in real namespaces.

A backend package enables it with one class in its tests::

    from overlay_core.testing.kit import Conformance

    class TestConformance(Conformance):
        backend = "host-gw"   # Backend.Type, installed in the environment
        options = {}          # Backend options of the kit's network config (optional)
        lab_options = {}      # extra ``Lab.up`` arguments (``env``: the agents' environment) (optional)

Every check is one test; they share one 3-node lab per class (``overlay_lab``, a real etcd, one
pod per node), which is always taken down. The kit reads the backend's ``Capabilities`` and
adapts: dual-stack checks with ``ipv6``, no pings without ``moves_packets``, the restart check
skipped with ``restart_note`` when ``survives_restart`` is False, the drift check when
``repairs_drift`` is False, a capture on the underlay when
``encrypted``, every lab check skipped (with the reason) when the kernel lacks a needed feature.
Optional class attributes: ``drift`` (what the drift check deletes: "route", "device:NAME", or a
function ``(lab, node) -> repaired`` that breaks something and returns a predicate), ``secrets``
(option names whose values must never be logged), ``ignored_options`` (declared options accepted
with any value); methods ``backend_state(lab, node)`` (text of state kept outside the node's
kernel tables, e.g. a cloud's route table), ``outside_of(lab, node)`` (what the backend made for
the node outside it, which ``overlay-core cleanup`` must remove) and ``public_ip_moved(lab, node,
old_ip, subnet)`` (the operator's part of a node's address change, if the backend leaves one to people).
"""

from __future__ import annotations

import base64
import itertools
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from ipaddress import ip_interface
from typing import Any, ClassVar

import pytest

from ..backend import Backend
from ..lease import LeaseAttrs, lease_from_kv, make_subnet_key
from ..plugins import load_backend_class
from ..subnetfile import read
from . import kernel_features
from .netns import delete_namespace, http_get, ip, list_namespaces, nsexec, pids_in

#: Agents reconcile this often in the kit's lab (seconds), so drift outside the kernel's event
#: stream (a cloud route) is repaired within the check's wait.
RECONCILE_INTERVAL = 3
#: Bounded waits (seconds): generous, the kit runs on loaded CI machines.
CONVERGE_TIMEOUT = 60.0
PING_WINDOW = 30.0  # the restart check's ping: 1500 packets at 20 ms
SECRET_ENV = re.compile(r"SECRET|PSK|PASSWORD|TOKEN|PRIVATE", re.I)
SECRET_FILE_ENV = re.compile(r"KEY_FILE$", re.I)
SECRET_OPTION = re.compile(r"psk|secret|password|token|private", re.I)
_labs = itertools.count(1)


def _lab_module() -> Any:
    try:
        import overlay_lab.lab as lab_module
    except ImportError:
        pytest.skip("the conformance kit needs the lab: pip install overlay-lab")
    return lab_module


def wait_for(predicate: Callable[[], Any], timeout: float, what: str) -> Any:
    """``predicate()``'s first true value within ``timeout`` seconds, else an AssertionError naming ``what``."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(0.2)


def node_state(node: Any) -> str:
    """What a node's kernel holds that a backend may program: routes of every table, neighbours
    and FDB entries except the underlay's (ARP for the peers is not the backend's), XFRM."""
    parts = [ip("route", "show", "table", "all", ns=node.ns), ip("-6", "route", "show", "table", "all", ns=node.ns)]
    parts += [line for line in ip("neigh", "show", ns=node.ns).splitlines() if " dev eth0 " not in line]
    parts.append(subprocess.run(["bridge", "-n", node.ns, "fdb", "show"], capture_output=True, text=True,
                                timeout=30).stdout)
    parts += [ip("xfrm", "state", ns=node.ns, check=False), ip("xfrm", "policy", ns=node.ns, check=False)]
    return "\n".join(parts)


def mentions(text: str, address: str) -> bool:
    """Does ``text`` contain ``address`` as a whole address (192.0.2.4 is not in 192.0.2.40 but is
    in 192.0.2.4:51820; 2001:db8:10:4:: is not in 2001:db8:10:4::1)?"""
    around = (r"(?<![\w:])", r"(?![\w:])") if ":" in address else (r"(?<![\w.])", r"(?!\w|\.\d)")
    return re.search(around[0] + re.escape(address) + around[1], text) is not None


@dataclass
class KitLab:
    """The class's lab and what the checks need to know about it."""

    lab: Any
    backend_cls: type[Backend]
    agent_args: tuple[str, ...]
    pods: list[Any] = field(default_factory=list)

    def node(self, index: int) -> Any:
        return self.lab.node(index)

    def restart(self, node: Any, sig: int = signal.SIGTERM) -> None:
        self.lab.stop_agent(node, sig, timeout=30.0)
        self.lab.start_agent(node, *self.agent_args)
        self.lab.wait_ready([node], timeout=CONVERGE_TIMEOUT)

    def leases(self) -> dict[str, dict]:
        """Every lease in the lab's etcd by key name: value (raw text) and etcd lease id."""
        data = json.loads(self.lab.etcdctl("get", "--prefix", f"{_lab_module().PREFIX}/subnets/", "-w", "json"))
        return {base64.b64decode(kv["key"]).decode().rsplit("/", 1)[1]: {
            "value": base64.b64decode(kv["value"]).decode(), "lease": kv.get("lease", 0)}
            for kv in data.get("kvs", [])}

    def lease_of(self, node: Any) -> tuple[str, dict]:
        """``node``'s lease key (from its subnet file) and its etcd entry."""
        key = self.subnet_key(node)
        entry = self.leases().get(key)
        assert entry is not None, f"no lease {key} of {node.name} in etcd"
        return key, entry

    def subnet_key(self, node: Any) -> str:
        env = read(node.subnet_file)
        v4 = ip_interface(env["FLANNEL_SUBNET"]).network if "FLANNEL_SUBNET" in env else None
        v6 = ip_interface(env["FLANNEL_IPV6_SUBNET"]).network if "FLANNEL_IPV6_SUBNET" in env else None
        return make_subnet_key(v4, v6)

    def pings_ok(self) -> bool:
        from overlay_lab.traffic import ping_matrix

        matrix = ping_matrix(self.lab, count=2)
        return bool(matrix) and all(sent == got > 0 for sent, got in matrix.values())


class Conformance:
    """Base class of a backend's conformance tests (see the module docstring)."""

    backend: ClassVar[str] = ""
    options: ClassVar[dict[str, Any]] = {}
    lab_options: ClassVar[dict[str, Any]] = {}
    drift: ClassVar[Any] = None
    secrets: ClassVar[tuple[str, ...]] = ()
    #: Declared options the backend accepts with any value (Flannel's Windows-only keys, ignored
    #: on Linux); the options check does not expect them to be refused.
    ignored_options: ClassVar[tuple[str, ...]] = ()

    def backend_state(self, lab: Any, node: Any) -> str:
        """State the backend keeps outside the node's kernel tables (override: e.g. a cloud's
        routes), searched like ``node_state`` by the peer checks."""
        return ""

    def outside_of(self, lab: Any, node: Any) -> str:
        """Text of what the backend made for ``node`` outside the node itself (override: e.g. its
        route in a cloud's table); ``overlay-core cleanup`` on the node must leave it empty."""
        return ""

    def public_ip_moved(self, lab: Any, node: Any, old_ip: str, subnet: str) -> None:
        """The operator's part of moving ``node`` from ``old_ip`` to ``node.ip`` (its agent is
        stopped, its lease already rewritten), for a backend that leaves some of it to people
        (override: e.g. remove a cloud route it will not take over)."""

    # -- fixtures ------------------------------------------------------------------------------

    @pytest.fixture(scope="class")
    @classmethod
    def backend_cls(cls) -> type[Backend]:
        if not cls.backend:
            pytest.fail("set the class attribute backend to the Backend.Type under test")
        return load_backend_class(cls.backend)

    @pytest.fixture(scope="class")
    @classmethod
    def kit(cls, backend_cls, tmp_path_factory):
        """One 3-node lab with a pod per node, torn down (processes and namespaces) in any case."""
        lab_module = _lab_module()
        if os.geteuid() != 0:
            pytest.skip("the conformance kit needs root for network namespaces")
        if not shutil.which("etcd"):
            pytest.skip("the conformance kit needs etcd (apt-get install etcd-server)")
        reason = kernel_features.missing(backend_cls.capabilities)
        if reason:
            pytest.skip(f"{cls.backend}: {reason}")
        from overlay_lab.traffic import add_pods

        up = dict(cls.lab_options)
        env = up.pop("env", None)
        agent_args = (f"--reconcile-interval={RECONCILE_INTERVAL}", *up.pop("agent_args", ()))
        if backend_cls.capabilities.ipv6:
            up.setdefault("ipv6", "dual")
        lab = lab_module.Lab(f"k{os.getpid() % 10000}x{next(_labs)}",
                             state_root=str(tmp_path_factory.mktemp("kit-labs")), env=env)
        try:
            lab.up(nodes=3, backend=cls.backend, backend_options=dict(cls.options), agent_args=agent_args,
                   wait=CONVERGE_TIMEOUT, **up)
            kit = KitLab(lab, backend_cls, agent_args)
            for node in lab.state.nodes:
                kit.pods += add_pods(lab, node, 1)
            yield kit
        finally:
            lab.down()
            assert list_namespaces(lab.prefix) == [], f"namespaces of {lab.name} left behind"

    def _movers_only(self, kit: KitLab) -> None:
        if not kit.backend_cls.capabilities.moves_packets:
            pytest.skip(f"{self.backend} moves no packets (Capabilities.moves_packets=False)")

    # -- checks ----------------------------------------------------------------------------------

    def test_options_invalid_value_is_one_line_error(self, backend_cls, tmp_path):
        """Each declared option with a value of the wrong shape is refused by ``config check`` with
        one line and no traceback; the kit's own config passes."""
        lab_module = _lab_module()
        from overlay_lab.support import call, lab_support

        defaults = call(lab_support(self.backend), "backend_options",
                        lab_module.Lab("kopts", state_root=str(tmp_path)), default={})
        backend = {"Type": self.backend, **defaults, **self.options}
        ok = _config_check({"Network": "10.5.0.0/16", "Backend": backend})
        assert ok.returncode == 0 and ok.stdout.startswith("OK:"), ok.stderr
        names = backend_cls.option_names
        if names is None:
            pytest.skip(f"{self.backend} declares no option_names: the kit cannot know which options to try")
        bad_values = {name: {"kit": "not a valid value"} for name in names if name not in self.ignored_options}
        bad_values["KitNoSuchOption"] = 1
        for name, value in bad_values.items():
            proc = _config_check({"Network": "10.5.0.0/16", "Backend": {**backend, name: value}})
            assert proc.returncode != 0, f"{name}={value!r} was accepted"
            assert "Traceback" not in proc.stderr, proc.stderr
            lines = proc.stderr.strip().splitlines()
            assert len(lines) == 1 and lines[0].startswith("overlay-core: error: "), proc.stderr

    def test_lease_data_round_trips(self, kit):
        """Each agent's lease parses, carries the backend's type and its node's address, and its
        BackendData survives a rewrite through the ``Lease`` helpers (also in etcd: the agents
        keep working with the rewritten values)."""
        for node in kit.lab.state.nodes:
            key, entry = kit.lease_of(node)
            lease = lease_from_kv(key, entry["value"])
            assert lease.attrs.backend_type == kit.backend_cls.advertised_type(), lease.attrs
            assert str(lease.attrs.public_ip) == node.ip, f"{node.name}'s lease advertises {lease.attrs.public_ip}"
            rewritten = lease.attrs.to_json()
            assert LeaseAttrs.from_json(rewritten) == lease.attrs
            assert json.loads(rewritten) == json.loads(entry["value"]), "the Lease helpers lose or change fields"
            lease_flag = [f"--lease={entry['lease']:x}"] if entry["lease"] else []
            kit.lab.etcdctl("put", *lease_flag, f"{_lab_module().PREFIX}/subnets/{key}", rewritten)
        for node in kit.lab.state.nodes:
            assert kit.lab.readyz(node)[0] == 200, f"{node.name} is not ready after its lease was rewritten"

    def test_pods_on_three_nodes_ping_each_other(self, kit):
        self._movers_only(kit)
        wait_for(kit.pings_ok, CONVERGE_TIMEOUT, "every pod to ping every other pod (both families)")

    def test_encrypted_underlay_carries_no_plain_icmp(self, kit):
        """With ``Capabilities.encrypted``: pod pings cross the underlay, but a capture on it sees
        no ICMP between the pods' addresses."""
        if not kit.backend_cls.capabilities.encrypted:
            pytest.skip(f"{self.backend} does not declare Capabilities.encrypted")
        self._movers_only(kit)
        if not shutil.which("tcpdump"):
            pytest.skip("the encrypted underlay check needs tcpdump (apt-get install tcpdump)")
        from overlay_lab.traffic import ping

        a, b = kit.pods[0], kit.pods[1]
        target = b.ipv4 or b.ipv6
        wait_for(lambda: ping(a.ns, target, count=2) == (2, 2), CONVERGE_TIMEOUT, "pod ping")
        capture = subprocess.Popen(
            ["ip", "netns", "exec", kit.node(1).ns, "timeout", "30", "tcpdump", "-n", "-l", "-i", "eth0",
             "-c", "1", f"(icmp or icmp6) and host {target}"],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            time.sleep(1.5)  # tcpdump is listening
            sent, got = ping(a.ns, target, count=10, interval=0.05)
        finally:
            capture.send_signal(signal.SIGINT)
            out, err = capture.communicate(timeout=30)
        assert sent == got == 10, f"pods did not ping during the capture ({got}/{sent})"
        assert "listening on" in err, f"the capture did not run: {err.strip()}"
        assert not mentions(out, target), f"plain ICMP between pods on the underlay:\n{out}"

    def test_peer_added_changed_removed(self, kit):
        """A fourth node joins (its pod is reached), changes its public IP (peers follow, the old
        address leaves their state), then leaves (every object naming it is gone)."""
        from overlay_lab.traffic import add_pods, ping

        lab, first = kit.lab, kit.node(1)
        movers = kit.backend_cls.capabilities.moves_packets
        node = lab.add_node()
        try:
            from overlay_lab.support import call

            call(lab._support(), "node_added", lab, node)
            lab.start_agent(node, *kit.agent_args)
            lab.wait_ready([node], timeout=CONVERGE_TIMEOUT)
            pod = add_pods(lab, node, 1)[0]
            peers = lambda: lab.readyz(first)[1].get("peers")  # noqa: E731
            wait_for(lambda: peers() == 3, CONVERGE_TIMEOUT, f"{first.name} to see the new peer")
            if movers:
                wait_for(lambda: ping(kit.pods[0].ns, pod.ipv4 or pod.ipv6, 2) == (2, 2), CONVERGE_TIMEOUT,
                         "a pod on n1 to reach the new node's pod")
            key, entry = kit.lease_of(node)
            old_ip, new_ip = node.ip, str(_lab_module().UNDERLAY.network_address + 50 + len(lab.state.nodes))
            lab.stop_agent(node, signal.SIGTERM, timeout=30.0)
            _move_address(node, old_ip, new_ip)
            value = json.loads(entry["value"])
            value["PublicIP"] = new_ip  # as an operator moving the node would: the peers see a change
            lease_flag = [f"--lease={entry['lease']:x}"] if entry["lease"] else []
            lab.etcdctl("put", *lease_flag, f"{_lab_module().PREFIX}/subnets/{key}", json.dumps(value))
            self.public_ip_moved(lab, node, old_ip, key.split("&")[0].replace("-", "/"))
            lab.start_agent(node, *kit.agent_args)
            lab.wait_ready([node], timeout=CONVERGE_TIMEOUT)
            assert kit.lease_of(node)[0] == key, "the node did not keep its subnet across the address change"
            state = lambda: self._state(lab, first)  # noqa: E731
            wait_for(lambda: not mentions(state(), old_ip), CONVERGE_TIMEOUT,
                     f"{first.name} to drop the old address {old_ip}:\n{state()}")
            if movers:
                wait_for(lambda: ping(kit.pods[0].ns, pod.ipv4 or pod.ipv6, 2) == (2, 2), CONVERGE_TIMEOUT,
                         "a pod on n1 to reach the moved node's pod")
            subnets = key.replace("-", "/").split("&")
            lab.stop_agent(node, signal.SIGKILL, timeout=30.0)
            lab.etcdctl("del", f"{_lab_module().PREFIX}/subnets/{key}")
            gone = [new_ip, *(s.split("/")[0] for s in subnets)]
            wait_for(lambda: not any(mentions(state(), a) for a in gone), CONVERGE_TIMEOUT,
                     f"{first.name} to remove every object naming the removed peer ({', '.join(gone)})")
            wait_for(lambda: peers() == 2, CONVERGE_TIMEOUT, f"{first.name} to forget the removed peer")
        except BaseException:
            with open(node.log, errors="replace") as fh:
                print(f"--- last lines of {node.name}'s agent log\n{''.join(fh.readlines()[-30:])}")
            raise
        finally:
            if node.pid:
                lab.stop_agent(node, signal.SIGKILL, timeout=30.0)
            for ns in [*node.pods, node.ns]:
                delete_namespace(ns)
            lab.state.nodes.remove(node)
            lab.save()

    def test_kill9_and_restart_lose_no_ping(self, kit):
        """The agent is killed with SIGKILL and started again while a pod pings another every 20 ms:
        not one ping is lost (or the backend declares why its data path stops with the agent)."""
        caps = kit.backend_cls.capabilities
        if not caps.survives_restart:
            pytest.skip(caps.restart_note or f"{self.backend} declares survives_restart=False")
        self._movers_only(kit)
        from overlay_lab.traffic import BackgroundPing

        wait_for(kit.pings_ok, CONVERGE_TIMEOUT, "pods to ping each other before the restart")
        a, b = kit.pods[0], kit.pods[1]
        pinger = BackgroundPing(a.ns, b.ipv4 or b.ipv6, PING_WINDOW, interval=0.02)
        try:
            time.sleep(1.0)
            started = time.monotonic()
            kit.restart(kit.node(1), signal.SIGKILL)
            took = time.monotonic() - started
        finally:
            sent, got = pinger.result()
            pinger.stop()
        assert took < PING_WINDOW - 2, f"the restart took {took:.0f} s, longer than the ping window"
        assert sent == got, f"{sent - got} of {sent} pings lost across kill -9 and restart"

    def test_secrets_never_logged(self, kit):
        """No secret the kit knows of (declared options, the agents' secret environment and key
        files) appears in any agent log, /readyz or /metrics."""
        values = self._secret_values(kit)
        if not values:
            pytest.skip(f"{self.backend} has no secret the kit knows of")
        port = _lab_module().HEALTH_PORT
        for node in kit.lab.state.nodes:
            with open(node.log, errors="replace") as fh:
                texts = {"log": fh.read()}
            for path in ("/readyz?verbose", "/metrics"):
                texts[path] = http_get(node.ns, "127.0.0.1", port, path)[1].decode(errors="replace")
            for where, text in texts.items():
                assert not any(v in text for v in values), f"a secret appears in {node.name}'s {where}"

    @staticmethod
    def _agent_env(lab: Any, node: Any) -> dict[str, str]:
        """What the lab adds to ``node``'s agent environment (the backend's lab extras, then the lab's)."""
        from overlay_lab.support import call

        return {**call(lab._support(), "node_env", lab, node, default={}), **lab.env}

    def _secret_values(self, kit: KitLab) -> list[str]:
        backend = kit.lab.state.config.get("Backend", {})
        names = {n.lower() for n in self.secrets} | {n.lower() for n in backend if SECRET_OPTION.search(n)}
        values = [str(v) for k, v in backend.items() if k.lower() in names and v]
        for node in kit.lab.state.nodes:
            env = self._agent_env(kit.lab, node)
            values += [v for k, v in env.items() if SECRET_ENV.search(k) and v]
            for k, path in env.items():
                if SECRET_FILE_ENV.search(k) and os.path.isfile(path):
                    with open(path) as fh:
                        values.append(fh.read().strip())
        return [v for v in values if len(v) >= 8]

    def test_drift_is_repaired(self, kit):
        """Something the backend owns is deleted behind its back; the agent puts it back."""
        if not kit.backend_cls.capabilities.repairs_drift:
            pytest.skip(f"{self.backend} cannot see what it programmed (Capabilities.repairs_drift=False)")
        if self.drift is None and not kit.backend_cls.capabilities.moves_packets:
            pytest.skip(f"{self.backend} moves no packets and declares no drift: it owns no data-plane object")
        node = kit.node(1)
        what, repaired = self._break(kit, node)
        wait_for(repaired, CONVERGE_TIMEOUT, f"the deleted object ({what}) to be put back")
        if kit.backend_cls.capabilities.moves_packets:
            wait_for(kit.pings_ok, CONVERGE_TIMEOUT, "pods to ping each other after the repair")

    def _state(self, lab: Any, node: Any) -> str:
        """Everything that could still name a peer on ``node``: kernel tables, the backend's own
        state and the per-peer status the agent reports."""
        peer_status = json.dumps(lab.readyz(node)[1].get("peer_status", {}))
        return "\n".join((node_state(node), self.backend_state(lab, node), peer_status))

    def _break(self, kit: KitLab, node: Any) -> tuple[str, Callable[[], bool]]:
        """Delete one object the backend owns on ``node``: what it was, and a "repaired?" predicate."""
        drift = self.drift
        if callable(drift):
            return "declared by the backend's drift", drift(kit.lab, node)
        if drift in (None, "route"):
            peers = {kit.subnet_key(n).split("&")[0].replace("-", "/") for n in kit.lab.state.nodes if n is not node}

            def peer_routes() -> list[str]:
                lines = ip("route", "show", "proto", "79", ns=node.ns).splitlines()
                return [line.split()[0] for line in lines if line.split()[0] in peers]

            routes = peer_routes()
            if routes:
                ip("route", "del", routes[0], "proto", "79", ns=node.ns)
                return f"route {routes[0]} proto 79 on {node.name}", lambda: routes[0] in peer_routes()
            if drift == "route":
                raise AssertionError(f"{node.name} has no proto-79 route to a peer subnet to delete")
        devices = _backend_devices(node) if drift is None else [str(drift).removeprefix("device:")]
        if not devices:
            pytest.fail(f"{self.backend}: nothing generic to delete (no proto-79 route to a peer, no device of its "
                        "own); declare the class attribute drift")
        ip("link", "del", devices[0], ns=node.ns)
        return f"device {devices[0]} on {node.name}", lambda: devices[0] in _backend_devices(node)

    def test_cleanup_leaves_nothing(self, kit):
        """The agent is stopped and ``overlay-core cleanup`` runs on its node: no device, route,
        nft table or iptables chain (flannel-*, FLANNEL-*), XFRM entry, process or subnet file of
        the backend is left, nor anything ``outside_of`` shows; a second run removes nothing."""
        lab, node = kit.lab, kit.node(1)
        lab.stop_agent(node, signal.SIGTERM, timeout=30.0)
        state_dir = os.path.join(lab.node_dir(node), "state")
        cmd = [sys.executable, "-m", "overlay_core", "cleanup", f"--etcd-endpoints={lab.etcd_endpoints}",
               "--iface=eth0", f"--subnet-file={node.subnet_file}", f"--state-dir={state_dir}"]
        env_cmd = ["env", *(f"{k}={v}" for k, v in self._agent_env(lab, node).items())]
        first = nsexec(node.ns, *env_cmd, *cmd, check=False, timeout=120)
        assert first.returncode == 0, first.stderr
        assert _backend_devices(node) == [], f"devices left: {_backend_devices(node)}\n{first.stdout}"
        routes = ip("route", "show", "proto", "79", ns=node.ns) + ip("-6", "route", "show", "proto", "79", ns=node.ns)
        assert routes == "", f"routes left:\n{routes}"
        ruleset = nsexec(node.ns, "nft", "list", "ruleset", check=False).stdout  # iptables-nft's too
        assert "flannel" not in ruleset.lower(), f"firewall rules left:\n{ruleset}"
        xfrm = ip("xfrm", "state", ns=node.ns, check=False) + ip("xfrm", "policy", ns=node.ns, check=False)
        assert xfrm == "", f"XFRM entries left:\n{xfrm}"
        assert pids_in(node.ns) == [], f"processes left in {node.ns}: {pids_in(node.ns)}"
        assert not os.path.exists(node.subnet_file), "the subnet file is left"
        outside = self.outside_of(lab, node)
        assert outside == "", f"left outside the node:\n{outside}\n{first.stdout}"
        second = nsexec(node.ns, *env_cmd, *cmd, check=False, timeout=120)
        said = [line for line in second.stdout.splitlines() if line and not line.startswith("note:")]
        assert second.returncode == 0 and said == ["nothing of overlay's found on this node"], \
            second.stdout + second.stderr


def _move_address(node: Any, old_ip: str, new_ip: str) -> None:
    """Renumber ``node``'s underlay address and put back the routes the lab gave it (deleting the
    address flushes every route via a gateway on its subnet)."""
    routes = [line.split() for line in ip("route", "show", "proto", "boot", ns=node.ns).splitlines()]
    ip("addr", "del", f"{old_ip}/24", "dev", "eth0", ns=node.ns)
    ip("addr", "add", f"{new_ip}/24", "dev", "eth0", ns=node.ns)
    for route in routes:
        ip("route", "replace", *route, ns=node.ns)
    node.ip = new_ip


def _backend_devices(node: Any) -> list[str]:
    """The node's devices that the lab did not make (lo, eth0, the pods' cni0 and veths)."""
    names = [line.split(":")[1].strip().split("@")[0] for line in ip("-o", "link", "show", ns=node.ns).splitlines()]
    return [n for n in names if n not in ("lo", "eth0", "cni0") and not n.startswith("veth")]


def _config_check(config: dict) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "overlay_core", "config", "check", "-"], input=json.dumps(config),
                          capture_output=True, text=True, timeout=120)
