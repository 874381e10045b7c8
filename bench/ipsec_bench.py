"""IPsec backend benchmark (draft; the lead re-runs it for the recorded figures).

1. Pod-to-pod TCP throughput (iperf3, one stream, bounded) between two namespaces over a tunnel
   configured by overlay-ipsec (our strongswan.conf, argv and VICI client, kernel-libipsec) against
   charon configured by hand with the dependency probe's config (probes/ipsec: swanctl --load-all,
   swanctl --initiate) between the same namespaces in the same run, alternating rounds.
2. Setup time: N peer connections appear on one node (load via converge) until all N CHILD_SAs
   are established (N + 1 charons, one per namespace), bounded.

Prints JSON. Run as root: ``sudo .venv/bin/python bench/ipsec_bench.py [--rounds 2] [--secs 4] [--peers 20]``.
Namespaces ``ipt-<tag>-*``; every namespace and charon is removed at the end, also on failure.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

import trio
from overlay_core import parse_config
from overlay_ipsec import parse_options
from overlay_ipsec.charon import find_charon, vici_answers
from overlay_ipsec.testing import IpsecLab, LabAgent, LabNode, run, until_established

PSK = "bench-psk-" + "0123456789abcdef" * 6
OPTIONS = parse_options(parse_config('{"Network":"10.0.0.0/8","Backend":{"Type":"ipsec","PSK":"%s"}}' % PSK))

# The probe's hand-written setup (probes/ipsec/a-strongswan.conf, a-swanctl.conf), per node.
HAND_CONF = """charon {{
    load_modular = yes
    install_routes = yes
    plugins {{
        include /etc/strongswan.d/charon/*.conf
        kernel-libipsec {{
            load = 1000
        }}
        vici {{
            socket = unix://{dir}/charon.vici
        }}
    }}
    filelog {{
        hand {{
            path = {dir}/charon.log
            default = 1
        }}
    }}
}}
"""
HAND_SWANCTL = """connections {{
    flannel {{
        version = 2
        local_addrs = {me}
        remote_addrs = {peer}
        encap = yes
        proposals = aes128-sha256-modp2048
        local {{
            auth = psk
            id = {me}
        }}
        remote {{
            auth = psk
            id = {peer}
        }}
        children {{
            pods {{
                local_ts = {lts}
                remote_ts = {rts}
                esp_proposals = aes128gcm16
            }}
        }}
    }}
}}
secrets {{
    ike-flannel {{
        id-1 = {me}
        id-2 = {peer}
        secret = "probe-psk-not-secret-0123456789"
    }}
}}
"""


def start_hand(base: Path, node: LabNode, peer: LabNode) -> int:
    """charon started as the probe does (tmpfs over /run in `ip netns exec`'s mount namespace)."""
    d = base / f"hand-{node.index}"
    d.mkdir(mode=0o700, parents=True, exist_ok=True)
    (d / "strongswan.conf").write_text(HAND_CONF.format(dir=d))
    (d / "swanctl.conf").write_text(HAND_SWANCTL.format(me=node.public_ip, peer=peer.public_ip, lts=node.subnet,
                                                        rts=peer.subnet))
    with open(d / "stdout.log", "ab") as out:
        proc = subprocess.Popen(["ip", "netns", "exec", node.ns, "sh", "-c",
                                 f"mount -t tmpfs tmpfs /run && STRONGSWAN_CONF={d}/strongswan.conf "
                                 f"exec {find_charon()}"], stdout=out, stderr=out, start_new_session=True)
    node.pid = proc.pid
    deadline = time.monotonic() + 20
    while not vici_answers(d / "charon.vici"):
        if proc.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"hand-configured charon in {node.ns} did not start")
        time.sleep(0.2)
    run("swanctl", "--load-all", "--uri", f"unix://{d}/charon.vici", "--file", str(d / "swanctl.conf"), check=False)
    return proc.pid


def iperf(lab: IpsecLab, a: LabNode, b: LabNode, secs: int) -> dict:
    server = subprocess.Popen(["ip", "netns", "exec", b.ns, "iperf3", "-s", "-1", "-B", b.pod_ip],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        time.sleep(0.5)
        done = run("ip", "netns", "exec", a.ns, "timeout", str(secs + 20), "iperf3", "-c", b.pod_ip, "-B", a.pod_ip,
                   "-t", str(secs), "-J", check=False, timeout=secs + 30)
        end = json.loads(done.stdout or "{}").get("end", {})
        return {"gbit_s": round(end.get("sum_received", {}).get("bits_per_second", 0) / 1e9, 3),
                "retransmits": end.get("sum_sent", {}).get("retransmits")}
    finally:
        if server.poll() is None:
            server.kill()
        server.wait()


async def throughput(base: Path, rounds: int, secs: int) -> dict:
    lab = IpsecLab(base / "tp", count=2)
    results: dict[str, list] = {"hand": [], "overlay": []}
    try:
        lab.up()
        a, b = lab.nodes
        for _ in range(rounds):
            for variant in ("hand", "overlay"):
                if variant == "hand":
                    start_hand(base, a, b)
                    start_hand(base, b, a)
                    run("swanctl", "--initiate", "--child", "pods", "--uri",
                        f"unix://{base}/hand-{a.index}/charon.vici", check=False, timeout=30)
                else:
                    for node in (a, b):
                        lab.start_charon(node)
                    agents = [LabAgent(a, [b], OPTIONS), LabAgent(b, [a], OPTIONS)]
                    await until_established(agents, timeout=60)
                    for agent in agents:
                        await agent.client.aclose()
                if not lab.ping(a, b):
                    results[variant].append({"error": "ping failed"})
                else:
                    results[variant].append(await trio.to_thread.run_sync(iperf, lab, a, b, secs))
                for node in (a, b):
                    lab.kill_charon(node)
    finally:
        lab.down()
    med = {v: statistics.median([r.get("gbit_s", 0) for r in rs]) for v, rs in results.items() if rs}
    return {"rounds": results, "median_gbit_s": med,
            "ratio_overlay_vs_hand": round(med["overlay"] / med["hand"], 3) if med.get("hand") else None}


async def setup_time(base: Path, peers: int, timeout: float) -> dict:
    lab = IpsecLab(base / "n", count=peers + 1)
    agents: list[LabAgent] = []
    try:
        lab.up()
        t0 = time.monotonic()
        for node in lab.nodes:
            lab.start_charon(node)
        started = time.monotonic() - t0
        hub, rest = lab.nodes[0], lab.nodes[1:]
        agents = [LabAgent(node, [hub], OPTIONS) for node in rest]
        for agent in agents:  # the peers know the hub already
            await agent.converge()
        hub_agent = LabAgent(hub, rest, OPTIONS)
        agents.append(hub_agent)
        t0 = time.monotonic()
        await hub_agent.converge()  # N peer leases appear: load keys and connections
        loaded = time.monotonic() - t0
        with trio.fail_after(timeout):
            while True:
                states = await hub_agent.states()
                if all(s == "established" for s in states.values()):
                    break
                await trio.sleep(0.2)
        established = time.monotonic() - t0
        ike = len([i for i in await hub_agent.client.list_sas() if i.state == "ESTABLISHED"])
        return {"peers": peers, "charons_start_s": round(started, 2), "converge_load_s": round(loaded, 3),
                "all_child_sas_established_s": round(established, 2), "hub_ike_sas": ike}
    finally:
        for agent in agents:
            await agent.client.aclose()
        lab.down()


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--secs", type=int, default=4)
    parser.add_argument("--peers", type=int, default=20)
    parser.add_argument("--timeout", type=float, default=120)
    args = parser.parse_args()
    if os.geteuid() != 0:
        raise SystemExit("run as root (network namespaces)")
    with tempfile.TemporaryDirectory(prefix="ipt-bench-") as tmp:
        base = Path(tmp)
        out = {"throughput": await throughput(base, max(1, min(args.rounds, 5)), max(3, min(args.secs, 5))),
               "setup": await setup_time(base, max(1, min(args.peers, 50)), args.timeout)}
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    trio.run(main)
