"""overlay-core: a Flannel-compatible overlay network agent with pluggable backends.

The backend author's API is what this package exports, plus the public modules listed in
``PUBLIC_MODULES`` (pinned by ``core/tests/test_exports.py``); everything else is internal.
"""

from ._version import __version__
from .backend import Backend, Capabilities, ExternalInterface, LeaseRequest, Node, PeerStatus
from .config import NetworkConfig, parse_config
from .errors import (
    BackendNotFoundError,
    ConfigError,
    InterfaceError,
    KernelFeatureMissingError,
    OverlayError,
    StoreError,
    SubnetsExhaustedError,
)
from .kernel_backend import KernelBackend, PeerPlan, ReconcilingBackend, direct_plan
from .lease import Lease, LeaseAttrs, lease_from_kv, make_subnet_key
from .plugins import hookimpl

#: Modules a plugin may import besides ``overlay_core`` itself.
PUBLIC_MODULES = (
    "overlay_core.dataplane", "overlay_core.errors", "overlay_core.hookspecs",
    "overlay_core.metrics", "overlay_core.options", "overlay_core.reconcile", "overlay_core.retry",
    "overlay_core.services", "overlay_core.subnetfile", "overlay_core.testing",
)

__all__ = [
    "Backend",
    "BackendNotFoundError",
    "Capabilities",
    "ConfigError",
    "ExternalInterface",
    "InterfaceError",
    "KernelBackend",
    "KernelFeatureMissingError",
    "Lease",
    "LeaseAttrs",
    "LeaseRequest",
    "NetworkConfig",
    "Node",
    "OverlayError",
    "PUBLIC_MODULES",
    "PeerPlan",
    "PeerStatus",
    "ReconcilingBackend",
    "StoreError",
    "SubnetsExhaustedError",
    "__version__",
    "direct_plan",
    "hookimpl",
    "lease_from_kv",
    "make_subnet_key",
    "parse_config",
]
