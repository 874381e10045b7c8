"""Lab extras for ``overlay-core lab up --backend ipsec`` (entry point ``ipsec`` of ``overlay.lab``).

The lab's network config needs a PSK: each lab gets a fresh random one that nothing prints. The
lab keeps its config (PSK included) in its state file, so the lab directory is made 0700 first:
only root can read anything under it. An IPv6 lab is refused up front (ipsec is IPv4 only).
"""

from __future__ import annotations

import os
import secrets

PSK_BYTES = 96  # token_urlsafe: 128 characters, above Flannel's minimum of 96


def backend_options(lab) -> dict:
    """``{"PSK": <random>}``; the lab directory, where the config is saved, becomes root-only."""
    os.makedirs(lab.dir, exist_ok=True)
    os.chmod(lab.dir, 0o700)
    return {"PSK": secrets.token_urlsafe(PSK_BYTES)}


def check(lab, nodes: int, remote_nodes: int, ipv6: str) -> str | None:
    if ipv6:
        return "ipsec carries IPv4 only (as Flannel); drop --ipv6 or use --backend wireguard"
    return None
