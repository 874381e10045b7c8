"""Reconcile targets (RUNTIME-API.md "Reconcile targets"): desired objects from :mod:`calc`
against what charon and the kernel hold; core's ``converge`` diffs them by ``key``.

:class:`CharonTarget` owns our private charon's connections (Flannel-named), its shared keys
(id ``overlay-ipsec:<ip>``) and the wish "this CHILD_SA is up" (:class:`~calc.ChildUp`).
``list-conns`` does not show proposals, encapsulation or reqid, so the target remembers what
it loaded into this charon instance (charon's start time tells instances apart); a connection it
did not load itself (a previous agent's, or charon restarted) dumps as :class:`LoadedConn`,
unequal to any desired spec, and is loaded again: charon treats an identical reload as a no-op
(established SAs stay), so adopting a running charon costs nothing.

:class:`XfrmPolicyTarget` (kernel ESP mode only) owns the xfrm policies with an ESP tunnel
template of reqid 11 inside the network, and applies them with one ``ip -batch``.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from functools import partial
from ipaddress import IPv4Address, IPv4Network, ip_address, ip_network

import trio

from .calc import REQID, SHARED_KEY_PREFIX, ChildUp, ConnSpec, SharedKey, XfrmPolicy
from .status import PeerSaStatus, child_alive, peer_status
from .vici_client import CharonUnreachable, IkeSa, LoadedChild, LoadedConn, ViciClient, ViciError

LOGGER = logging.getLogger("overlay.ipsec")
# <ownPublicIP>-<ownSubnet>-<peerSubnet>-<peerPublicIP>, Flannel's connection name
CONN_NAME = re.compile(r"\d+\.\d+\.\d+\.\d+-\d+\.\d+\.\d+\.\d+/\d+-\d+\.\d+\.\d+\.\d+/\d+-\d+\.\d+\.\d+\.\d+")


@dataclass(frozen=True)
class ForeignConn:
    """A connection in charon that this target instance did not load (contents unknown)."""

    loaded: LoadedConn
    key: tuple = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "key", ("ipsec-conn", self.loaded.name))


@dataclass(frozen=True)
class ForeignKey:
    """A shared key in charon with our id prefix that this target instance did not load."""

    id: str
    key: tuple = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "key", ("ipsec-psk", self.id))


def _facts(conn: ConnSpec) -> LoadedConn:
    """What ``list-conns`` would show for ``conn``."""
    return LoadedConn(conn.name, (str(conn.own.public_ip),), (str(conn.peer.public_ip),),
                      (LoadedChild(conn.child, (str(conn.own.subnet),), (str(conn.peer.subnet),)),))


_RANK = {SharedKey: 0, ForeignKey: 0, ConnSpec: 1, ForeignConn: 1, ChildUp: 2}


class CharonTarget:
    """charon's connections, shared keys and CHILD_SAs as one reconcile target named ``ipsec``."""

    name = "ipsec"

    def __init__(self, client: ViciClient, on_loaded: Callable[[], None] | None = None) -> None:
        self.client = client
        self.on_loaded = on_loaded  # told after connections were loaded (charon starts negotiating them)
        self._loaded: dict[tuple, ConnSpec | SharedKey] = {}
        self._instance: tuple[int, int] | None = None
        self.sas: list[IkeSa] = []  # from the last dump, for status

    def owns(self, obj: object) -> bool:
        if isinstance(obj, (ConnSpec, ChildUp)):
            return True
        if isinstance(obj, ForeignConn):
            return bool(CONN_NAME.fullmatch(obj.loaded.name))
        if isinstance(obj, (SharedKey, ForeignKey)):
            return obj.id.startswith(SHARED_KEY_PREFIX)
        return False

    def accepts(self, obj: object) -> bool:
        return isinstance(obj, (ConnSpec, ChildUp, SharedKey))

    async def dump(self) -> list[object]:
        instance = await self.client.started()
        if instance != self._instance:  # another charon: what we loaded is gone
            self._loaded.clear()
            self._instance = instance
        keys = await self.client.shared_ids()
        conns = await self.client.list_conns()
        self.sas = await self.client.list_sas()
        out: list[object] = []
        for key_id in keys:
            out.append(self._loaded.get(("ipsec-psk", key_id)) or ForeignKey(key_id))
        for loaded in conns:
            known = self._loaded.get(("ipsec-conn", loaded.name))
            out.append(known if isinstance(known, ConnSpec) and _facts(known) == loaded else ForeignConn(loaded))
            for child in loaded.children:
                if any(child_alive(ike, child.name) for ike in self.sas if ike.conn == loaded.name):
                    out.append(ChildUp(loaded.name, child.name))
        return [o for o in out if self.owns(o)]

    async def apply(self, to_set: list, to_delete: list) -> int:
        """Each change on its own (a refused one is logged and counted); when charon does not
        answer at all, one line and the rest counted as failed: the reconcile that follows
        charon's restart does them."""
        failed = 0
        loaded_now: set[str] = set()
        steps = [(f"remove {_describe(o)}", o, self._delete) for o in sorted(to_delete, key=lambda o: -_RANK[type(o)])]
        steps += [(f"set {_describe(o)}", o, partial(self._set, loaded_now=loaded_now))
                  for o in sorted(to_set, key=lambda o: _RANK[type(o)])]
        try:
            for done, (what, obj, step) in enumerate(steps):
                if isinstance(obj, ChildUp) and obj.conn in loaded_now:
                    continue  # just loaded with start_action=start: charon is initiating it already
                try:
                    failed += await self._attempt(what, step(obj))
                except CharonUnreachable as exc:
                    LOGGER.warning("ipsec: %d changes wait for charon: %s", len(steps) - done, exc)
                    return failed + len(steps) - done
            return failed
        finally:
            if self.on_loaded is not None and loaded_now:
                self.on_loaded()

    @staticmethod
    async def _attempt(what: str, step) -> int:
        try:
            await step
        except CharonUnreachable:
            raise
        except ViciError as exc:
            LOGGER.warning("ipsec: %s failed: %s", what, exc)
            return 1
        return 0

    async def _set(self, obj, *, loaded_now: set[str]) -> None:
        if isinstance(obj, SharedKey):
            await self.client.load_shared(obj)
            self._loaded[obj.key] = obj
        elif isinstance(obj, ConnSpec):
            previous = self._loaded.get(obj.key)
            await self.client.load_conn(obj)
            self._loaded[obj.key] = obj
            if isinstance(previous, ConnSpec):
                # charon keeps SAs across a reload; renegotiate so a changed proposal takes effect
                await _ignore_missing(self.client.terminate(obj.name))
            loaded_now.add(obj.name)
        elif isinstance(obj, ChildUp):
            await self.client.initiate(obj.conn, obj.child)

    async def _delete(self, obj) -> None:
        if isinstance(obj, (SharedKey, ForeignKey)):
            await self.client.unload_shared(obj.id)
        elif isinstance(obj, (ConnSpec, ForeignConn)):
            name = obj.name if isinstance(obj, ConnSpec) else obj.loaded.name
            await self.client.unload_conn(name)
            await _ignore_missing(self.client.terminate(name))  # unload-conn leaves the SAs running
            if isinstance(obj, ConnSpec):
                await self._end_half_open(str(obj.peer.public_ip), name)
        elif isinstance(obj, ChildUp):
            await _ignore_missing(self.client.terminate(obj.conn, obj.child))
        self._loaded.pop(obj.key, None)

    async def _end_half_open(self, address: str, removed: str) -> None:
        """End the IKE_SAs with a removed peer that ``terminate`` by connection name misses: one the
        peer began (we answered its IKE_SA_INIT) carries no connection name until IKE_AUTH, and
        if the peer went away meanwhile charon would keep it for its half-open timeout."""
        wanted = {key[1] for key in self._loaded if key[0] == "ipsec-conn"} - {removed}
        for ike in await self.client.list_sas():
            if ike.remote_host == address and ike.conn not in wanted:
                await _ignore_missing(self.client.terminate_ike_sa(ike.uniqueid))

    def peer_status(self, conn: ConnSpec) -> PeerSaStatus:
        """SA state of one desired connection, from the last dump."""
        return peer_status(self.sas, conn.name, conn.child)


