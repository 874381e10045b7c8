"""WireGuard backend benchmarks (draft; the lead re-runs the final figures). Prints JSON.

(a) pod→pod TCP (iperf3, 3 s per round, rounds alternate) over the tunnel configured by
    overlay-wireguard (leases → calc → one UAPI transaction per device) against a tunnel
    configured by hand with ``wg set`` (as in reference/probes/wg_e2e.sh), both between the
    same two namespaces in the same run, each with its own wireguard-go pair.
(b) cold sync of 1000 peers into a fresh wireguard-go device: one UAPI ``set`` (encode + send
    + answer) against ``wg setconf`` of the same peers from a config file (process included,
    run through ``nsenter`` into wireguard-go's mount namespace, as an operator would).
(c) ``--lab-rounds N``: the figure of ``bench/dataplane.py --backends wireguard`` (two-node lab,
    pods behind cni0, pod→pod iperf3), but with both labs up at once and the rounds interleaved:
    the agent's lab; the lab configured by hand (``hand_wireguard.py``); and the same hand lab
    with the FORWARD accept rules Flannel (and our agent) install (``FLANNEL-FWD``, iptables-nft).
    Per round also the CPU seconds of the agents and of the wireguard-go processes.

    sudo .venv/bin/python bench/wireguard_bench.py [--rounds 3] [--peers 1000] [--seconds 3]
    sudo .venv/bin/python bench/wireguard_bench.py --lab-rounds 6 [--seconds 3]

Namespaces ``wgt-bench-<pid>-*`` (192.0.2.0/24, 2001:db8::/32, 10.0.0.0/8 inside), for (c) the labs
``ovl-ovwa<n>-*`` and ``ovl-ovwh<n>-*``; every namespace and process is removed at the end, also
on failure.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from ipaddress import IPv4Address, ip_network
from pathlib import Path

import trio
from overlay_core import Lease, LeaseAttrs
from overlay_core.testing.netns import nsexec
from overlay_lab.lab import Lab
from overlay_lab.traffic import add_pods, iperf, pods_of
from overlay_wireguard.calc import desired_peers
from overlay_wireguard.keys import KeyPair
from overlay_wireguard.options import WgOptions
from overlay_wireguard.peer import DeviceConfig
from overlay_wireguard.testing import WgNet, wait_ping
from overlay_wireguard.userspace import WireguardGo

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import hand_wireguard  # noqa: E402

HAND_PORT = 51830
LAB_NETWORK = "10.5.0.0/16"
# Flannel's forward rules (reference/flannel-behaviour.md, "Forward rules"), as our agent writes them
FORWARD_RULES = (
    ("-N", "FLANNEL-FWD"),
    ("-A", "FORWARD", "-m", "comment", "--comment", "flanneld forward", "-j", "FLANNEL-FWD"),
    ("-A", "FLANNEL-FWD", "-s", LAB_NETWORK, "-m", "comment", "--comment", "flanneld forward", "-j", "ACCEPT"),
    ("-A", "FLANNEL-FWD", "-d", LAB_NETWORK, "-m", "comment", "--comment", "flanneld forward", "-j", "ACCEPT"),
)


def wg_in(pid: int, *args: str, input: str | None = None) -> float:
    """Run ``wg`` inside wireguard-go's mount and network namespaces; wall seconds."""
    started = time.perf_counter()
    subprocess.run(["nsenter", "--target", str(pid), "--mount", "--net", "wg", *args], check=True,
                   capture_output=True, input=input, text=True, timeout=60)
    return time.perf_counter() - started


async def hand_tunnel(net: WgNet, n1, n2, workdir: Path) -> None:
    """hand0 in both namespaces, configured only with wg(8) and ip(8)."""
    keys = {n.name: KeyPair.generate() for n in (n1, n2)}
    for n, peer, idx in ((n1, n2, 1), (n2, n1, 2)):
        n.instances["hand0"] = WireguardGo("hand0", n.sockdir)
        await net.start(n, "hand0")
        keyfile = workdir / f"{n.name}.key"
        keyfile.write_text(keys[n.name].private_b64())
        os.chmod(keyfile, 0o600)
        wg_in(n.procs["hand0"].pid, "set", "hand0", "private-key", str(keyfile), "listen-port", str(HAND_PORT),
              "peer", keys[peer.name].public, "allowed-ips", f"10.9.0.{3 - idx}/32",
              "endpoint", f"192.0.2.{peer.index}:{HAND_PORT}")
        subprocess.run(["ip", "-n", n.ns, "addr", "add", f"10.9.0.{idx}/24", "dev", "hand0"], check=True)
        subprocess.run(["ip", "-n", n.ns, "link", "set", "hand0", "up"], check=True)


