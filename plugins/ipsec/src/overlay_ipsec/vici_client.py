"""trio-facing VICI client: one blocking ``vici.Session`` owned by one dedicated thread.

Every call runs on that thread (core's :class:`~overlay_core.services.DedicatedThread`); the session
reconnects on the next call after charon went away. VICI values arrive as ``bytes`` and are
decoded here, into small frozen records. Errors become :class:`ViciError`, one line, never
carrying the PSK (a failed ``load-shared`` reports only the key id).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import trio
import vici
import vici.exception
from overlay_core import ConfigError, OverlayError
from overlay_core.services import DedicatedThread

from .calc import ConnSpec, SharedKey
from .charon import vici_session

T = TypeVar("T")
PROPOSAL_CHECK_CONN = "overlay-ipsec-proposal-check"


class ViciError(OverlayError):
    """charon refused a command or cannot be reached."""


class CharonUnreachable(ViciError):
    """Nobody answers on the VICI socket (charon is down or restarting)."""


def _text(value: Any) -> str:
    return value.decode(errors="replace") if isinstance(value, bytes) else str(value)


def _texts(value: Any) -> tuple[str, ...]:
    return tuple(_text(v) for v in value or ())


def _int(value: Any) -> int | None:
    try:
        return int(_text(value))
    except (TypeError, ValueError):
        return None


@dataclass(frozen=True)
class LoadedChild:
    name: str
    local_ts: tuple[str, ...]
    remote_ts: tuple[str, ...]


@dataclass(frozen=True)
class LoadedConn:
    """A connection as ``list-conns`` shows it (proposals, encap and reqid are not listed)."""

    name: str
    local_addrs: tuple[str, ...]
    remote_addrs: tuple[str, ...]
    children: tuple[LoadedChild, ...]


@dataclass(frozen=True)
class ChildSa:
    name: str
    state: str  # INSTALLED, REKEYING, ...
    bytes_in: int
    bytes_out: int
    packets_in: int
    packets_out: int
    rekey_in: int | None  # seconds until rekeying


@dataclass(frozen=True)
class IkeSa:
    conn: str
    uniqueid: str
    state: str  # ESTABLISHED, CONNECTING, ...
    remote_host: str
    established: int | None  # seconds since
    children: tuple[ChildSa, ...]


def _loaded_conn(name: str, body: Mapping[str, Any]) -> LoadedConn:
    children = tuple(
        LoadedChild(_text(cname), _texts(c.get("local-ts")), _texts(c.get("remote-ts")))
        for cname, c in (body.get("children") or {}).items()
    )
    return LoadedConn(_text(name), _texts(body.get("local_addrs")), _texts(body.get("remote_addrs")), children)


def _ike_sa(name: str, body: Mapping[str, Any]) -> IkeSa:
    children = tuple(
        ChildSa(_text(c.get("name", "")), _text(c.get("state", "")), _int(c.get("bytes-in")) or 0,
                _int(c.get("bytes-out")) or 0, _int(c.get("packets-in")) or 0, _int(c.get("packets-out")) or 0,
                _int(c.get("rekey-time")))
        for c in (body.get("child-sas") or {}).values()
    )
    return IkeSa(_text(name), _text(body.get("uniqueid", "")), _text(body.get("state", "")),
                 _text(body.get("remote-host", "")), _int(body.get("established")), children)


class ViciLink:
    """The thread-owned resource: a session opened lazily, dropped after a transport error."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._session: vici.Session | None = None

    def run(self, what: str, fn: Callable[[vici.Session], T]) -> T:
        """``fn(session)``; a session left from before a charon restart fails on first use
        (broken pipe), so one failure on a reused session reconnects and tries once more."""
        reused = self._session is not None
        try:
            try:
                return fn(self._connect())
            except (BrokenPipeError, ConnectionResetError):
                if not reused:
                    raise
                self.close()
                return fn(self._connect())
        except vici.exception.CommandException as exc:
            raise ViciError(f"charon {what}: {_one_line(exc)}") from None
        except (OSError, vici.exception.SessionException, vici.exception.DeserializationException) as exc:
            self.close()
            raise CharonUnreachable(f"charon {what}: VICI socket {self.path}: {_one_line(exc)}") from None

    def _connect(self) -> vici.Session:
        if self._session is None:
            self._session = vici_session(self.path, timeout=30.0)
        return self._session

    def close(self) -> None:
        if self._session is not None:
            self._session.transport.close()
            self._session = None


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text.removeprefix("Command failed: ")


