"""Reading and writing the kernel objects of ``objects.py``.

Small changes (a peer event) go through pyroute2 on the netlink thread, one request per object
with its own error. Large ones (a first sync, a re-list) go through ``ip -force -batch`` and
``bridge -force -batch``, which encode thousands of objects in milliseconds where pyroute2
needs about 0.25 ms per message (reference/dependency-probe.md §2.5).
"""

from __future__ import annotations

import ipaddress
import logging
import socket
from collections.abc import Callable, Iterable

import trio

from .netlink import Netlink
from .objects import (
    MAIN_TABLE,
    ROUTE_SCOPES,
    ROUTE_TYPES,
    RTPROT_OVERLAY,
    FdbEntry,
    KernelObject,
    Neighbour,
    Route,
    Scope,
    ordered_for_delete,
    ordered_for_set,
)
from .rtnl import dump_owned

LOGGER = logging.getLogger("overlay.kernel")

BATCH_THRESHOLD = 64
NUD_PERMANENT = 0x80
NTF_SELF = 0x02
RTNH_F_ONLINK = 0x04


def _family(version: int) -> int:
    return socket.AF_INET if version == 4 else socket.AF_INET6


def _set_one(ipr, obj: KernelObject) -> None:
    if isinstance(obj, Route):
        kw = {"dst": str(obj.dst), "table": MAIN_TABLE, "proto": RTPROT_OVERLAY, "family": _family(obj.dst.version),
              "type": ROUTE_TYPES[obj.type], "scope": ROUTE_SCOPES[obj.scope]}
        if obj.oif:
            kw["oif"] = obj.oif
        if obj.gateway is not None:
            kw["gateway"] = str(obj.gateway)
        if obj.onlink:
            kw["flags"] = RTNH_F_ONLINK
        ipr.route("replace", **kw)
    elif isinstance(obj, Neighbour):
        ipr.neigh("replace", ifindex=obj.ifindex, dst=str(obj.dst), lladdr=obj.lladdr,
                  state=NUD_PERMANENT, family=_family(obj.dst.version))
    else:
        ipr.fdb("replace", ifindex=obj.ifindex, lladdr=obj.lladdr, dst=str(obj.dst),
                state=NUD_PERMANENT, flags=NTF_SELF)


def _delete_one(ipr, obj: KernelObject) -> None:
    if isinstance(obj, Route):
        ipr.route("del", dst=str(obj.dst), table=MAIN_TABLE, proto=RTPROT_OVERLAY,
                  family=_family(obj.dst.version), type=ROUTE_TYPES[obj.type])
    elif isinstance(obj, Neighbour):
        ipr.neigh("del", ifindex=obj.ifindex, dst=str(obj.dst), family=_family(obj.dst.version))
    else:
        ipr.fdb("del", ifindex=obj.ifindex, lladdr=obj.lladdr, dst=str(obj.dst))


def batch_lines(to_set: Iterable[KernelObject], to_delete: Iterable[KernelObject],
                names: dict[int, str]) -> tuple[str, str]:
    """``(ip -batch input, bridge -batch input)`` for the given changes."""
    ip_lines, bridge_lines = [], []
    for obj in ordered_for_delete(to_delete):
        if isinstance(obj, Route):
            kind = "" if obj.type == "unicast" else f"{obj.type} "
            ip_lines.append(f"route del {kind}{obj.dst} table main proto {RTPROT_OVERLAY}")
        elif isinstance(obj, Neighbour):
            ip_lines.append(f"neigh del {obj.dst} dev {names[obj.ifindex]}")
        else:
            bridge_lines.append(f"fdb del {obj.lladdr} dev {names[obj.ifindex]} dst {obj.dst} self")
    for obj in ordered_for_set(to_set):
        if isinstance(obj, Route) and obj.type != "unicast":
            ip_lines.append(f"route replace {obj.type} {obj.dst} table main proto {RTPROT_OVERLAY}")
        elif isinstance(obj, Route):
            via = f" via {obj.gateway}" if obj.gateway is not None else ""
            ip_lines.append(f"route replace {obj.dst}{via} dev {names[obj.oif]}"
                            f"{' onlink' if obj.onlink else ''} scope {obj.scope} table main proto {RTPROT_OVERLAY}")
        elif isinstance(obj, Neighbour):
            ip_lines.append(f"neigh replace {obj.dst} lladdr {obj.lladdr} dev {names[obj.ifindex]} nud permanent")
        else:
            bridge_lines.append(f"fdb replace {obj.lladdr} dev {names[obj.ifindex]} dst {obj.dst} self permanent")
    return "\n".join(ip_lines), "\n".join(bridge_lines)


