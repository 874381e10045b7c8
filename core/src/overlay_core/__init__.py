"""overlay-core: a Flannel-compatible overlay network agent with pluggable backends."""

from ._version import __version__
from .backend import Backend, ExternalInterface, LeaseRequest, Node
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
from .kernel_backend import KernelBackend, PeerPlan
from .lease import Lease, LeaseAttrs
from .plugins import hookimpl

__all__ = [
    "Backend",
    "BackendNotFoundError",
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
    "PeerPlan",
    "StoreError",
    "SubnetsExhaustedError",
    "__version__",
    "hookimpl",
    "parse_config",
]
