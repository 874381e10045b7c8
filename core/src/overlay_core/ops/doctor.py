"""``overlay-core doctor``: check this node the way an experienced operator would.

Each check says ok, warn or fail in one line, and what to do. Exit status: 0 when every check
is ok, 1 when the worst is a warning, 2 when any check fails. Checks read the node (sysctls,
devices, the nftables ruleset, processes in this network namespace), the store, and the running
agent's ``/readyz`` when it answers; they change nothing (kernel features are probed in a
throwaway anonymous namespace, see ``probes``).
"""

from __future__ import annotations

import ipaddress
import os
import subprocess
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field, replace
from typing import Any

import trio

from .. import subnetfile
from ..agent_options import AgentOptions
from ..backend import Capabilities
from ..config import NetworkConfig
from ..dataplane.device_record import read_record
from ..dataplane.links import read_link
from ..dataplane.netlink import Netlink
from ..errors import OverlayError
from ..iface import Snapshot, read_interfaces, select_interface
from ..lease import Lease
from . import nft_inspect, probes
from .agent_http import read_report
from .context import StoreView, config_from_subnet_file, device_record_path, own_subnets, read_store

LEVELS = {"ok": 0, "warn": 1, "fail": 2}
PING_LIMIT = 64  # peers pinged at most (bounded work on a large cluster)
PING_WORKERS = 16
PING_TIMEOUT = 2
OUR_NFT_TABLES = {("ip", "flannel-ipv4"), ("ip6", "flannel-ipv6")}
IPTABLES_TABLES = {("ip", "filter"), ("ip6", "filter"), ("ip", "nat"), ("ip6", "nat")}


@dataclass(frozen=True)
class Check:
    name: str
    level: str
    message: str
    advice: str = ""

    def line(self) -> str:
        return f"{self.level:<4}  {self.name}: {self.message}" + (f"; {self.advice}" if self.advice else "")


@dataclass
class NodeView:
    """Everything the checks read, gathered once."""

    options: AgentOptions
    store: StoreView
    config: NetworkConfig | None
    subnet_env: dict[str, str]
    report: dict[str, Any] | None
    snapshot: Snapshot | None
    iface_error: str = ""
    ext: Any = None  # ExternalInterface
    capabilities: Capabilities | None = None
    backend_error: str = ""
    ruleset: dict[str, Any] | None = None
    ruleset_error: str = ""
    devices: list[str] = field(default_factory=list)  # recorded devices that exist now, as recorded
    replaced: list[str] = field(default_factory=list)  # recorded names now used by another kind of device
    agents: list[probes.AgentProcess] = field(default_factory=list)


async def gather(options: AgentOptions) -> NodeView:
    store = await read_store(options)
    config = store.config or config_from_subnet_file(options.subnet_file)
    try:
        _, report = await trio.to_thread.run_sync(read_report, options.healthz_ip, options.healthz_port)
    except OverlayError:
        report = None
    subnet_env = await trio.to_thread.run_sync(subnetfile.read, options.subnet_file)
    view = NodeView(options, store, config, subnet_env, report, None)
    netlink = Netlink()
    try:
        view.snapshot = await read_interfaces(netlink, options.iface.can_reach)
        await _recorded_devices(view, netlink)
    finally:
        netlink.close()
    if config is not None:
        try:
            view.ext = select_interface(view.snapshot, replace(options.iface, ipv4=config.ipv4 is not None,
                                                               ipv6=config.ipv6 is not None))
        except OverlayError as exc:
            view.iface_error = str(exc)
    if store.config is not None:
        from ..plugins import load_backend_class

        try:
            view.capabilities = load_backend_class(store.config.backend_type).capabilities
        except OverlayError as exc:
            view.backend_error = str(exc)
    try:
        view.ruleset = await trio.to_thread.run_sync(nft_inspect.read_ruleset)
    except (OSError, ValueError) as exc:
        view.ruleset_error = str(exc)
    view.agents = await trio.to_thread.run_sync(probes.agents_here)
    return view


