"""One WireGuard device as a reconcile target (RUNTIME-API.md "Reconcile targets").

Objects are the device's ``DeviceConfig`` (key ``@device``) and its ``WgPeer`` values (key =
public key). ``dump`` is one UAPI ``get``; ``apply`` is one UAPI ``set`` for all changes, so a
cold sync of 1000 peers is one transaction. On the kernel path the same two calls are a generic
netlink dump and ``WG_CMD_SET_DEVICE`` requests (``kernel.KernelDevice``). Every peer on our
device is ours: a peer added by hand is removed, a peer or allowed IP deleted by hand comes
back (``overlay_core.reconcile`` diffs and converges it like any other target).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

from .kernel import KernelDevice
from .peer import DeviceConfig, PeerState, WgPeer
from .uapi import UapiClient, UapiError

LOGGER = logging.getLogger("overlay.wireguard")
WgObject = WgPeer | DeviceConfig


class WireguardDeviceTarget:
    """The peer set (and settings) of device ``client.device`` behind a UAPI socket or, for a
    kernel device, generic netlink."""

    def __init__(self, client: UapiClient | KernelDevice) -> None:
        self.client = client
        self.name = f"wireguard:{client.device}"
        self.last_status: tuple[PeerState, ...] = ()

    def owns(self, obj: object) -> bool:
        """Everything on our device is ours (a peer added by hand is removed)."""
        return isinstance(obj, WgPeer | DeviceConfig) and obj.device == self.client.device

    def accepts(self, obj: object) -> bool:
        return isinstance(obj, WgPeer | DeviceConfig) and obj.device == self.client.device

    async def dump(self) -> list[WgObject]:
        state = await self.client.get()
        self.last_status = state.peers
        return [state.config, *(p.peer for p in state.peers)]

    async def apply(self, to_set: Sequence[WgObject], to_delete: Sequence[WgObject]) -> int:
        """Everything in one ``set``; when wireguard-go refuses it, each change again on its
        own, so one bad peer cannot block the others. Returns how many failed."""
        config = next((o for o in to_set if isinstance(o, DeviceConfig)), None)
        peers = [o for o in to_set if isinstance(o, WgPeer)]
        removed = [o.key for o in to_delete if isinstance(o, WgPeer)]
        # deleting a DeviceConfig means nothing: a device always has settings
        if config is None and not peers and not removed:
            return 0
        try:
            await self.client.set(config, peers, removed)
            return 0
        except UapiError as exc:
            if exc.errno is None:
                LOGGER.warning("%s: %s", self.name, exc)
                return len(peers) + len(removed) + (config is not None)
            LOGGER.warning("%s: batch refused (%s); applying changes one by one", self.name, exc)
        failed = 0
        singles: list[tuple[str, dict]] = [("device settings", {"config": config})] if config else []
        singles += [(p.describe(), {"peers": [p]}) for p in peers]
        singles += [("a removed peer", {"remove": [k]}) for k in removed]
        for what, kwargs in singles:
            try:
                await self.client.set(**kwargs)
            except UapiError as exc:
                failed += 1
                LOGGER.warning("%s: could not set %s: %s", self.name, what, exc)
        return failed
