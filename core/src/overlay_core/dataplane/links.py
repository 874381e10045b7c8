"""Backend devices: adopt a compatible one as it is, replace an incompatible one, create a
missing one. Used inside a netlink call (``await netlink.call(lambda ipr: ensure_link(...))``).
"""

from __future__ import annotations

import errno
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from ..errors import KernelFeatureMissingError

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