class Kernel:
    """The kernel as a reconcile target (``overlay_core.reconcile.Target``): routes,
    neighbour and FDB entries inside what ``scope()`` says the backend owns."""

    name = "kernel"

    def __init__(self, netlink: Netlink, scope: Callable[[], Scope]) -> None:
        self.netlink = netlink
        self.scope = scope
        self._scope = Scope()

    def accepts(self, obj: object) -> bool:
        return isinstance(obj, (Route, Neighbour, FdbEntry))

    def owns(self, obj: KernelObject) -> bool:
        return self._scope.owns(obj)

    async def dump(self) -> list[KernelObject]:
        self._scope = self.scope()
        return await dump_owned(self._scope)

    async def apply(self, to_set: list[KernelObject], to_delete: list[KernelObject]) -> int:
        """Make the changes; returns how many failed (each failure is logged)."""
        if not to_set and not to_delete:
            return 0
        if len(to_set) + len(to_delete) > BATCH_THRESHOLD:
            return await self._apply_batch(to_set, to_delete)

        def run(ipr) -> list[tuple[KernelObject, str, Exception]]:
            failed = []
            for obj in ordered_for_delete(to_delete):
                try:
                    _delete_one(ipr, obj)
                except Exception as exc:
                    if getattr(exc, "code", None) not in (2, 3):  # already gone
                        failed.append((obj, "delete", exc))
            for obj in ordered_for_set(to_set):
                try:
                    _set_one(ipr, obj)
                except Exception as exc:
                    failed.append((obj, "set", exc))
            return failed

        failed = await self.netlink.call(run)
        for obj, action, exc in failed:
            LOGGER.error("could not %s %s: %s", action, obj, exc)
        return len(failed)

    async def _apply_batch(self, to_set, to_delete) -> int:
        names = await self.netlink.call(
            lambda ipr: {m["index"]: m.get_attr("IFLA_IFNAME") for m in ipr.get_links()})
        ip_input, bridge_input = batch_lines(to_set, to_delete, names)
        failures = 0

        async def run(tool: str, text: str) -> None:
            nonlocal failures
            if not text:
                return
            proc = await trio.run_process([tool, "-force", "-batch", "-"], stdin=text.encode(),
                                          capture_stdout=True, capture_stderr=True, check=False)
            if proc.returncode != 0:
                errors = [line for line in proc.stderr.decode().splitlines() if line.strip()]
                count = sum(1 for line in errors if line.startswith("Command failed"))
                failures += count or 1
                LOGGER.error("%s -batch: %d commands failed, first: %s", tool, count, " | ".join(errors[:4]))

        # FDB entries and neighbour/route changes do not depend on each other in the kernel
        # (a route needs its neighbour, which is in the same ip batch), so both run at once.
        async with trio.open_nursery() as nursery:
            nursery.start_soon(run, "bridge", bridge_input)
            nursery.start_soon(run, "ip", ip_input)
        return failures


def configure_device(ipr, ifindex: int, addresses, networks, mtu: int | None = None) -> bool:
    """Inside a netlink call: set ``mtu``, put ``addresses`` (ip_interface values, e.g. the
    subnet base /32) on the device, remove its other addresses inside ``networks`` (IPv4) or
    any other global address (IPv6), and bring it up. Returns True if anything changed."""
    changed = False
    link = ipr.get_links(ifindex)[0]
    if mtu and link.get_attr("IFLA_MTU") != mtu:
        ipr.link("set", index=ifindex, mtu=mtu)
        changed = True
    have = set()
    for msg in ipr.get_addr(index=ifindex):
        ip = ipaddress.ip_interface(f"{msg.get_attr('IFA_ADDRESS')}/{msg['prefixlen']}")
        if ip in addresses:
            have.add(ip)
            continue
        stale = (any(ip.ip in n for n in networks) if ip.version == 4
                 else not ip.ip.is_link_local and any(a.version == 6 for a in addresses))
        if stale:
            ipr.addr("del", index=ifindex, address=str(ip.ip), prefixlen=ip.network.prefixlen)
            changed = True
    for ip in addresses:
        if ip not in have:
            ipr.addr("add", index=ifindex, address=str(ip.ip), prefixlen=ip.network.prefixlen)
            changed = True
    if not link["flags"] & 1:
        ipr.link("set", index=ifindex, state="up")
        changed = True
    return changed