def fake_leases(n: int) -> list[Lease]:
    out = []
    for i in range(n):
        data = {"PublicKey": KeyPair.generate().public, "Port": 51820}
        attrs = LeaseAttrs(IPv4Address(f"198.51.100.{i % 250 + 1}"), None, "wireguard", data)
        out.append(Lease(ip_network(f"10.{100 + i // 256}.{i % 256}.0/24"), None, attrs, i + 1, 1))
    return out


def setconf_text(config: DeviceConfig, peers) -> str:
    lines = ["[Interface]", f"PrivateKey = {KeyPair.from_private(config.private_key.reveal()).private_b64()}",
             f"ListenPort = {config.listen_port}"]
    for p in peers:
        lines += ["[Peer]", f"PublicKey = {p.public_key}", f"AllowedIPs = {', '.join(map(str, p.allowed_ips))}",
                  f"Endpoint = {p.endpoint}"]
    return "\n".join(lines) + "\n"


async def cold_sync(net: WgNet, node, n_peers: int, rounds: int, workdir: Path) -> dict:
    leases = fake_leases(n_peers)
    started = time.perf_counter()
    want = desired_peers(node.local, leases)
    calc_s = time.perf_counter() - started
    peers = list(want.peers["flannel-wg"].values())
    for name in ("sync0", "sync1"):
        node.instances[name] = WireguardGo(name, node.sockdir)
        await net.start(node, name)
    ours = node.instances["sync0"].client(timeout=120)
    conf = workdir / "setconf.conf"
    uapi, setconf = [], []
    for _ in range(rounds):
        empty0 = DeviceConfig(node.keys.private, 51850)
        await ours.set(empty0, [], replace_peers=True)
        t = time.perf_counter()
        await ours.set(DeviceConfig(node.keys.private, 51850), peers, replace_peers=True)
        uapi.append(time.perf_counter() - t)
        conf.write_text(setconf_text(DeviceConfig(node.keys.private, 51851), []))
        wg_in(node.procs["sync1"].pid, "setconf", "sync1", str(conf))
        conf.write_text(setconf_text(DeviceConfig(node.keys.private, 51851), peers))
        setconf.append(wg_in(node.procs["sync1"].pid, "setconf", "sync1", str(conf)))
    assert len((await ours.get()).peers) == n_peers
    med_u, med_s = statistics.median(uapi), statistics.median(setconf)
    return {"peers": n_peers, "uapi_one_transaction_s": [round(x, 4) for x in uapi],
            "wg_setconf_s": [round(x, 4) for x in setconf], "median_ratio_uapi_over_setconf": round(med_u / med_s, 2),
            "calc_desired_from_leases_s": round(calc_s, 4)}


async def run(args) -> dict:
    with tempfile.TemporaryDirectory(prefix="wgt-bench-") as tmp, WgNet(f"wgt-bench-{os.getpid()}", Path(tmp)) as net:
        workdir = Path(tmp)
        n1, n2 = (net.add_node(i, WgOptions()) for i in (1, 2))
        for n in (n1, n2):
            await net.start(n)
        await net.configure_all()
        await hand_tunnel(net, n1, n2, workdir)
        for dst, src in ((n2.pod, n1.pod), ("10.9.0.2", "10.9.0.1")):
            assert await trio.to_thread.run_sync(lambda d=dst, s=src: wait_ping(n1.ns, d, s)), f"no ping to {dst}"
        ours, hand = [], []
        for r in range(args.rounds):  # alternate which tunnel goes first, against drift on a shared machine
            order = ((ours, n2.pod), (hand, "10.9.0.2"))
            for results, dst in order if r % 2 == 0 else reversed(order):
                results.append(await trio.to_thread.run_sync(lambda d=dst: iperf(n2.ns, n1.ns, d, args.seconds)))
        tcp = {"overlay_mbit_s": [round(x) for x in ours], "hand_wg_set_mbit_s": [round(x) for x in hand],
               "median_ratio": round(statistics.median(ours) / max(statistics.median(hand), 1e-9), 3)}
        sync = await cold_sync(net, n1, args.peers, args.rounds, workdir)
    return {"pod_tcp": tcp, "cold_sync": sync, "note": "2-core VM shared with other jobs; figures are indicative"}


