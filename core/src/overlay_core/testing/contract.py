"""The backend contract, checked without a kernel: fakes stand in for devices and targets.

``await check_contract(backend_cls, config_json, tmp_path)`` builds the backend on a fake node
(``eth0`` 192.0.2.1/24, MTU 1500, lease 10.5.1.0/24 and 2001:db8:10:1::/64 when enabled), runs
its startup hooks, then checks what every reconciling backend must do:

- ``plan(peer)`` is pure: the same answer twice, and nothing programmed by asking;
- the first snapshot programs every peer's objects; a removed peer leaves none of them behind;
- a converge right after a converge changes nothing (idempotent);
- drift (an object deleted behind the backend's back) is repaired by the next converge;
- cleaning up (converging every target to nothing) empties every target.

A backend that is not a ``ReconcilingBackend`` (alloc) only has to answer the lease request.
Returns the targets, for further checks by the caller.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Sequence
from ipaddress import IPv4Address, IPv4Network, IPv6Address, ip_network
from pathlib import Path
from typing import Any

from .. import reconcile
from ..backend import ExternalInterface, LeaseRequest, Node
from ..config import parse_config
from ..dataplane.links import LinkInfo
from ..kernel_backend import ReconcilingBackend
from ..lease import Lease, LeaseAttrs
from ..services import Services
from .fakes import RecordingTarget


class FakeGenericFamily:
    """``links.generic(family, message_class)`` without a kernel: every request's messages are
    built with ``family_id`` and recorded, encoded and decoded again as the kernel would see them
    (``sent``); ``answer(messages)`` gives the replies (none by default), or raises as the kernel
    would refuse."""

    family_id = 0x1F

    def __init__(self, family: str, message_class: type) -> None:
        self.family = family
        self.message_class = message_class
        self.sent: list[Any] = []
        self.answer: Callable[[list[Any]], Sequence[Any]] = lambda messages: []

    async def request(self, build: Callable[[int], Sequence[Any]]) -> list[Any]:
        messages = []
        for msg in build(self.family_id):
            msg.encode()
            seen = self.message_class(msg.data)
            seen.decode()
            messages.append(seen)
        self.sent.extend(messages)
        return list(self.answer(messages))


class FakeLinks:
    """``services.links`` without a kernel: devices are records, indexes count from 100;
    generic netlink families are ``FakeGenericFamily`` recorders (``families``)."""

    def __init__(self, owned: set[int]) -> None:
        self.owned = owned
        self.devices: dict[str, LinkInfo] = {}
        self.addresses: dict[int, list] = {}
        self.families: dict[str, FakeGenericFamily] = {}
        self._index = itertools.count(100)

    def generic(self, family: str, message_class: type) -> FakeGenericFamily:
        return self.families.setdefault(family, FakeGenericFamily(family, message_class))

    async def get(self, name: str) -> LinkInfo | None:
        return self.devices.get(name)

    async def ensure(self, name, kind, why_not, attrs) -> tuple[LinkInfo, str]:
        existing = self.devices.get(name)
        if existing is not None and why_not(existing) is None:
            return existing, "adopted"
        wanted = attrs(existing)
        info = LinkInfo(next(self._index), name, wanted.get("address", "02:00:00:00:00:01"), kind, wanted)
        self.devices[name] = info
        return info, "replaced" if existing else "created"

    async def configure(self, index, addresses, networks, mtu=None) -> bool:
        self.addresses[index] = list(addresses)
        return True

    async def delete(self, name: str) -> bool:
        return self.devices.pop(name, None) is not None

    def own(self, role: str, index: int) -> bool:
        new = index not in self.owned
        self.owned.add(index)
        return new


def fake_node(config_json: str, tmp_path: Path) -> tuple[Node, Services]:
    config = parse_config(config_json)
    iface = ExternalInterface("eth0", 2, 1500, IPv4Address("192.0.2.1"),
                              IPv6Address("2001:db8::1") if config.ipv6 else None, IPv4Address("192.0.2.1"),
                              IPv6Address("2001:db8::1") if config.ipv6 else None,
                              (ip_network("192.0.2.0/24"),) + ((ip_network("2001:db8::/64"),) if config.ipv6 else ()))
    owned: set[int] = set()
    node = Node(config, iface, netlink=None, owned_links=owned)
    services = Services(tasks=None, supervisor=None, state_dir=tmp_path, netlink=None, links=FakeLinks(owned),
                        registry=None, reconcile_soon=lambda: None)
    return node, services


def peer(n: int, backend_type: str, data: Any = None, ipv6: bool = False) -> Lease:
    """Peer ``n``: 10.5.n.0/24 at 192.0.2.n (same segment), dual-stack when ``ipv6``."""
    from ipaddress import IPv6Network

    v6 = IPv6Network(f"2001:db8:10:{n:x}::/64") if ipv6 else None
    attrs = LeaseAttrs(IPv4Address(f"192.0.2.{n}"), IPv6Address(f"2001:db8::{n:x}") if ipv6 else None,
                       backend_type, data, data if ipv6 else None)
    return Lease(IPv4Network(f"10.5.{n}.0/24"), v6, attrs, revision=n, lease_id=7)


async def check_contract(backend_cls, config_json: str, tmp_path: Path, peer_data: Any = None) -> list[RecordingTarget]:
    """``peer_data(n)`` gives peer ``n``'s BackendData (each peer's must differ where the
    backend keys objects by it, as a VTEP MAC); a plain value is used for every peer."""
    data = peer_data if callable(peer_data) else (lambda n: peer_data)
    node, services = fake_node(config_json, tmp_path)
    backend = backend_cls(node, services)
    for hook in ("overlay_network_config",):
        impl = getattr(backend, hook, None)
        if impl is not None:
            impl(config=node.config, node=node) if _arity(impl) == 2 else impl(node=node)
    request = await _call(backend, "overlay_lease_request", config=node.config, node=node)
    assert request is None or isinstance(request, LeaseRequest), "overlay_lease_request returns a LeaseRequest"
    if not isinstance(backend, ReconcilingBackend):
        return []
    ipv6 = node.config.ipv6 is not None
    node.lease = peer(1, backend.advertised_type(), data(1), ipv6)
    node.mtu = request.mtu if request else node.iface.mtu
    await _call(backend, "overlay_lease_acquired", lease=node.lease, node=node)
    targets = [RecordingTarget(t.name, t.accepts) for t in backend.targets()]
    backend.targets = lambda: targets  # type: ignore[method-assign]
    peers = [peer(n, backend.advertised_type(), data(n), ipv6) for n in (2, 3, 4)]

    def state() -> set:
        return {obj for t in targets for obj in t.state.values()}

    first = [backend.plan(p) for p in peers]
    assert [backend.plan(p) for p in peers] == first, "plan(peer) answers the same twice"
    assert state() == set(), "asking for a plan programs nothing"
    await backend.overlay_store_in_sync(peers)
    wanted = {obj for plan in first for obj in plan.objects}
    assert wanted <= state(), "the first snapshot programs every peer's objects"
    await backend.overlay_peers_removed([peers[0]])
    left = {obj.key for obj in state()}
    assert not {obj.key for obj in first[0].objects} & left, "a removed peer leaves no object behind"
    assert await backend.converge(peers[1:]) == (0, 0), "a converge after a converge changes nothing"
    victim = next(iter(targets[0].state)) if targets and targets[0].state else None
    if victim is not None:
        targets[0].state.pop(victim)
        await backend.converge(peers[1:])
        assert victim in targets[0].state, "drift is repaired by the next converge"
    await reconcile.converge_all(targets, [])
    assert state() == set(), "cleanup (converging to nothing) empties every target"
    return targets


def _arity(fn) -> int:
    import inspect

    return len(inspect.signature(fn).parameters)


async def _call(backend, hook: str, **kwargs):
    import inspect

    impl = getattr(backend, hook, None)
    if impl is None:
        return None
    wanted = inspect.signature(impl).parameters
    value = impl(**{k: v for k, v in kwargs.items() if k in wanted})
    return await value if inspect.isawaitable(value) else value
