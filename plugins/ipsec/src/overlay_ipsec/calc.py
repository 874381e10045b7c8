"""Desired state, pure: from our lease and the peers' leases to charon and kernel objects.

Names, traffic selectors and proposals are Flannel's, so a Flannel ipsec node and ours set
up SAs with each other: connection ``<ownPublicIP>-<ownSubnet>-<peerSubnet>-<peerPublicIP>``,
child ``<ownSubnet>-<peerSubnet>``, IKEv2 ``aes256-sha256-modp4096``, PSK auth on both sides.

Two kernel modes (:data:`KERNEL`, :data:`LIBIPSEC`) differ only locally, never on the wire:

* ``kernel``: the kernel does ESP. As Flannel: three xfrm policies per peer (out, in, fwd) with
  reqid 11, charon installs only SAs (``policies = no``), start ``start``, close ``trap``.
* ``libipsec``: no ESP in the kernel; charon's kernel-libipsec does ESP in userspace behind the
  TUN device ``ipsec0``. charon must install its own policies (its userspace SPD), trap policies
  never fire (no acquires), so close ``start`` and an explicit initiate; and no fixed reqid:
  libipsec picks the outbound SA by reqid alone, so a reqid shared by every peer sends one
  peer's packets into another peer's SA (seen on this machine with three nodes).

Every object has a ``key`` (identity) and compares by value, as reconcile targets want.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from ipaddress import IPv4Address, IPv4Network
from typing import Any, Union

from overlay_core import Lease
from overlay_core.services import Secret

from .options import IpsecOptions

KERNEL = "kernel"
LIBIPSEC = "libipsec"
LEASE_TYPE = "ipsec"
REQID = 11  # Flannel's defaultReqID (kernel mode only)
IKE_PROPOSAL = "aes256-sha256-modp4096"  # Flannel's, fixed
REKEY_TIME = "1h"
SHARED_KEY_PREFIX = "overlay-ipsec:"


@dataclass(frozen=True, order=True)
class Endpoint:
    """One side of a tunnel: the node's public IP and its pod subnet."""

    public_ip: IPv4Address
    subnet: IPv4Network


def _yes(flag: bool) -> str:
    return "yes" if flag else "no"


@dataclass(frozen=True)
class ConnSpec:
    """One charon connection to one peer, with its single CHILD_SA."""

    own: Endpoint
    peer: Endpoint
    esp_proposal: str
    udp_encap: bool
    mode: str
    key: tuple = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "key", ("ipsec-conn", self.name))

    @property
    def name(self) -> str:
        return conn_name(self.own, self.peer)

    @property
    def child(self) -> str:
        return f"{self.own.subnet}-{self.peer.subnet}"

    def to_vici(self) -> dict[str, Any]:
        """The ``load-conn`` message."""
        child: dict[str, Any] = {
            "local_ts": [str(self.own.subnet)],
            "remote_ts": [str(self.peer.subnet)],
            "esp_proposals": [self.esp_proposal],
            "start_action": "start",
            "close_action": "trap" if self.mode == KERNEL else "start",
            "dpd_action": "restart",
            "mode": "tunnel",
            "rekey_time": REKEY_TIME,
            "policies": _yes(self.mode != KERNEL),
        }
        if self.mode == KERNEL:
            child["reqid"] = str(REQID)
        return {
            self.name: {
                "version": "2",
                "local_addrs": [str(self.own.public_ip)],
                "remote_addrs": [str(self.peer.public_ip)],
                "proposals": [IKE_PROPOSAL],
                "keyingtries": "0",
                "encap": _yes(self.udp_encap),
                "local": {"auth": "psk"},
                "remote": {"auth": "psk"},
                "children": {self.child: child},
            }
        }


def conn_name(own: Endpoint, peer: Endpoint) -> str:
    return f"{own.public_ip}-{own.subnet}-{peer.subnet}-{peer.public_ip}"


@dataclass(frozen=True)
class ChildUp:
    """"This connection's CHILD_SA is installed (or being negotiated)": a missing one is initiated."""

    conn: str
    child: str
    key: tuple = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "key", ("ipsec-child", self.conn))


@dataclass(frozen=True)
class SharedKey:
    """The IKE PSK for one owner identity (a public IP), as Flannel loads it: one for our own
    address (a per-node object) and one per peer lease. charon id ``overlay-ipsec:<ip>`` for
    ours, ``overlay-ipsec:<ip>-<subnet>`` for a peer's, so two leases of one node (a node that
    moved to another subnet) own separate keys and removing one never removes the other's."""

    owner: IPv4Address
    psk: Secret
    subnet: IPv4Network | None = None
    key: tuple = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "key", ("ipsec-psk", self.id))

    @property
    def id(self) -> str:
        return f"{SHARED_KEY_PREFIX}{self.owner}" + (f"-{self.subnet}" if self.subnet is not None else "")

    def to_vici(self) -> dict[str, Any]:
        """The ``load-shared`` message (the only place the PSK leaves its wrapper)."""
        return {"id": self.id, "type": "IKE", "data": self.psk.reveal(), "owners": [str(self.owner)]}


