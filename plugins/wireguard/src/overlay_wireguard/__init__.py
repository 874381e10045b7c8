"""overlay-wireguard: Flannel-compatible WireGuard for overlay (kernel device or wireguard-go).

This package holds the backend's internals (options, keys, policy, UAPI client, wireguard-go
launch, kernel netlink messages, the per-device reconcile target); the ``Backend`` glue class
and its ``overlay.backends`` entry point come with core's backend runtime.
"""
