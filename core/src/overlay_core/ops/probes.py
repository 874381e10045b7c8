"""Facts about this node that ``doctor`` and ``cleanup`` read: sysctls, agents running in this
network namespace, and kernel features probed for real.

Kernel features are probed by doing what the backend would do (create a device, install an ESP
state) inside an anonymous network namespace (``unshare --net``) that vanishes with the probe
process: ``/sys/module`` does not list built-in drivers, and a loadable module only counts once
the kernel actually makes the device. Nothing is created in the node's own namespace.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass

PROBE_TIMEOUT = 15.0
TUN_PATH = "/dev/net/tun"

# a command run in an anonymous network namespace; it succeeds only when the kernel can do it
FEATURE_PROBES: dict[str, list[str]] = {
    "vxlan": ["ip", "link", "add", "probe0", "type", "vxlan", "id", "1", "dstport", "4789"],
    "ipip": ["ip", "link", "add", "probe0", "type", "ipip", "local", "192.0.2.1", "remote", "192.0.2.2"],
    "wireguard": ["ip", "link", "add", "probe0", "type", "wireguard"],
    "esp": ["ip", "xfrm", "state", "add", "src", "192.0.2.1", "dst", "192.0.2.2", "proto", "esp", "spi", "0x100",
            "mode", "tunnel", "aead", "rfc4106(gcm(aes))", "0x" + "11" * 20, "128"],
    "tun": ["ip", "tuntap", "add", "dev", "probe0", "mode", "tun"],
}
FEATURE_HELP = {
    "vxlan": "load the vxlan module (modprobe vxlan) or choose another backend",
    "ipip": "load the ipip module (modprobe ipip) or choose another backend",
    "wireguard": "load the wireguard module (modprobe wireguard); without it the backend needs TUN for wireguard-go",
    "esp": "load esp4/esp6 and xfrm_user (modprobe esp4 xfrm_user) or rely on charon's TUN (kernel-libipsec)",
    "tun": f"{TUN_PATH} must exist (mknod {TUN_PATH} c 10 200; modprobe tun); in a container, pass the device in",
}


def probe_feature(feature: str) -> tuple[bool, str]:
    """``(works, why not)`` for one of ``backend.KERNEL_FEATURES``."""
    if feature == "tun" and not os.path.exists(TUN_PATH):
        return False, f"{TUN_PATH} does not exist"
    try:
        proc = subprocess.run(["unshare", "--net", *FEATURE_PROBES[feature]], capture_output=True, text=True,
                              timeout=PROBE_TIMEOUT)
    except FileNotFoundError as exc:
        return False, f"cannot probe: {exc.filename} is missing"
    except subprocess.TimeoutExpired:
        return False, "the probe did not finish"
    if proc.returncode != 0:
        return False, (proc.stderr.strip().splitlines() or ["the kernel refused"])[-1]
    return True, ""


def read_sysctl(name: str, root: str = "/proc/sys") -> str | None:
    """``net.ipv4.ip_forward`` → its value, None when absent (no such device, no IPv6)."""
    try:
        with open(os.path.join(root, *name.split("."))) as fh:
            return fh.read().strip()
    except OSError:
        return None


def effective_rp_filter(all_value: str | None, dev_value: str | None) -> int | None:
    """The kernel uses the larger of ``conf.all.rp_filter`` and the device's (ip-sysctl.rst)."""
    values = [int(v) for v in (all_value, dev_value) if v is not None and v.isdigit()]
    return max(values) if values else None


@dataclass(frozen=True)
class AgentProcess:
    pid: int
    program: str  # "overlay-core run" or "flanneld"


def classify(argv: list[str]) -> str | None:
    """What agent ``argv`` runs: ``overlay-core run`` (also ``python -m overlay_core run``), ``flanneld``, or None."""
    if not argv:
        return None
    if os.path.basename(argv[0]) == "flanneld":
        return "flanneld"
    words = [os.path.basename(a) for a in argv[:4]]
    runs_overlay = "overlay-core" in words or ("-m" in argv[:3] and "overlay_core" in argv[:4])
    if runs_overlay and "run" in argv:
        return "overlay-core run"
    if runs_overlay and not any(verb in argv for verb in ("status", "doctor", "cleanup", "backends", "config", "lab")):
        return "overlay-core run"  # flanneld-style flags alone run the agent
    return None


def _processes() -> Iterator[tuple[int, list[str]]]:
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as fh:
                raw = fh.read()
        except OSError:
            continue
        yield int(entry), [p.decode(errors="replace") for p in raw.split(b"\0")[:-1]]


def agents_here() -> list[AgentProcess]:
    """Agents (ours or Flannel) running in this process' network namespace, itself excluded."""
    try:
        here = os.readlink("/proc/self/ns/net")
    except OSError:
        return []
    found = []
    for pid, argv in _processes():
        program = classify(argv)
        if program is None or pid == os.getpid():
            continue
        try:
            if os.readlink(f"/proc/{pid}/ns/net") != here:
                continue
        except OSError:
            continue
        found.append(AgentProcess(pid, program))
    return found