async def _recorded_devices(view: NodeView, netlink: Netlink) -> None:
    """Devices overlay made (the state dir's record) that exist as made, or under another kind."""
    for device in await trio.to_thread.run_sync(read_record, device_record_path(view.options)):
        info = await netlink.call(lambda ipr, name=device.name: read_link(ipr, name))
        if info is not None and info.kind == device.kind:
            view.devices.append(device.name)
        elif info is not None:
            view.replaced.append(f"{device.name} (now {info.kind or 'a plain device'}, overlay made {device.kind})")


# -- checks ------------------------------------------------------------------------------------


def check_store(view: NodeView) -> list[Check]:
    if view.store.error:
        return [Check("etcd", "fail", view.store.error, "check --etcd-endpoints, the TLS files and that etcd runs")]
    assert view.store.config is not None
    return [Check("etcd", "ok", f"{view.options.etcd.label()} answers; network config valid "
                  f"(backend {view.store.config.backend_type}, {len(view.store.leases)} leases)")]


def check_agents(view: NodeView) -> list[Check]:
    agents = view.agents
    if not agents:
        return [Check("agent", "warn", "no overlay or flanneld agent runs in this network namespace",
                      "start overlay-core run (its systemd unit or DaemonSet)")]
    listing = ", ".join(f"{a.program} (pid {a.pid})" for a in agents)
    if len(agents) > 1:
        return [Check("agent", "fail", f"{len(agents)} agents own this node's devices and rules: {listing}",
                      "stop all but one (a second agent or Flannel itself fights over the same devices and tables)")]
    if agents[0].program == "flanneld":
        return [Check("agent", "fail", f"Flannel runs here: {listing}",
                      "stop flanneld before running overlay on this node (they use the same devices and rules)")]
    if view.replaced:
        return [Check("agent", "warn", f"devices overlay made were replaced by another program: "
                      f"{', '.join(view.replaced)}", "find what made them; the agent replaces them again, "
                      "and the two fight")]
    state = "" if view.report is None else "; it answers on its health port"
    return [Check("agent", "ok", f"{listing}{state}")]


def check_forwarding(view: NodeView) -> list[Check]:
    out = []
    wanted = []
    if view.config is None or view.config.ipv4 is not None:
        wanted.append("net.ipv4.ip_forward")
    if view.config is not None and view.config.ipv6 is not None:
        wanted.append("net.ipv6.conf.all.forwarding")
    for name in wanted:
        value = probes.read_sysctl(name)
        if value == "1":
            out.append(Check("forwarding", "ok", f"{name}=1"))
        else:
            out.append(Check("forwarding", "fail", f"{name}={value or 'missing'}: this node does not forward "
                             "pod traffic", f"set {name}=1 (sysctl -w {name}=1 and in /etc/sysctl.d)"))
    return out


def check_rp_filter(view: NodeView) -> list[Check]:
    devices = ([view.ext.name] if view.ext is not None else []) + view.devices
    all_value = probes.read_sysctl("net.ipv4.conf.all.rp_filter")
    strict = []
    for dev in devices:
        if probes.effective_rp_filter(all_value, probes.read_sysctl(f"net.ipv4.conf.{dev}.rp_filter")) == 1:
            strict.append(dev)
    if not devices:
        return [Check("rp_filter", "warn", "no device of ours found to check",
                      "start the agent, then run doctor again")]
    if strict:
        return [Check("rp_filter", "warn", f"strict reverse-path filtering on {', '.join(strict)} "
                      f"(net.ipv4.conf.all.rp_filter={all_value}): packets whose way back leaves by another "
                      "device are dropped", "use loose mode (the larger of all's and the device's value counts): "
                      + "; ".join(f"echo 2 > /proc/sys/net/ipv4/conf/{dev}/rp_filter" for dev in strict))]
    return [Check("rp_filter", "ok", f"not strict on {', '.join(devices)}")]