def forward_rules(lab: Lab, on: bool) -> None:
    """Flannel's FORWARD accept rules on every node of a hand lab, or none at all (the lab's
    namespaces only)."""
    for node in lab.state.nodes:
        nsexec(node.ns, "nft", "flush", "ruleset")
        for rule in FORWARD_RULES if on else ():
            nsexec(node.ns, "iptables", *rule)


def cpu_seconds(pids: list[int]) -> float:
    """User + system CPU seconds used so far by ``pids`` (all their threads) and by their
    children already reaped (an agent's iptables/nft runs)."""
    total = 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/stat") as fh:
                fields = fh.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += sum(int(f) for f in fields[11:15])
    return total / os.sysconf("SC_CLK_TCK")


def wireguard_go_pids(lab: Lab) -> list[int]:
    out = []
    for node in lab.state.nodes:
        for pid in subprocess.run(["ip", "netns", "pids", node.ns], capture_output=True, text=True).stdout.split():
            try:
                with open(f"/proc/{pid}/comm") as fh:
                    if fh.read().strip() == "wireguard-go":
                        out.append(int(pid))
            except OSError:
                pass
    return out


def lab_throughput(rounds: int, seconds: int) -> dict:
    """(c): both labs up at once, rounds interleaved (the order flips every round)."""
    root = tempfile.mkdtemp(prefix="ovw-bench-lab-")
    tag = os.getpid() % 1000
    agent_lab, hand_lab = Lab(f"ovwa{tag}", state_root=root), Lab(f"ovwh{tag}", state_root=root)
    try:
        agent_lab.up(nodes=2, backend="wireguard", network=LAB_NETWORK)
        hand_lab.up(nodes=2, backend="wireguard", network=LAB_NETWORK, start_agents=False)
        hand_wireguard.by_hand(hand_lab)
        for lab in (agent_lab, hand_lab):
            for node in lab.state.nodes:
                add_pods(lab, node, 1)
        variants = (("agent", agent_lab, None), ("hand", hand_lab, False), ("hand_with_forward_rules", hand_lab, True))
        mbits: dict[str, list[float]] = {name: [] for name, _, _ in variants}
        cpu: dict[str, list[dict]] = {name: [] for name, _, _ in variants}
        agents = [n.pid for n in agent_lab.state.nodes]
        for r in range(rounds):
            for name, lab, rules in variants if r % 2 == 0 else tuple(reversed(variants)):
                if rules is not None:
                    forward_rules(lab, rules)
                a, b = pods_of(lab)[:2]
                wg_pids = wireguard_go_pids(lab)
                before = (cpu_seconds(agents), cpu_seconds(wg_pids))
                mbits[name].append(iperf(b.ns, a.ns, b.ipv4, seconds))
                after = (cpu_seconds(agents), cpu_seconds(wg_pids))
                cpu[name].append({"agents_cpu_s": round(after[0] - before[0], 2) if name == "agent" else None,
                                  "wireguard_go_cpu_s": round(after[1] - before[1], 2)})
        med = {name: statistics.median(values) for name, values in mbits.items()}
        return {"rounds": rounds, "seconds": seconds, "mbit_s": {k: [round(x) for x in v] for k, v in mbits.items()},
                "median_mbit_s": {k: round(v) for k, v in med.items()},
                "agent_over_hand": round(med["agent"] / max(med["hand"], 1e-9), 3),
                "agent_over_hand_with_forward_rules":
                    round(med["agent"] / max(med["hand_with_forward_rules"], 1e-9), 3),
                "cpu_per_round": cpu, "load_average_at_end": os.getloadavg()}
    finally:
        hand_wireguard.cleanup(hand_lab)
        hand_lab.down()
        agent_lab.down()
        shutil.rmtree(root, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--peers", type=int, default=1000)
    parser.add_argument("--seconds", type=int, default=3, choices=range(1, 6))
    parser.add_argument("--lab-rounds", type=int, default=0, help="run only (c), with this many rounds (at most 20)")
    args = parser.parse_args()
    if args.lab_rounds:
        print(json.dumps(lab_throughput(max(1, min(args.lab_rounds, 20)), args.seconds), indent=2))
        return
    print(json.dumps(trio.run(run, args), indent=2))


if __name__ == "__main__":
    main()
