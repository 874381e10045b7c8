"""overlay-ipsec: the internals of the Flannel-compatible ipsec backend (strongSwan charon over VICI).

Modules: :mod:`options` (Backend options), :mod:`calc` (desired objects, pure), :mod:`charon`
(config, argv, ready probe, kernel mode), :mod:`vici_client` (VICI on a dedicated thread),
:mod:`target` (reconcile targets), :mod:`status` (per-peer SA state). The ``Backend`` glue and
the ``overlay.backends`` entry point come with core's backend runtime.
"""

from .calc import KERNEL, LIBIPSEC, desired_state, plan_peer
from .options import IpsecOptions, parse_options
from .secret import Secret

__all__ = ["KERNEL", "LIBIPSEC", "IpsecOptions", "Secret", "desired_state", "parse_options", "plan_peer"]
