"""Does this kernel have what a backend's ``Capabilities`` say it needs?

Each feature of ``overlay_core.backend.KERNEL_FEATURES`` is probed by doing it, in a throwaway
namespace (never in the root namespace): creating a device of that kind, a TUN device, an ESP
state. A module that is missing or blocked fails the probe exactly as it would fail the agent.
"""

from __future__ import annotations

import os
import subprocess
from functools import cache

from ..backend import Capabilities
from .netns import add_namespace, delete_namespace

_PROBES: dict[str, list[str]] = {
    "vxlan": ["link", "add", "probe0", "type", "vxlan", "id", "1", "dstport", "4789"],
    "ipip": ["link", "add", "probe0", "type", "ipip"],
    "wireguard": ["link", "add", "probe0", "type", "wireguard"],
    "tun": ["tuntap", "add", "dev", "probe0", "mode", "tun"],
    "esp": ["xfrm", "state", "add", "src", "192.0.2.1", "dst", "192.0.2.2", "proto", "esp", "spi", "0x100",
            "mode", "tunnel", "aead", "rfc4106(gcm(aes))", "0x" + "11" * 20, "128"],
}


@cache
def supported(feature: str) -> bool:
    """Whether ``feature`` (a name from ``KERNEL_FEATURES``) works in this kernel; needs root."""
    ns = f"ovl-kprobe{os.getpid()}"
    add_namespace(ns)
    try:
        probe = subprocess.run(["ip", "-n", ns, *_PROBES[feature]], capture_output=True, timeout=30)
        return probe.returncode == 0
    finally:
        delete_namespace(ns)


def missing(capabilities: Capabilities) -> str | None:
    """Why a backend with ``capabilities`` cannot run here (a sentence naming the features), or None."""
    lacking = [f for f in capabilities.kernel_features if not supported(f)]
    if lacking:
        return f"this kernel lacks {', '.join(lacking)} (probed in a scratch namespace)"
    any_of = capabilities.kernel_features_any
    if any_of and not any(supported(f) for f in any_of):
        return f"this kernel has none of {', '.join(any_of)} (probed in a scratch namespace)"
    return None
