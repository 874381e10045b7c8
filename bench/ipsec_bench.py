"""IPsec backend benchmark: time from N peer leases appearing to all N CHILD_SAs established, bounded.

``agent`` (the figure of issue 14): one real agent (ipsec backend, its supervised charon,
kernel-libipsec) in a lab namespace with a real etcd; N responder charons, one per namespace on
the same underlay, each loaded with a connection back to the agent that waits for IKE (start
action ``none``, so only the agent initiates). The N leases are written to etcd in one
transaction; the clock runs from just before that write until the agent's charon lists N
established IKE_SAs with an installed CHILD_SA (polled over its VICI socket every 50 ms), and
also until the agent's ``/readyz`` reports the N peers ``established`` (the agent refreshes SA
state every few seconds, so this one is coarser).

``direct``: N + 1 charons driven from this process as the agent configures them (our
strongswan.conf, argv and VICI client, kernel-libipsec), no etcd and no agent: the lower bound.

Throughput against charon configured by hand is measured by ``bench/dataplane.py --backends
ipsec`` (baseline in ``bench/hand_ipsec.py``).

Prints JSON. Run as root: ``sudo .venv/bin/python bench/ipsec_bench.py [--peers 20] [--only agent]``.
Namespaces ``ipg-<tag>-*`` (direct), ``ovl-ovwb<tag>-*`` and ``ovw-<tag>-r<i>`` (agent); every
namespace and process is removed at the end, also on failure.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import tempfile
import time
import uuid
from ipaddress import IPv4Address, IPv4Network
from pathlib import Path

import trio
from overlay_core import Lease, LeaseAttrs, parse_config
from overlay_core.testing.netns import add_namespace, connect, delete_namespace, ip, nsexec
from overlay_ipsec import parse_options
from overlay_ipsec.calc import LIBIPSEC, ConnSpec, SharedKey, desired_state
from overlay_ipsec.charon import CharonPaths
from overlay_ipsec.status import peer_status
from overlay_ipsec.testing import LAB_NETWORK, IpsecLab, LabAgent, LabNode
from overlay_ipsec.vici_client import ViciClient
from overlay_lab.lab import PREFIX, Lab

PSK = "bench-psk-" + "0123456789abcdef" * 6
OPTIONS = parse_options(parse_config('{"Network":"10.0.0.0/8","Backend":{"Type":"ipsec","PSK":"%s"}}' % PSK))
# the agent's subnet comes from 10.200/16; responder i is 192.0.2.(150+i) with 10.1.(150+i).0/24
AGENT_SUBNETS = {"SubnetMin": "10.200.0.0", "SubnetMax": "10.200.255.0"}
RESPONDER_BASE = 150
POLL = 0.05


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


def responder_conn(conn: ConnSpec) -> dict:
    """The connection a responder loads: the agent's own message for the reverse direction, but
    waiting for IKE (no start, no restart on close or DPD), so every SA is initiated by the agent."""
    message = conn.to_vici()
    child = message[conn.name]["children"][conn.child]
    child.update(start_action="none", close_action="none", dpd_action="clear")
    return message


def lease_txn(leases: dict[str, str]) -> str:
    """``etcdctl txn`` input: no compare, one put per lease, no else branch (JSON string quoting
    is Go's for these ASCII values)."""
    puts = "".join(f"put {json.dumps(key)} {json.dumps(value)}\n" for key, value in leases.items())
    return "\n" + puts + "\n\n"


def add_responder(lab: Lab, node: LabNode, port: str) -> None:
    """A responder namespace on the lab's underlay switch, 192.0.2.(150+i), with an address in its
    subnet (kernel-libipsec's route to the agent's subnet needs one as its source)."""
    add_namespace(node.ns)
    connect(node.ns, "eth0", lab.switch, port)
    ip("link", "set", port, "master", "br0", ns=lab.switch)
    ip("addr", "add", f"{node.public_ip}/24", "dev", "eth0", ns=node.ns)
    ip("addr", "add", f"{node.pod_ip}/32", "dev", "lo", ns=node.ns)


async def agent_setup_time(base: Path, peers: int, timeout: float) -> dict:
    tag = uuid.uuid4().hex[:4]
    lab = Lab(f"ovwb{tag}", state_root=str(base / "lab"))
    charons = IpsecLab(base / "r", prefix="ovw", tag=tag)
    responders = [LabNode(RESPONDER_BASE + i, f"ovw-{tag}-r{i}", CharonPaths.under(base / f"r{i}"))
                  for i in range(1, peers + 1)]
    client: ViciClient | None = None
    try:
        await trio.to_thread.run_sync(lambda: lab.up(
            nodes=1, backend="ipsec", network=str(LAB_NETWORK), extra_config=AGENT_SUBNETS,
            backend_options={"PSK": PSK}, wait=120))
        node = lab.node(1)
        own = json.loads(lab.etcdctl("get", "--prefix", f"{PREFIX}/subnets/", "--print-value-only").strip())
        agent_lease = Lease(IPv4Network(lab.readyz(node)[1]["subnet"]), None,
                            LeaseAttrs(IPv4Address(node.ip), backend_type="ipsec"))
        for i, responder in enumerate(responders, start=1):
            charons.nodes.append(responder)
            await trio.to_thread.run_sync(add_responder, lab, responder, f"r{i}")
            await trio.to_thread.run_sync(charons.start_charon, responder)
            loader = ViciClient(responder.paths.vici)
            try:
                for obj in desired_state(responder.lease(), [agent_lease], OPTIONS, LIBIPSEC, LAB_NETWORK).objects:
                    if isinstance(obj, SharedKey):
                        await loader.load_shared(obj)
                    elif isinstance(obj, ConnSpec):
                        await loader.load_conn(responder_conn(obj))
            finally:
                await loader.aclose()
        wanted = [o for o in desired_state(agent_lease, [r.lease() for r in responders], OPTIONS, LIBIPSEC,
                                           LAB_NETWORK).objects if isinstance(o, ConnSpec)]
        client = ViciClient(Path(lab.node_dir(node)) / "state" / "ipsec" / "charon.vici")
        values = {f"{PREFIX}/subnets/{r.subnet.network_address}-{r.subnet.prefixlen}":
                  json.dumps({**own, "PublicIP": str(r.public_ip)}) for r in responders}
        txn = lease_txn(values)
        t0 = time.monotonic()
        etcdctl = ("env", "ETCDCTL_API=3", "etcdctl", f"--endpoints={lab.etcd_endpoints}", "txn")
        done = await trio.to_thread.run_sync(lambda: nsexec(lab.etcd_ns, *etcdctl, input=txn))
        written = time.monotonic() - t0
        if done.stdout.count("OK") != peers:
            raise RuntimeError(f"etcd txn did not write {peers} leases: {done.stdout[-300:]}")
        with trio.fail_after(timeout):
            while True:
                sas = await client.list_sas()
                up = sum(peer_status(sas, c.name, c.child).state == "established" for c in wanted)
                if up == len(wanted):
                    break
                await trio.sleep(POLL)
            established = time.monotonic() - t0
            while (await trio.to_thread.run_sync(lab.readyz, node))[1].get("ipsec", {}).get("sas") != {
                    "established": peers}:
                await trio.sleep(POLL)
            readyz = time.monotonic() - t0
        ike = len([i for i in await client.list_sas() if i.state == "ESTABLISHED"])
        return {"peers": peers, "etcd_txn_s": round(written, 3), "all_child_sas_established_s": round(established, 2),
                "readyz_all_established_s": round(readyz, 2), "agent_ike_sas": ike}
    finally:
        if client is not None:
            await client.aclose()
        for responder in responders:
            charons.kill_charon(responder)
            delete_namespace(responder.ns)
        lab.down()


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--peers", type=int, default=20)
    parser.add_argument("--timeout", type=float, default=120)
    parser.add_argument("--only", choices=("agent", "direct"), help="run one of the two measurements")
    args = parser.parse_args()
    if os.geteuid() != 0:
        raise SystemExit("run as root (network namespaces)")
    peers = max(1, min(args.peers, 50))
    out = {}
    with tempfile.TemporaryDirectory(prefix="ipg-bench-") as tmp:
        if args.only != "direct":
            out["agent"] = await agent_setup_time(Path(tmp) / "agent", peers, args.timeout)
        if args.only != "agent":
            out["direct"] = await setup_time(Path(tmp) / "direct", peers, args.timeout)
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    trio.run(main)
