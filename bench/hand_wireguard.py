"""The hand-configured WireGuard baseline of ``bench/dataplane.py --backends wireguard``.

What Flannel's wireguard backend leaves on a node, built with the tools alone (as in
reference/probes/wg_e2e.sh): one ``wireguard-go -f flannel-wg`` per node, configured with
``wg set`` (private key file, port 51820, one peer per other node with its subnet as allowed IPs
and its underlay address as endpoint), the subnet base /32 on the device, MTU 1420, and
``10.5.0.0/16 dev flannel-wg``. Each wireguard-go gets its own socket directory (bind-mounted on
``/var/run/wireguard`` in a private mount namespace, ``WireguardGo``), so the two nodes of the
lab do not share ``flannel-wg.sock``; ``wg`` runs inside that mount namespace through ``nsenter``.
"""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

import trio
from overlay_core.testing.netns import ip
from overlay_wireguard.keys import KeyPair
from overlay_wireguard.userspace import WireguardGo

PORT = 51820
MTU = 1420
DEVICE = "flannel-wg"
_PROCS: dict[str, list[subprocess.Popen]] = {}  # lab name -> the wireguard-go processes started


def _start(lab, node) -> subprocess.Popen:
    inst = WireguardGo(DEVICE, Path(lab.node_dir(node)) / "hand-wireguard")
    inst.prepare()
    with open(os.path.join(lab.node_dir(node), "hand-wireguard-go.log"), "ab") as log:
        proc = subprocess.Popen(["ip", "netns", "exec", node.ns, *inst.argv()], stdin=subprocess.DEVNULL,
                                stdout=log, stderr=log, env={**os.environ, **inst.env}, start_new_session=True)
    _PROCS.setdefault(lab.name, []).append(proc)
    deadline = time.monotonic() + 20
    while not trio.run(inst.ready):
        if proc.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"wireguard-go on {node.name} did not come up (see hand-wireguard-go.log)")
        time.sleep(0.05)
    return proc


def _wg(proc: subprocess.Popen, *args: str) -> None:
    subprocess.run(["nsenter", "--target", str(proc.pid), "--mount", "--net", "wg", *args], check=True,
                   capture_output=True, timeout=30)


def by_hand(lab) -> None:
    nodes = lab.state.nodes
    keys = [KeyPair.generate() for _ in nodes]
    for i, (node, pair) in enumerate(zip(nodes, keys), start=1):
        proc = _start(lab, node)
        keyfile = os.path.join(lab.node_dir(node), "hand-wgkey")
        fd = os.open(keyfile, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.write(pair.private_b64())
        peers: list[str] = []
        for j, (peer, peer_keys) in enumerate(zip(nodes, keys), start=1):
            if peer is not node:
                peers += ["peer", peer_keys.public, "allowed-ips", f"10.5.{j}.0/24", "endpoint", f"{peer.ip}:{PORT}"]
        _wg(proc, "set", DEVICE, "private-key", keyfile, "listen-port", str(PORT), *peers)
        ip("addr", "add", f"10.5.{i}.0/32", "dev", DEVICE, ns=node.ns)
        ip("link", "set", DEVICE, "mtu", str(MTU), "up", ns=node.ns)
        ip("route", "add", "10.5.0.0/16", "dev", DEVICE, ns=node.ns)
        with open(node.subnet_file, "w") as fh:
            fh.write(f"FLANNEL_NETWORK=10.5.0.0/16\nFLANNEL_SUBNET=10.5.{i}.1/24\nFLANNEL_MTU={MTU}\n"
                     "FLANNEL_IPMASQ=false\n")
    deadline = time.monotonic() + 20  # the first handshake, before anything is measured
    while subprocess.run(["ip", "netns", "exec", nodes[0].ns, "ping", "-c", "1", "-W", "1", "10.5.2.0"],
                         capture_output=True).returncode != 0:
        if time.monotonic() > deadline:
            raise RuntimeError("the hand-made tunnel does not carry a ping")


def cleanup(lab) -> None:
    for proc in _PROCS.pop(lab.name, []):
        if proc.poll() is None:
            proc.kill()
        proc.wait(timeout=10)
