"""Hook specifications: every event the agent emits, in the order of a node's life.

Implement a hook by defining a function or method with the same name (and any subset of its
arguments) decorated with ``overlay_core.hookimpl``. Implementations may be ``async def``: the
agent awaits them one after another, in pluggy's order (``tryfirst``/``trylast`` honoured),
except for the hooks in ``SYNC_ONLY`` (asked while answering an HTTP request or building the
command line), whose ``async def`` implementations are refused when the plugin is registered,
as are hook wrappers. Every docstring says *When* the hook fires and what it *Returns*.

A backend is a plugin too: the one class named by the config's ``Backend.Type`` is
instantiated and registered next to the always-loaded observer plugins (entry point group
``overlay.plugins``), and it receives the same events.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import pluggy

if TYPE_CHECKING:
    import argparse

    from .backend import LeaseRequest, Node, PeerStatus
    from .config import NetworkConfig
    from .lease import Lease

_spec = pluggy.HookspecMarker("overlay")

SYNC_ONLY = frozenset({"overlay_report", "overlay_peer_status", "overlay_register_commands"})

# -- startup ---------------------------------------------------------------------------------


@_spec
def overlay_network_config(config: NetworkConfig, node: Node) -> None:
    """The network config was read from the store and validated.

    When: once at startup, after the external interface is chosen and before any lease is
    written. Backends parse and check their ``Backend`` options here and raise
    ``ConfigError`` (one line: what is wrong, what to do) to stop the agent.
    Returns: nothing; return values are ignored.
    """


@_spec(firstresult=True)
def overlay_lease_request(config: NetworkConfig, node: Node) -> LeaseRequest | None:
    """The backend is asked what to advertise in the lease, and the network's MTU.

    When: once at startup, after ``overlay_network_config``, before the lease is written.
    Backends that need kernel objects to know their data (a VXLAN device's MAC) create or
    adopt them here.
    Returns: a ``LeaseRequest`` (BackendType, BackendData, BackendV6Data, MTU). Stops at the
    first non-None result; with none, the agent advertises the backend's type, no data, and
    the external interface's MTU.
    """


@_spec
def overlay_lease_acquired(lease: Lease, node: Node) -> None:
    """This node holds ``lease``.

    When: at startup once the lease is written, and again whenever the node had to take a
    different subnet (after ``overlay_lease_lost``). Not for renewals. Backends put the
    subnet's address on their devices here.
    Returns: nothing.
    """


@_spec
def overlay_lease_renewed(lease: Lease, remaining: float | None) -> None:
    """The lease's TTL was refreshed; ``remaining`` is seconds to expiry (None: reservation).

    When: after every successful renewal, about once a day per node by default.
    Returns: nothing.
    """


@_spec
def overlay_lease_lost(lease: Lease, reason: str) -> None:
    """Another node now holds the subnet of ``lease``; a new subnet will be acquired.

    When: when the guarded renewal or re-creation of our key finds it owned by someone
    else. ``overlay_lease_acquired`` follows with the new lease.
    Returns: nothing.
    """


# -- peers ------------------------------------------------------------------------------------


@_spec
def overlay_peers_added(peers: Sequence[Lease], node: Node) -> None:
    """Leases of other nodes appeared.

    When: for the initial snapshot (all peers in one batch) and later whenever peer leases
    are created. Batches are de-duplicated: a renewal that changes nothing is no event.
    Within one batch, removals are delivered first, then changes, then additions. Only
    leases whose ``BackendType`` the backend accepts are delivered.
    Returns: nothing. An exception is logged and counted; the next reconcile retries.
    """


@_spec
def overlay_peers_changed(changes: Sequence[tuple[Lease, Lease]], node: Node) -> None:
    """Peers kept their subnet but changed what they advertise (public IP, backend data).

    When: as ``overlay_peers_added``; each item is ``(old, new)``.
    Returns: nothing. An exception is logged and counted; the next reconcile retries.
    """


@_spec
def overlay_peers_removed(peers: Sequence[Lease], node: Node) -> None:
    """Leases of other nodes disappeared (deleted or expired); ``peers`` hold their last data.

    When: as ``overlay_peers_added``.
    Returns: nothing. An exception is logged and counted; the next reconcile retries.
    """


@_spec
def overlay_store_in_sync(peers: Sequence[Lease], initial: bool, node: Node) -> None:
    """A full snapshot of the store has been applied; ``peers`` is the complete peer set.

    When: after the first snapshot's ``overlay_peers_added`` (``initial=True``), and after
    every re-list following an etcd compaction (``initial=False``). The agent reports ready
    only after the initial call has returned.
    Returns: nothing.
    """


@_spec
def overlay_reconcile(peers: Sequence[Lease], node: Node) -> None:
    """Compare the desired state for ``peers`` with the kernel and repair the difference.

    When: every ``--reconcile-interval`` seconds, and right after a peer hook raised.
    Backends restore objects someone deleted and remove owned objects of vanished peers.
    Returns: nothing.
    """


@_spec
def overlay_report(node: Node) -> Mapping[str, Any] | None:
    """Extra facts for ``/readyz`` and ``lab status`` (for example unreachable peers).

    When: on every ``/readyz`` request.
    Returns: a JSON-serialisable mapping merged into the report, or None. A plugin that cannot
    do its work yet (a cloud API unreachable, a route table full) says why under the key
    ``not_ready`` (one line): the node then reports not ready (``/readyz`` answers 503).
    """


@_spec
def overlay_peer_status(node: Node) -> Mapping[str, PeerStatus] | None:
    """The state of each peer as this plugin sees it, by lease key.

    When: on every ``/readyz`` request and every ``/metrics`` scrape (sync only: keep it cheap,
    answer from what the plugin already knows). ``PeerStatus.state`` is one word
    (``programmed``, ``skipped``, ``connecting``, ``down``…); numeric values in
    ``PeerStatus.detail`` (handshake age, bytes) are also exported as per-peer gauges.
    Returns: a mapping of lease key to ``PeerStatus``, or None. Several plugins' answers are
    merged, later ones adding to the detail of earlier ones.
    """


# -- commands ---------------------------------------------------------------------------------


@_spec
def overlay_register_commands(subparsers: argparse._SubParsersAction) -> None:
    """Add subcommands to ``overlay-core`` (the lab is one).

    When: every time ``overlay-core`` builds its command line, before parsing (sync only).
    Plugins of the entry point group ``overlay.plugins`` are asked; a parser a plugin adds sets
    ``func`` (``parser.set_defaults(func=…)``) to a callable taking the parsed namespace and
    returning the exit status.
    Returns: nothing.
    """


# -- shutdown ---------------------------------------------------------------------------------


@_spec
def overlay_shutdown(node: Node) -> None:
    """The agent is stopping (SIGTERM/SIGINT). Kernel state and the lease stay in place.

    When: once, at the end, with at most one second left. Backends with userspace parts
    (a TUN reader, a daemon they started) stop them here; kernel-only backends do nothing.
    Returns: nothing.
    """