def sysfs_mtu(dev: str, root: str = "/sys/class/net") -> int | None:
    try:
        with open(os.path.join(root, dev, "mtu")) as fh:
            return int(fh.read())
    except (OSError, ValueError):
        return None


def pod_interfaces(bridge: str = "cni0", root: str = "/sys/class/net") -> dict[str, int]:
    """The pods' side of the node: the CNI bridge and its member ports, with their MTUs."""
    path = os.path.join(root, bridge)
    if not os.path.isdir(path):
        return {}
    ports = os.path.join(path, "brif")
    names = [bridge, *sorted(os.listdir(ports))] if os.path.isdir(ports) else [bridge]
    return {name: mtu for name in names if (mtu := sysfs_mtu(name, root)) is not None}


def mtu_checks(ext_name: str, ext_mtu: int, flannel_mtu: int | None, started_mtu: int | None,
               pods: dict[str, int]) -> list[Check]:
    """External MTU vs FLANNEL_MTU (and vs the MTU the agent computed it from) vs the pods' interfaces."""
    if flannel_mtu is None:
        return [Check("mtu", "warn", "the subnet file has no FLANNEL_MTU", "start the agent, then run doctor again")]
    out = []
    if flannel_mtu > ext_mtu:
        out.append(Check("mtu", "fail", f"FLANNEL_MTU {flannel_mtu} exceeds {ext_name}'s MTU {ext_mtu}: large pod "
                         "packets are dropped",
                         f"restart the agent to recompute FLANNEL_MTU, or raise {ext_name}'s MTU"))
    elif started_mtu is not None and ext_mtu < started_mtu:
        out.append(Check("mtu", "fail", f"{ext_name}'s MTU fell from {started_mtu} (when FLANNEL_MTU {flannel_mtu} was "
                         f"computed) to {ext_mtu}: encapsulated packets no longer fit",
                         f"restore {ext_name}'s MTU, or restart the agent and recreate the pods"))
    too_big = {name: mtu for name, mtu in pods.items() if mtu > flannel_mtu}
    if too_big:
        listed = ", ".join(f"{name} {mtu}" for name, mtu in sorted(too_big.items()))
        out.append(Check("mtu", "fail", f"pod interfaces larger than FLANNEL_MTU {flannel_mtu}: {listed}",
                         "recreate those pods (the CNI plugin reads FLANNEL_MTU) or fix the bridge's MTU"))
    if not out:
        pods_note = f", {len(pods)} pod interfaces within it" if pods else ""
        out.append(Check("mtu", "ok", f"{ext_name} MTU {ext_mtu}, FLANNEL_MTU {flannel_mtu}{pods_note}"))
    return out


def check_mtu(view: NodeView) -> list[Check]:
    if view.ext is None:
        return [Check("mtu", "warn", view.iface_error or "external interface unknown (no config)",
                      "give the agent's --iface flags to doctor")]
    raw = view.subnet_env.get("FLANNEL_MTU", "")
    started = (view.report or {}).get("iface", {})
    started_mtu = started.get("mtu") if started.get("name") == view.ext.name else None
    return mtu_checks(view.ext.name, view.ext.mtu, int(raw) if raw.isdigit() else None, started_mtu,
                      pod_interfaces())