async def _ignore_missing(call) -> None:
    try:
        await call
    except ViciError as exc:
        if "no matching" not in str(exc):
            raise


def _describe(obj: object) -> str:
    if isinstance(obj, (SharedKey, ForeignKey)):
        return f"shared key {obj.id}"
    if isinstance(obj, ConnSpec):
        return f"connection {obj.name}"
    if isinstance(obj, ForeignConn):
        return f"connection {obj.loaded.name}"
    if isinstance(obj, ChildUp):
        return f"CHILD_SA {obj.child} of {obj.conn}"
    return str(obj)


# --- kernel ESP mode: Flannel's xfrm policies ---------------------------------------------------

_POLICY_HEAD = re.compile(r"^src (\S+) dst (\S+)")
_DIR = re.compile(r"\bdir (in|out|fwd)\b")
_TMPL = re.compile(r"tmpl src (\S+) dst (\S+)")
_PROTO = re.compile(r"proto (\S+) .*?reqid (\d+) mode (\S+)")


def parse_policies(text: str) -> list[XfrmPolicy]:
    """Policies with one ESP tunnel template from ``ip xfrm policy list`` output; others
    (socket policies, transport mode, no template) are left out."""
    out: list[XfrmPolicy] = []
    for block in re.split(r"\n(?=src )", text.strip()):
        head, direction = _POLICY_HEAD.match(block), _DIR.search(block)
        tmpl, proto = _TMPL.search(block), _PROTO.search(block)
        if not (head and direction and tmpl and proto) or proto.group(1) != "esp" or proto.group(3) != "tunnel":
            continue
        try:
            src, dst = ip_network(head.group(1)), ip_network(head.group(2))
            tsrc, tdst = ip_address(tmpl.group(1)), ip_address(tmpl.group(2))
        except ValueError:
            continue
        if all(isinstance(x, (IPv4Network, IPv4Address)) for x in (src, dst, tsrc, tdst)):
            out.append(XfrmPolicy(direction.group(1), src, dst, tsrc, tdst, int(proto.group(2))))  # type: ignore[arg-type]
    return out