@dataclass(frozen=True, order=True)
class XfrmPolicy:
    """One kernel xfrm policy with an ESP tunnel template, as Flannel installs it."""

    direction: str  # out | in | fwd
    src: IPv4Network
    dst: IPv4Network
    tmpl_src: IPv4Address
    tmpl_dst: IPv4Address
    reqid: int = REQID
    key: tuple = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "key", ("xfrm-policy", self.direction, self.src, self.dst))

    def selector(self) -> str:
        return f"src {self.src} dst {self.dst} dir {self.direction}"

    def update_command(self) -> str:
        """An ``ip -batch`` line: ``xfrm policy update`` adds or replaces."""
        return (f"xfrm policy update {self.selector()} tmpl src {self.tmpl_src} dst {self.tmpl_dst} "
                f"proto esp reqid {self.reqid} mode tunnel")

    def delete_command(self) -> str:
        return f"xfrm policy delete {self.selector()}"


IpsecObject = Union[ConnSpec, ChildUp, SharedKey, XfrmPolicy]


def peer_policies(own: Endpoint, peer: Endpoint) -> tuple[XfrmPolicy, ...]:
    """Flannel's three policies for one peer: out, and in + fwd with the reversed selector."""
    return (
        XfrmPolicy("out", own.subnet, peer.subnet, own.public_ip, peer.public_ip),
        XfrmPolicy("in", peer.subnet, own.subnet, peer.public_ip, own.public_ip),
        XfrmPolicy("fwd", peer.subnet, own.subnet, peer.public_ip, own.public_ip),
    )


@dataclass(frozen=True)
class PeerDecision:
    """What one peer lease becomes: its objects, or the reason it is skipped."""

    peer: Lease
    objects: tuple[IpsecObject, ...] = ()
    reason: str = ""

    @property
    def skipped(self) -> bool:
        return not self.objects


def endpoint(lease: Lease) -> Endpoint:
    if lease.subnet is None:
        raise ValueError("lease has no IPv4 subnet")
    return Endpoint(lease.attrs.public_ip, lease.subnet)


def _skip_reason(own: Endpoint, peer: Lease, network: IPv4Network) -> str:
    """Why a peer lease cannot get a tunnel, or ''. Checks keep charon's routes (table 220 in
    libipsec mode) and our policies to peer pod subnets inside the network."""
    if peer.attrs.backend_type != LEASE_TYPE:
        return f"BackendType is {peer.attrs.backend_type!r}, not {LEASE_TYPE!r}"
    if peer.subnet is None:
        return "lease has no IPv4 subnet (ipsec carries IPv4 only)"
    if peer.subnet == own.subnet:
        return "own subnet"
    if not peer.subnet.subnet_of(network):
        return f"subnet {peer.subnet} lies outside the network {network}"
    if peer.subnet.overlaps(own.subnet):
        return f"subnet {peer.subnet} overlaps our subnet {own.subnet}"
    if peer.attrs.public_ip.is_unspecified:
        return "lease has no PublicIP"
    if peer.attrs.public_ip == own.public_ip:
        return f"PublicIP {peer.attrs.public_ip} is our own (a stale lease of this node?)"
    return ""


def plan_peer(own_lease: Lease, peer: Lease, options: IpsecOptions, mode: str,
              network: IPv4Network) -> PeerDecision:
    """The objects for one peer: connection, CHILD_SA wish, its PSK owner, and (kernel mode)
    Flannel's three xfrm policies."""
    own = endpoint(own_lease)
    reason = _skip_reason(own, peer, network)
    if reason:
        return PeerDecision(peer, reason=reason)
    remote = endpoint(peer)
    conn = ConnSpec(own, remote, options.esp_proposal, options.udp_encap, mode)
    objects: list[IpsecObject] = [conn, ChildUp(conn.name, conn.child), SharedKey(remote.public_ip, options.psk,
                                                                                 remote.subnet)]
    if mode == KERNEL:
        objects.extend(peer_policies(own, remote))
    return PeerDecision(peer, tuple(objects))


@dataclass
class Desired:
    """The whole desired state for a snapshot of peers."""

    objects: list[IpsecObject]
    decisions: list[PeerDecision]

    @property
    def skipped(self) -> list[PeerDecision]:
        return [d for d in self.decisions if d.skipped]


def node_objects(own_lease: Lease, options: IpsecOptions) -> list[IpsecObject]:
    """What belongs to the node rather than to a peer: the PSK for our own public IP."""
    return [SharedKey(endpoint(own_lease).public_ip, options.psk)]


def desired_state(own_lease: Lease, peers: Iterable[Lease], options: IpsecOptions, mode: str,
                  network: IPv4Network) -> Desired:
    """Objects for every usable peer, plus the node's own; a peer whose subnet overlaps an
    earlier (lower) peer's is skipped, so no two connections claim the same addresses (the
    agent's lease rules already refuse such leases; this keeps the function safe on its own)."""
    objects = node_objects(own_lease, options)
    decisions: list[PeerDecision] = []
    taken: list[IPv4Network] = []
    for peer in sorted(peers, key=lambda lease: lease.key):
        decision = plan_peer(own_lease, peer, options, mode, network)
        clash = next((t for t in taken if peer.subnet is not None and t.overlaps(peer.subnet)), None)
        if not decision.skipped and clash is not None:
            decision = PeerDecision(peer, reason=f"subnet {peer.subnet} overlaps another peer's {clash}")
        if not decision.skipped:
            taken.append(peer.subnet)  # type: ignore[arg-type]
            objects.extend(decision.objects)
        decisions.append(decision)
    return Desired(objects, decisions)