def check_firewall(view: NodeView) -> list[Check]:
    opts = view.options
    if view.config is None:
        return [Check("firewall", "warn", "no network config: cannot tell which rules should exist",
                      "make etcd reachable (see the etcd check)")]
    if not (opts.forward_rules or opts.ip_masq):
        return [Check("firewall", "ok", "no rules wanted (--iptables-forward-rules=false, no --ip-masq)")]
    if view.ruleset is None:
        return [Check("firewall", "warn", f"cannot read the nftables ruleset: {view.ruleset_error}",
                      "install nftables to let doctor check the rules")]
    out = []
    for version, rng in ((4, view.config.ipv4), (6, view.config.ipv6)):
        if rng is None:
            continue
        chains = nft_inspect.base_chains(view.ruleset)
        if view.config.enable_nftables:
            family, table = ("ip", "flannel-ipv4") if version == 4 else ("ip6", "flannel-ipv6")
            ours = chains.get((family, table, "forward"))
            present = ours is not None if opts.forward_rules else (family, table) in nft_inspect.tables(view.ruleset)
            where, skip = f"nft table {family} {table}", {(family, table)}
        else:
            ours = chains.get(("ip" if version == 4 else "ip6", "filter", "FORWARD"))
            present = _iptables_jump_present(version) if opts.forward_rules else True
            where, skip = "iptables chain FLANNEL-FWD (jumped to from FORWARD)", IPTABLES_TABLES
        if not present:
            out.append(Check("firewall", "fail", f"IPv{version}: {where} is missing",
                             f"the agent restores it within --iptables-resync={opts.firewall_resync:g} s; "
                             "if it does not, check that it runs and its log"))
            continue
        if opts.forward_rules:
            for finding in nft_inspect.drops(view.ruleset, "forward", version, ours, skip, network=rng.network):
                out.append(Check("firewall", finding.level, f"IPv{version}: {finding.text}",
                                 "accept the network's traffic there, or remove the drop"))
        if not out:
            out.append(Check("firewall", "ok", f"IPv{version}: {where} in place, no other forward chain drops "
                             f"{rng.network}"))
    return out


def _iptables_jump_present(version: int) -> bool:
    from ..dataplane.firewall import JUMPS

    parent, chain, comment = JUMPS["filter"]
    tool = "iptables" if version == 4 else "ip6tables"
    try:
        return subprocess.run([tool, "-w", "5", "-t", "filter", "-C", parent, "-m", "comment", "--comment", comment,
                               "-j", chain], capture_output=True, timeout=30).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


def backend_port(config: NetworkConfig, caps: Capabilities) -> int | None:
    """The UDP port peers send to, as the backend declares it (``Capabilities.udp_port*``)."""
    if not caps.udp_port:
        return None
    if caps.udp_port_key:
        value = config.backend_option(caps.udp_port_key)
        if isinstance(value, int) and not isinstance(value, bool) and value > 0:
            return value
    return caps.udp_port


def ping(ip: str) -> bool:
    family = "-6" if ipaddress.ip_address(ip).version == 6 else "-4"
    try:
        return subprocess.run(["ping", family, "-n", "-q", "-c", "1", "-W", str(PING_TIMEOUT), ip],
                              capture_output=True, timeout=PING_TIMEOUT + 5).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


def peers_of(view: NodeView) -> list[Lease]:
    own = {n for n in own_subnets(view.options.subnet_file) if n is not None}
    cfg = view.store.config
    wanted = cfg.backend_type if cfg is not None else None
    return [lease for lease in view.store.leases
            if not ({lease.subnet, lease.ipv6_subnet} & own) and (wanted is None or lease.attrs.backend_type
                                                                   in (wanted, _advertised(wanted)))]


def _advertised(backend_type: str) -> str:
    from ..plugins import load_backend_class

    try:
        return load_backend_class(backend_type).advertised_type()
    except OverlayError:
        return backend_type