class ViciClient:
    """Async methods over our private charon's VICI socket."""

    def __init__(self, path: Path, thread: DedicatedThread[ViciLink] | None = None) -> None:
        self.path = Path(path)
        self._thread = thread or DedicatedThread(f"vici:{self.path.name}", lambda: ViciLink(self.path), ViciLink.close)

    async def aclose(self) -> None:
        """Close the session and end the thread (its queued calls finish first)."""
        await trio.to_thread.run_sync(self._thread.close)

    async def _run(self, what: str, fn: Callable[[vici.Session], T]) -> T:
        return await self._thread.call(lambda link: link.run(what, fn))

    async def version(self) -> dict[str, str]:
        reply = await self._run("version", lambda s: s.version())
        return {k: _text(v) for k, v in reply.items()}

    async def started(self) -> tuple[int, int]:
        """Which charon answers: tells a restarted charon from the same one. charon binds a new
        VICI socket at every start, so the socket file's inode and change time identify the
        instance (``stats``' uptime "since" does not: it is computed from two clocks at second
        resolution and moves by a second between calls)."""
        await self._run("stats", lambda s: s.stats())  # charon answers (else CharonUnreachable)
        try:
            info = self.path.stat()
        except OSError as exc:
            raise CharonUnreachable(f"charon stats: VICI socket {self.path}: {exc.strerror}") from None
        return info.st_ino, info.st_ctime_ns

    async def load_shared(self, key: SharedKey) -> None:
        await self._run(f"load-shared {key.id}", lambda s: s.load_shared(key.to_vici()))

    async def unload_shared(self, key_id: str) -> None:
        await self._run(f"unload-shared {key_id}", lambda s: s.unload_shared({"id": key_id}))

    async def shared_ids(self) -> list[str]:
        reply = await self._run("get-shared", lambda s: s.get_shared())
        return list(_texts(reply.get("keys")))

    async def load_conn(self, conn: ConnSpec | Mapping[str, Any]) -> None:
        message = conn.to_vici() if isinstance(conn, ConnSpec) else dict(conn)
        await self._run(f"load-conn {', '.join(message)}", lambda s: s.load_conn(message))

    async def unload_conn(self, name: str) -> None:
        await self._run(f"unload-conn {name}", lambda s: s.unload_conn({"name": name}))

    async def list_conns(self) -> list[LoadedConn]:
        def run(s: vici.Session) -> list[LoadedConn]:
            return [_loaded_conn(name, body) for item in s.list_conns() for name, body in item.items()]
        return await self._run("list-conns", run)

    async def list_sas(self) -> list[IkeSa]:
        def run(s: vici.Session) -> list[IkeSa]:
            return [_ike_sa(name, body) for item in s.list_sas() for name, body in item.items()]
        return await self._run("list-sas", run)

    async def initiate(self, conn: str, child: str) -> None:
        """Start negotiating ``child`` of ``conn`` and return at once (``timeout -1``): the result
        shows up in :meth:`list_sas`; kernel-libipsec needs this (its trap policies never fire)."""
        message = {"ike": conn, "child": child, "timeout": "-1", "init-limits": "no"}
        await self._run(f"initiate {conn}", lambda s: list(s.initiate(message)))

    async def terminate(self, conn: str, child: str | None = None) -> None:
        message = {"ike": conn, "timeout": "-1", **({"child": child} if child else {})}
        await self._run(f"terminate {conn}", lambda s: list(s.terminate(message)))

    async def terminate_ike_sa(self, uniqueid: str) -> None:
        """End one IKE_SA by its unique id (also one still half open, which has no connection name yet)."""
        message = {"ike-id": uniqueid, "timeout": "-1"}
        await self._run(f"terminate IKE_SA #{uniqueid}", lambda s: list(s.terminate(message)))

    async def check_esp_proposal(self, proposal: str) -> None:
        """Ask charon whether it can parse ``proposal`` (its keyword table includes the loaded
        crypto plugins): load a throwaway connection with it and unload it again. A one-line
        ``ConfigError`` when charon refuses it; no peer connection is touched."""
        message = {PROPOSAL_CHECK_CONN: {
            "version": "2", "local_addrs": ["192.0.2.1"], "remote_addrs": ["192.0.2.2"],
            "local": {"auth": "psk"}, "remote": {"auth": "psk"},
            "children": {"check": {"esp_proposals": [proposal], "start_action": "none"}}}}
        try:
            await self.load_conn(message)
        except ViciError as exc:
            if "esp_proposals" in str(exc):
                raise ConfigError(f"ipsec: ESPProposal {proposal!r} is not a proposal charon accepts; "
                                  "see strongSwan's proposal keywords (e.g. aes128gcm16-sha256-prfsha256-ecp256)"
                                  ) from None
            raise
        await self.unload_conn(PROPOSAL_CHECK_CONN)
