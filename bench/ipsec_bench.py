"""IPsec backend benchmark: time from N peer connections appearing on one node to all N CHILD_SAs
established (N + 1 charons, one per namespace, each configured as the agent configures it:
our strongswan.conf, argv and VICI client, kernel-libipsec), bounded. Throughput against charon
configured by hand is measured by ``bench/dataplane.py --backends ipsec`` (baseline in
``bench/hand_ipsec.py``).

Prints JSON. Run as root: ``sudo .venv/bin/python bench/ipsec_bench.py [--peers 20]``.
Namespaces ``ipg-<tag>-*``; every namespace and charon is removed at the end, also on failure.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import tempfile
import time
from pathlib import Path

import trio
from overlay_core import parse_config
from overlay_ipsec import parse_options
from overlay_ipsec.testing import IpsecLab, LabAgent

PSK = "bench-psk-" + "0123456789abcdef" * 6
OPTIONS = parse_options(parse_config('{"Network":"10.0.0.0/8","Backend":{"Type":"ipsec","PSK":"%s"}}' % PSK))


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
    parser.add_argument("--peers", type=int, default=20)
    parser.add_argument("--timeout", type=float, default=120)
    args = parser.parse_args()
    if os.geteuid() != 0:
        raise SystemExit("run as root (network namespaces)")
    with tempfile.TemporaryDirectory(prefix="ipg-bench-") as tmp:
        out = {"setup": await setup_time(Path(tmp), max(1, min(args.peers, 50)), args.timeout)}
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    trio.run(main)
