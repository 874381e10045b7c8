"""What ``overlay-core run`` takes: Flannel's flags (and a few of ours), validated."""

from __future__ import annotations

from dataclasses import dataclass, field

from .errors import ConfigError
from .etcd import EtcdOptions
from .iface import IfaceOptions
from .subnets import LEASE_TTL


@dataclass
class AgentOptions:
    """Everything ``overlay-core run`` takes (Flannel's flags)."""

    etcd: EtcdOptions = field(default_factory=EtcdOptions)
    prefix: str = "/coreos.com/network"
    iface: IfaceOptions = field(default_factory=IfaceOptions)
    subnet_file: str = "/run/flannel/subnet.env"
    renew_margin: int = 60
    ip_masq: bool = False
    masq_fully_random: bool = True
    forward_rules: bool = True
    blackhole_route: bool = False
    healthz_ip: str = "0.0.0.0"
    healthz_port: int = 0
    firewall_resync: float = 5.0
    reconcile_interval: float = 30.0
    lease_ttl: int = LEASE_TTL
    state_dir: str = "/run/overlay"

    def validate(self) -> None:
        if not 1 <= self.renew_margin <= 1439:
            raise ConfigError(
                f"--subnet-lease-renew-margin {self.renew_margin} is out of range: use 1 to 1439 minutes"
            )
        if self.renew_margin * 60 >= self.lease_ttl:
            raise ConfigError("--subnet-lease-renew-margin must be shorter than the lease TTL")
        if not 0 <= self.healthz_port <= 65535:
            raise ConfigError(f"--healthz-port {self.healthz_port} is not a TCP port")
        for name in ("firewall_resync", "reconcile_interval"):
            if getattr(self, name) <= 0:
                raise ConfigError(f"--{name.replace('_', '-')} must be positive")
