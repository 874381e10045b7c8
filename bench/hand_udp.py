"""The udp baseline for bench/dataplane.py: the forwarder run by hand, no agent.

``by_hand(lab)`` starts ``python -m overlay_udp.forwarder`` in each node of a two-node lab whose
agents were not started, with the other node's subnet as a ``--route`` (what the agent would send
over the control socket), and writes the subnet file as Flannel would (MTU = 1500 - 28). So
"agent" vs "by hand" isolates what the agent adds to the data path: nothing, it only feeds routes.

    sudo .venv/bin/python bench/dataplane.py --backends vxlan,udp
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

from overlay_udp import control

MTU = 1472
NETWORK = "10.5.0.0/16"
_started: list[subprocess.Popen] = []


def _control(lab, node) -> str:
    return os.path.join(lab.node_dir(node), "hand-udp.sock")


def by_hand(lab) -> None:
    nodes = lab.state.nodes
    for i, node in enumerate(nodes, start=1):
        argv = [sys.executable, "-m", "overlay_udp.forwarder", "--control", _control(lab, node), "--network", NETWORK,
                "--subnet", f"10.5.{i}.0/24", "--mtu", str(MTU), "--bind", node.ip]
        for j, peer in enumerate(nodes, start=1):
            if peer is not node:
                argv += ["--route", f"10.5.{j}.0/24={peer.ip}"]
        with open(os.path.join(lab.node_dir(node), "hand-udp.log"), "ab") as log:
            _started.append(subprocess.Popen(["ip", "netns", "exec", node.ns, *argv], stdout=log,
                                             stderr=subprocess.STDOUT, start_new_session=True))
        with open(node.subnet_file, "w") as fh:
            fh.write(f"FLANNEL_NETWORK={NETWORK}\nFLANNEL_SUBNET=10.5.{i}.1/24\nFLANNEL_MTU={MTU}\nFLANNEL_IPMASQ=false\n")
    for node in nodes:
        deadline = time.monotonic() + 30
        while True:
            try:
                reply = control.call(_control(lab, node), "ping", timeout=2.0)
                print(f"hand udp forwarder on {node.name}: {reply['path']} path")
                break
            except (control.ControlError, OSError):
                if time.monotonic() > deadline:
                    log = os.path.join(lab.node_dir(node), "hand-udp.log")
                    raise RuntimeError(f"hand forwarder on {node.name} not ready; see {log}") from None
                time.sleep(0.1)


def cleanup(lab) -> None:
    for proc in _started:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)
    _started.clear()
