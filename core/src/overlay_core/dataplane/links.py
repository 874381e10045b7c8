"""Backend devices: adopt a compatible one as it is, replace an incompatible one, create a
missing one. Backends use ``Links`` (``services.links``); ``ensure_link`` and ``read_link`` are
the pieces it runs on the netlink thread.
"""

from __future__ import annotations

import errno
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import trio

from ..errors import KernelFeatureMissingError
from .device_record import RecordedDevice, merge_record

LOGGER = logging.getLogger("overlay.links")


@dataclass(frozen=True)
class LinkInfo:
    """What the kernel reports for a device: kind and the kind's attributes
    (``IFLA_INFO_DATA``, e.g. ``IFLA_VXLAN_ID``) as a dict."""

    index: int
    name: str
    mac: str | None
    kind: str
    data: dict[str, Any] = field(default_factory=dict)


def read_link(ipr, name: str) -> LinkInfo | None:
    found = ipr.link_lookup(ifname=name)
    if not found:
        return None
    link = ipr.get_links(found[0])[0]
    info = link.get_attr("IFLA_LINKINFO")
    kind = (info.get_attr("IFLA_INFO_KIND") if info else None) or ""
    data = info.get_attr("IFLA_INFO_DATA") if info else None
    attrs = dict(data["attrs"]) if data is not None and hasattr(data, "__getitem__") else {}
    return LinkInfo(found[0], name, link.get_attr("IFLA_ADDRESS"), kind, attrs)


def ensure_link(ipr, name: str, kind: str, why_not: Callable[[LinkInfo], str | None],
                create: Callable[[LinkInfo | None], int]) -> tuple[int, LinkInfo | None, str]:
    """Make device ``name`` usable: ``(ifindex, what existed before, "adopted"|"replaced"|"created")``.

    ``why_not(existing)`` says why an existing device cannot be adopted (None: adopt it);
    ``create(previous)`` creates the device (the previous one, if any, is already deleted) and
    returns its index. A kernel without the device kind is a ``KernelFeatureMissingError``.
    """
    existing = read_link(ipr, name)
    action = "created"
    if existing is not None:
        reason = why_not(existing)
        if reason is None:
            return existing.index, existing, "adopted"
        LOGGER.warning("replacing %s: %s", name, reason)
        ipr.link("del", index=existing.index)
        action = "replaced"
    try:
        return create(existing), existing, action
    except Exception as exc:
        if getattr(exc, "code", None) == errno.EOPNOTSUPP:
            raise KernelFeatureMissingError(
                f"this kernel cannot create {kind} devices (module {kind} missing): load it with "
                f"'modprobe {kind}' or choose another backend"
            ) from None
        raise


class Links:
    """The backend's devices, through the agent's netlink thread; no pyroute2 object ever
    reaches the caller. Devices made or adopted here are *owned*: the netlink monitor reconciles
    when one is deleted, goes down or loses an address, and owned devices' neighbour and FDB
    entries belong to the backend's kernel target.

    ``record``: where owned devices' names and kinds are kept for ``overlay-core cleanup``
    (``device_record``); written by ``save_record``, which the agent calls after its startup and
    after every reconcile."""

    def __init__(self, netlink, owned: set[int], record: str | os.PathLike[str] | None = None) -> None:
        self.netlink = netlink
        self.owned = owned
        self._roles: dict[str, int] = {}
        self._record = record
        self._seen: dict[int, RecordedDevice] = {}  # what get/ensure saw at each index
        self._unsaved: set[RecordedDevice] = set()
        self._saved: set[RecordedDevice] = set()

    def _saw(self, info: LinkInfo | None) -> LinkInfo | None:
        if info is not None:
            self._seen[info.index] = RecordedDevice(info.name, info.kind)
        return info

    async def get(self, name: str) -> LinkInfo | None:
        return self._saw(await self.netlink.call(lambda ipr: read_link(ipr, name)))

    async def ensure(self, name: str, kind: str, why_not: Callable[[LinkInfo], str | None],
                     attrs: Callable[[LinkInfo | None], dict[str, Any]]) -> tuple[LinkInfo, str]:
        """Adopt, replace or create device ``name`` (see ``ensure_link``); ``attrs(previous)``
        gives the creation attributes (pyroute2 link keywords such as ``vxlan_id``), knowing
        what existed before (to keep a MAC). Returns the device as it is now and what was done."""

        def run(ipr) -> tuple[LinkInfo, str]:
            def create(previous: LinkInfo | None) -> int:
                ipr.link("add", ifname=name, kind=kind, **attrs(previous))
                return ipr.link_lookup(ifname=name)[0]

            _, _, action = ensure_link(ipr, name, kind, why_not, create)
            info = read_link(ipr, name)
            assert info is not None
            return info, action

        info, action = await self.netlink.call(run)
        self._saw(info)
        return info, action

    async def configure(self, index: int, addresses, networks, mtu: int | None = None) -> bool:
        """Addresses, MTU and up (``configure_device``); True if anything changed."""
        from .kernel import configure_device

        return await self.netlink.call(lambda ipr: configure_device(ipr, index, addresses, networks, mtu))

    async def delete(self, name: str) -> bool:
        """Remove device ``name`` if it exists; True if it did."""

        def run(ipr) -> bool:
            found = ipr.link_lookup(ifname=name)
            if found:
                ipr.link("del", index=found[0])
            return bool(found)

        return await self.netlink.call(run)

    async def ensure_route(self, index: int, dst) -> bool:
        """A plain route ``dst dev <index>`` in the main table (scope universe, as Flannel's
        ``<Network> dev flannel0``) unless one is there; True if it was added."""

        def run(ipr) -> bool:
            family = 2 if dst.version == 4 else 10
            for route in ipr.get_routes(family=family, table=254, oif=index):
                if route.get_attr("RTA_DST") == str(dst.network_address) and route["dst_len"] == dst.prefixlen:
                    return False
            ipr.route("replace", dst=str(dst), oif=index, family=family)
            return True

        return await self.netlink.call(run)

    def disown(self, role: str) -> None:
        """The device playing ``role`` is gone (for now): stop watching its old index."""
        old = self._roles.pop(role, None)
        if old is not None:
            self.owned.discard(old)

    def own(self, role: str, index: int) -> bool:
        """Record ``index`` as the device playing ``role`` (e.g. ``vxlan-v4``); True when it is
        new or replaced one (worth logging)."""
        old = self._roles.get(role)
        if old is not None and old != index:
            self.owned.discard(old)
        self._roles[role] = index
        self.owned.add(index)
        device = self._seen.get(index)
        if device is not None and device not in self._saved:
            self._unsaved.add(device)
        return old != index

    async def save_record(self) -> None:
        """Add the devices owned since the last call to the record (in a worker thread)."""
        if self._record is None or not self._unsaved:
            return
        devices, self._unsaved = self._unsaved, set()
        try:
            await trio.to_thread.run_sync(merge_record, self._record, devices)
        except OSError as exc:
            self._unsaved |= devices
            LOGGER.warning("cannot record our devices in %s: %s", self._record, exc)
            return
        self._saved |= devices
