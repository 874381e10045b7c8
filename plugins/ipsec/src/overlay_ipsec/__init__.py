"""overlay-ipsec: the internals of the Flannel-compatible ipsec backend (strongSwan charon over VICI).

Modules: :mod:`options` (Backend options), :mod:`calc` (desired objects, pure), :mod:`charon`
(config, argv, ready probe, kernel mode), :mod:`vici_client` (VICI on a dedicated thread),
:mod:`target` (reconcile targets), :mod:`status` (per-peer SA state), :mod:`backend` (the
``Backend`` class, entry point ``ipsec`` of ``overlay.backends``), :mod:`lab` (lab extras).
"""

from .backend import IpsecBackend
from .calc import KERNEL, LIBIPSEC, desired_state, plan_peer
from .options import IpsecOptions, parse_options

__all__ = ["KERNEL", "LIBIPSEC", "IpsecBackend", "IpsecOptions", "desired_state", "parse_options", "plan_peer"]
