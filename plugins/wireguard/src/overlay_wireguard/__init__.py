"""overlay-wireguard: Flannel-compatible WireGuard for overlay (wireguard-go, adopted across agent
restarts; peers reconciled over its UAPI socket). ``Backend.Type`` ``wireguard``."""

from .backend import WireguardBackend

__all__ = ["WireguardBackend"]
