"""The ipsec baseline of ``bench/dataplane.py``: charon configured by hand with the dependency
probe's setup (reference/probes/ipsec: kernel-libipsec, swanctl --load-all, swanctl --initiate)
between the two nodes of a lab whose agents are not started.

Per node: a ``strongswan.conf`` and ``swanctl.conf`` as in the probe (IKEv2, PSK, ESP in UDP,
``aes128gcm16``, traffic selectors = the two pod subnets 10.5.<i>.0/24), charon started in the
node's namespace with a tmpfs over /run, and the subnet's first address on ``ipsec0`` (the
agent does the same: kernel-libipsec installs a CHILD_SA only with a local address inside its
traffic selector, and the pods come after). Pod MTU 1400, ipsec0's.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time

from overlay_core.testing.netns import ip
from overlay_ipsec.charon import find_charon, vici_answers
from overlay_lab.lab import Lab

STRONGSWAN_CONF = """charon {{
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
SWANCTL_CONF = """connections {{
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
MTU = 1400
_PIDS: dict[str, list[int]] = {}


def _dir(lab: Lab, index: int) -> str:
    return os.path.join(lab.dir, f"hand-ipsec-{index}")


def by_hand(lab: Lab) -> None:
    """Start and configure both charons, bring the CHILD_SA up, write the subnet files."""
    nodes = lab.state.nodes
    pids = _PIDS.setdefault(lab.dir, [])
    for i, node in enumerate(nodes, start=1):
        peer_index = 2 if i == 1 else 1
        peer = nodes[peer_index - 1]
        d = _dir(lab, i)
        os.makedirs(d, mode=0o700, exist_ok=True)
        with open(os.path.join(d, "strongswan.conf"), "w") as fh:
            fh.write(STRONGSWAN_CONF.format(dir=d))
        with open(os.path.join(d, "swanctl.conf"), "w") as fh:
            fh.write(SWANCTL_CONF.format(me=node.ip, peer=peer.ip, lts=f"10.5.{i}.0/24", rts=f"10.5.{peer_index}.0/24"))
        with open(os.path.join(d, "stdout.log"), "ab") as out:
            proc = subprocess.Popen(["ip", "netns", "exec", node.ns, "sh", "-c",
                                     f"mount -t tmpfs tmpfs /run && STRONGSWAN_CONF={d}/strongswan.conf "
                                     f"exec {find_charon()}"], stdout=out, stderr=out, start_new_session=True)
        pids.append(proc.pid)
        deadline = time.monotonic() + 20
        while not vici_answers(os.path.join(d, "charon.vici")):
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"hand-configured charon in {node.ns} did not start; see {d}/stdout.log")
            time.sleep(0.2)
        ip("addr", "add", f"10.5.{i}.0/32", "dev", "ipsec0", ns=node.ns)
        subprocess.run(["swanctl", "--load-all", "--uri", f"unix://{d}/charon.vici", "--file",
                        os.path.join(d, "swanctl.conf")], capture_output=True, check=True, timeout=30)
        with open(node.subnet_file, "w") as fh:
            fh.write(f"FLANNEL_NETWORK=10.5.0.0/16\nFLANNEL_SUBNET=10.5.{i}.1/24\nFLANNEL_MTU={MTU}\n"
                     "FLANNEL_IPMASQ=false\n")
    subprocess.run(["swanctl", "--initiate", "--child", "pods", "--uri", f"unix://{_dir(lab, 1)}/charon.vici"],
                   capture_output=True, check=True, timeout=30)


def cleanup(lab: Lab) -> None:
    """Stop the charons started here (by pid; lab down removes their namespaces anyway)."""
    for pid in _PIDS.pop(lab.dir, []):
        try:
            os.kill(pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
