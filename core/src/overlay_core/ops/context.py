"""What ``doctor`` and ``cleanup`` learn about the node before they act: the network config
(from the store when it answers, else the subnet file), the leases, and the recorded devices."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from ipaddress import IPv4Network, IPv6Network

import trio

from .. import subnetfile
from ..agent_options import AgentOptions
from ..config import NetworkConfig, parse_config
from ..dataplane.device_record import FILE_NAME as DEVICE_RECORD
from ..errors import OverlayError
from ..etcd import EtcdStore
from ..lease import Lease
from ..subnets import Keys, SubnetManager

STORE_TIMEOUT = 8.0


@dataclass
class StoreView:
    """The store as seen once: its config and leases, or why it could not be read."""

    config: NetworkConfig | None = None
    leases: list[Lease] = field(default_factory=list)
    error: str = ""


async def read_store(options: AgentOptions, timeout: float = STORE_TIMEOUT) -> StoreView:
    """Config and leases from etcd within ``timeout`` seconds; the error in one line otherwise."""
    try:
        store = EtcdStore(options.etcd)
    except OverlayError as exc:
        return StoreView(error=str(exc))
    manager = SubnetManager(store, Keys(options.prefix))
    view = StoreView()
    try:
        with trio.move_on_after(timeout) as scope:
            view.config = await manager.get_config()
            view.leases = (await manager.list_leases())[1]
        if scope.cancelled_caught:
            view.error = f"etcd at {options.etcd.label()} did not answer within {timeout:g} s"
    except OverlayError as exc:  # StoreUnavailable, ConfigError, a missing config
        view.error = str(exc)
    finally:
        store.close()
    return view


def config_from_subnet_file(path: str) -> NetworkConfig | None:
    """The networks the subnet file names, as a config without a backend (None: no file)."""
    v4, v6 = subnetfile.previous_networks(path)
    if v4 is None and v6 is None:
        return None
    raw: dict = {"Network": str(v4)} if v4 else {"EnableIPv4": False}
    if v6 is not None:
        raw.update(EnableIPv6=True, IPv6Network=str(v6))
    return parse_config(json.dumps(raw))


def own_subnets(path: str) -> tuple[IPv4Network | None, IPv6Network | None]:
    return subnetfile.previous_subnets(path)


def device_record_path(options: AgentOptions) -> str:
    return os.path.join(options.state_dir, DEVICE_RECORD)