def check_peers(view: NodeView, pinger: Callable[[str], bool] = ping) -> list[Check]:
    if view.store.config is None:
        return [Check("peers", "warn", "the store cannot be read: peers unknown", "see the etcd check")]
    out = []
    caps = view.capabilities
    port = backend_port(view.store.config, caps) if caps is not None else None
    if port is not None and view.ruleset is not None:
        versions = [v for v, rng in ((4, view.store.config.ipv4), (6, view.store.config.ipv6)) if rng is not None]
        for version in versions:
            for finding in nft_inspect.drops(view.ruleset, "input", version, None, OUR_NFT_TABLES, port=port):
                out.append(Check("port", finding.level, f"IPv{version}: {finding.text}: peers cannot reach this "
                                 f"node's {view.store.config.backend_type} port", f"accept UDP {port} from the peers"))
        if not out:
            out.append(Check("port", "ok", f"no local rule drops incoming UDP {port}"))
    peers = peers_of(view)
    addresses = sorted({str(p.attrs.public_ip or p.attrs.public_ipv6) for p in peers
                        if (p.attrs.public_ip and int(p.attrs.public_ip)) or p.attrs.public_ipv6})
    if not addresses:
        return [*out, Check("peers", "ok", "no peers in the store")]
    checked = addresses[:PING_LIMIT]
    with ThreadPoolExecutor(PING_WORKERS) as pool:
        answers = dict(zip(checked, pool.map(pinger, checked)))
    silent = [ip for ip, ok in answers.items() if not ok]
    udp = (f"; UDP {port} itself cannot be probed from here (no answer is expected): run doctor on the peers "
           "to check their ports") if port else ""
    more = f" (the first {PING_LIMIT} of {len(addresses)})" if len(addresses) > PING_LIMIT else ""
    if silent:
        out.append(Check("peers", "fail", f"{len(silent)} of {len(checked)} peers{more} do not answer ping at their "
                         f"public IP: {', '.join(silent[:10])}{udp}",
                         "check the underlay route and firewalls between the nodes (ICMP may also be filtered)"))
    else:
        noun = "peer answers" if len(checked) == 1 else "peers answer"
        out.append(Check("peers", "ok", f"{len(checked)} {noun}{more} ping at their public IP{udp}"))
    return out


def check_kernel(view: NodeView, prober: Callable[[str], tuple[bool, str]] = probes.probe_feature) -> list[Check]:
    if view.capabilities is None:
        return [Check("kernel", "warn", view.backend_error or "backend unknown (the store cannot be read)",
                      "see the etcd check")]
    caps, backend = view.capabilities, view.store.config.backend_type if view.store.config else "?"
    out = []
    for feature in caps.kernel_features:
        ok, why = prober(feature)
        out.append(Check("kernel", "ok", f"{feature} works ({backend} needs it)") if ok else
                   Check("kernel", "fail", f"{backend} needs {feature}: {why}", probes.FEATURE_HELP[feature]))
    if caps.kernel_features_any:
        results = {f: prober(f) for f in caps.kernel_features_any}
        working = [f for f, (ok, _) in results.items() if ok]
        if working:
            verb = "works" if len(working) == 1 else "work"
            out.append(Check("kernel", "ok", f"{' and '.join(working)} {verb} ({backend} needs one of "
                             f"{', '.join(caps.kernel_features_any)})"))
        else:
            reasons = "; ".join(f"{f}: {why}" for f, (_, why) in results.items())
            out.append(Check("kernel", "fail", f"{backend} needs one of {', '.join(caps.kernel_features_any)}: "
                             f"{reasons}", " or ".join(probes.FEATURE_HELP[f] for f in caps.kernel_features_any)))
    if not out:
        out.append(Check("kernel", "ok", f"{backend} needs no particular kernel feature"))
    return out


CHECKS = (check_store, check_agents, check_forwarding, check_rp_filter, check_mtu, check_firewall, check_peers,
          check_kernel)


def run_checks(view: NodeView) -> list[Check]:
    return [check for fn in CHECKS for check in fn(view)]


def exit_status(checks: list[Check]) -> int:
    return max((LEVELS[c.level] for c in checks), default=0)


def as_json(checks: list[Check]) -> dict[str, Any]:
    return {"status": ["ok", "warn", "fail"][exit_status(checks)], "checks": [asdict(c) for c in checks]}


async def doctor(options: AgentOptions) -> list[Check]:
    view = await gather(options)
    return await trio.to_thread.run_sync(run_checks, view)
