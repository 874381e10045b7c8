"""What a backend is, and what the agent hands it.

A backend is a class registered in the entry point group ``overlay.backends`` under its
``Backend.Type`` name. The agent loads only the configured one, instantiates it with the
``Node`` and registers the instance as a pluggy plugin, so its ``@hookimpl`` methods receive
the events in ``overlay_core.hookspecs``.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network
from typing import TYPE_CHECKING, Any, ClassVar

from .config import DEFAULTED_BACKEND_WARNING
from .errors import ConfigError, did_you_mean

if TYPE_CHECKING:
    from .config import NetworkConfig
    from .dataplane.netlink import Netlink
    from .lease import Lease
    from .services import Services

LOGGER = logging.getLogger("overlay.backend")


@dataclass(frozen=True)
class ExternalInterface:
    """The interface peers reach this node on, and the addresses it advertises."""

    name: str
    index: int
    mtu: int
    address: IPv4Address | None = None
    address_v6: IPv6Address | None = None
    public_ip: IPv4Address | None = None
    public_ipv6: IPv6Address | None = None
    networks: tuple[IPv4Network | IPv6Network, ...] = ()

    def onlink(self, ip: IPv4Address | IPv6Address | None) -> bool:
        """True when ``ip`` is inside a subnet configured on this interface (same L2 segment)."""
        return ip is not None and any(ip.version == n.version and ip in n for n in self.networks)


@dataclass(frozen=True)
class LeaseRequest:
    """What a backend wants advertised in the lease, and the MTU pods should use."""

    backend_type: str
    mtu: int
    backend_data: Any = None
    backend_v6_data: Any = None


@dataclass(frozen=True)
class PeerStatus:
    """One peer as a backend sees it: ``state`` in one word, and the backend's own columns
    (JSON-safe values; numbers are exported as per-peer gauges)."""

    state: str
    detail: dict[str, Any] = field(default_factory=dict)


#: Kernel features a backend can need; ``overlay-core doctor`` checks them and the conformance kit
#: skips (with the reason) what the running kernel lacks.
KERNEL_FEATURES = ("vxlan", "ipip", "wireguard", "esp", "tun")


@dataclass(frozen=True)
class Capabilities:
    """What a backend can do and needs, declared on its class for tools (``doctor``, the
    conformance kit) that must adapt to it without running it.

    ``kernel_features``: features from ``KERNEL_FEATURES`` the data plane cannot run without
    (``kernel_features_any``: at least one of these, e.g. WireGuard's module or TUN for
    wireguard-go). ``moves_packets`` is False for a backend that only allocates subnets.
    ``survives_restart`` is False for a data path that stops with the agent; ``restart_note``
    then says why (the kit reports it as the documented exemption).
    ``udp_port``: the UDP port peers send this node's traffic to (0: none, or not declared) and
    ``udp_port_key`` the ``Backend`` key that overrides it ("" when fixed); ``doctor`` looks for
    local firewall drops of that port.
    """

    ipv6: bool = False
    encrypted: bool = False
    userspace_datapath: bool = False
    moves_packets: bool = True
    kernel_features: tuple[str, ...] = ()
    kernel_features_any: tuple[str, ...] = ()
    survives_restart: bool = True
    restart_note: str = ""
    udp_port: int = 0
    udp_port_key: str = ""

    def __post_init__(self) -> None:
        unknown = set(self.kernel_features + self.kernel_features_any) - set(KERNEL_FEATURES)
        if unknown:
            raise ValueError(f"unknown kernel features {sorted(unknown)}; known: {', '.join(KERNEL_FEATURES)}")


@dataclass
class Node:
    """This node as the hooks see it. ``lease`` is None until the lease is acquired."""

    config: NetworkConfig
    iface: ExternalInterface
    netlink: Netlink
    lease: Lease | None = None
    mtu: int = 0
    metrics: Any = None
    owned_links: set[int] = field(default_factory=set)  # devices whose changes trigger a reconcile


class Backend:
    """Base class for backends: set ``type`` and implement hooks as ``@hookimpl`` methods.

    ``type`` is the ``Backend.Type`` string users write (lower case). Leases whose
    ``BackendType`` differs from ``lease_type`` (default: ``type``) are not delivered.
    The agent constructs it as ``cls(node, services)``; ``services`` (``overlay_core.services.
    Services``) is None only in unit tests that need none.
    """

    type: ClassVar[str] = ""
    lease_type: ClassVar[str | None] = None
    #: The ``Backend`` keys this backend understands besides ``Type`` (any case). The agent and
    #: ``config check`` refuse other keys with a suggestion. None: not declared, keys unchecked.
    option_names: ClassVar[tuple[str, ...] | None] = None
    #: What tools may assume about this backend (see ``Capabilities``).
    capabilities: ClassVar[Capabilities] = Capabilities()

    def __init__(self, node: Node, services: Services | None = None) -> None:
        self.node = node
        self.services = services
        self.options = check_backend_config(type(self), node.config)

    @classmethod
    def parse_options(cls, config: NetworkConfig) -> Any:
        """Check the ``Backend`` options of ``config``; raise ``ConfigError`` when invalid.

        Called offline by ``overlay-core config check`` and at startup before any hook.
        Returns the backend's parsed options (stored as ``self.options``), or None.
        """
        return None

    @classmethod
    def advertised_type(cls) -> str:
        return cls.type if cls.lease_type is None else cls.lease_type

    def accepts(self, lease: Lease) -> bool:
        """Whether a peer lease belongs to this backend's network."""
        return lease.attrs.backend_type == self.advertised_type()


def check_option_names(cls: type[Backend], config: NetworkConfig) -> None:
    """Refuse a ``Backend`` key that ``cls`` does not declare (``Type`` is always allowed)."""
    if cls.option_names is None:
        return
    known = ("Type", *cls.option_names)
    allowed = {name.lower() for name in known}
    for key in config.backend_keys:
        if key.lower() not in allowed:
            raise ConfigError(
                f"{cls.type}: unknown Backend key {key!r}{did_you_mean(key, known)}; "
                f"{cls.type} knows: {', '.join(cls.option_names) or 'no options'}"
            )


def check_backend_config(cls: type[Backend], config: NetworkConfig) -> Any:
    """Everything known about ``Backend`` before the node touches the store: a warning when the
    config names no backend, the key names, then the backend's own option checks. Used by the
    agent at start and by ``overlay-core config check``; returns the parsed options."""
    if config.backend_defaulted:
        LOGGER.warning(DEFAULTED_BACKEND_WARNING)
    check_option_names(cls, config)
    return cls.parse_options(config)