def batch_script(to_set: Iterable[XfrmPolicy], to_delete: Iterable[XfrmPolicy]) -> str:
    """The ``ip -batch`` input that applies a diff (deletes first)."""
    lines = [p.delete_command() for p in sorted(to_delete)] + [p.update_command() for p in sorted(to_set)]
    return "".join(line + "\n" for line in lines)


class XfrmPolicyTarget:
    """Kernel xfrm policies (kernel ESP mode), named ``xfrm``. ``ip`` is the argv prefix of
    iproute2 (``("ip", "-n", ns)`` in tests); pyroute2 has no xfrm API."""

    name = "xfrm"

    def __init__(self, network: IPv4Network, ip: Sequence[str] = ("ip",)) -> None:
        self.network = network
        self.ip = tuple(ip)

    def owns(self, obj: object) -> bool:
        return (isinstance(obj, XfrmPolicy) and obj.reqid == REQID
                and obj.src.subnet_of(self.network) and obj.dst.subnet_of(self.network))

    def accepts(self, obj: object) -> bool:
        return isinstance(obj, XfrmPolicy)

    async def dump(self) -> list[XfrmPolicy]:
        done = await trio.run_process([*self.ip, "xfrm", "policy", "list"], capture_stdout=True,
                                      capture_stderr=True)
        return [p for p in parse_policies(done.stdout.decode()) if self.owns(p)]

    async def apply(self, to_set: list[XfrmPolicy], to_delete: list[XfrmPolicy]) -> int:
        """One ``ip -force -batch``: every line is tried; failures are counted from stderr."""
        script = batch_script(to_set, to_delete)
        if not script:
            return 0
        done = await trio.run_process([*self.ip, "-force", "-batch", "-"], stdin=script.encode(),
                                      capture_stdout=True, capture_stderr=True, check=False)
        errors = [line for line in done.stderr.decode().splitlines() if line.startswith("Error")]
        for line in errors:
            LOGGER.warning("ipsec: xfrm policy: %s", line)
        return len(errors) or (1 if done.returncode else 0)
