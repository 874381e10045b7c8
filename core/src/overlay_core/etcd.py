"""The etcd v3 store, through pyetcd (etcd-sdk-python) with the hardening it needs.

pyetcd is a blocking gRPC client, so every call runs in a worker thread and never on the
trio loop. Hardening (reference/dependency-probe.md §1.4): explicit timeouts on every call,
gRPC keepalive with a short HTTP/2 ping timeout (a hung server is noticed in seconds), failed
endpoints retried after one second instead of five minutes, fail-over between endpoints, and
every error turned into ``StoreUnavailable`` or ``WatchCompacted`` for the caller to handle.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import NamedTuple
from urllib.parse import urlsplit

import grpc
import trio

from .errors import StoreError
from .retry import Backoff, OutageLog

LOGGER = logging.getLogger("overlay.etcd")

RPC_TIMEOUT = 5.0
ENDPOINT_RETRY = 1.0
GRPC_OPTIONS = [
    ("grpc.keepalive_time_ms", 6000),
    ("grpc.keepalive_timeout_ms", 3000),
    ("grpc.http2.ping_timeout_ms", 3000),
    ("grpc.keepalive_permit_without_calls", 1),
    ("grpc.http2.max_pings_without_data", 0),
    ("grpc.initial_reconnect_backoff_ms", 200),
    ("grpc.max_reconnect_backoff_ms", 2000),
]


class StoreUnavailable(StoreError):
    """etcd did not answer (down, unreachable, timed out, auth refused)."""


class WatchCompacted(Exception):
    """The watch start revision is older than etcd's compaction horizon."""

    def __init__(self, revision: int) -> None:
        super().__init__(f"revision compacted at {revision}")
        self.revision = revision


@dataclass(frozen=True)
class KV:
    key: str
    value: bytes
    mod_revision: int
    lease_id: int = 0


@dataclass(frozen=True)
class WatchEvent:
    """One change under a watched prefix: ``value`` is None for a deletion."""

    key: str
    value: bytes | None
    mod_revision: int
    lease_id: int = 0


class WatchResponse(NamedTuple):
    """One answer of a watch: etcd's header revision, its events, and when the agent received it
    (trio clock; the start of the event-to-programmed latency)."""

    revision: int
    events: list[WatchEvent]
    received: float


@dataclass(frozen=True)
class EtcdOptions:
    endpoints: tuple[str, ...] = ("http://127.0.0.1:2379",)
    cafile: str = ""
    certfile: str = ""
    keyfile: str = ""
    username: str = ""
    password: str = field(default="", repr=False)
    timeout: float = RPC_TIMEOUT

    def check_files(self) -> None:
        """Raise a one-line ``StoreError`` for a TLS file that cannot be read."""
        for flag, path in (
            ("--etcd-cafile", self.cafile),
            ("--etcd-certfile", self.certfile),
            ("--etcd-keyfile", self.keyfile),
        ):
            if path and not os.access(path, os.R_OK):
                raise StoreError(f"{flag} {path}: file does not exist or is not readable")
        if bool(self.certfile) != bool(self.keyfile):
            raise StoreError("--etcd-certfile and --etcd-keyfile must be given together")
        if bool(self.username) != bool(self.password):
            raise StoreError("--etcd-username and --etcd-password must be given together")

    @property
    def secure(self) -> bool:
        return bool(self.certfile) or any(e.startswith("https://") for e in self.endpoints)

    def label(self) -> str:
        return ",".join(self.endpoints)


def _split_endpoint(url: str) -> tuple[str, int]:
    parts = urlsplit(url if "://" in url else f"http://{url}")
    try:
        port = parts.port or 2379
    except ValueError:
        port = 0
    if not parts.hostname or not port or parts.scheme not in ("http", "https"):
        raise StoreError(f"--etcd-endpoints: {url!r} is not a URL like http://192.0.2.100:2379")
    return parts.hostname, port


def _describe(exc: BaseException) -> str:
    if isinstance(exc, grpc.RpcError):
        return f"{exc.code().name}: {exc.details()}"  # type: ignore[attr-defined]
    text = str(exc) or type(exc).__name__
    return "no endpoint answered recently" if "failed node" in text else text


class EtcdStore:
    """Thin async facade over pyetcd. All methods raise ``StoreUnavailable`` on failure."""

    def __init__(self, options: EtcdOptions) -> None:
        options.check_files()
        for url in options.endpoints:
            _split_endpoint(url)
        self.options = options
        self._client = None
        self._lock = threading.Lock()
        self._limiter = trio.CapacityLimiter(4)
        self.connected: bool | None = None  # None until the first call answers or fails
        self.since = time.time()  # when ``connected`` last changed (Unix time)
        self.on_state: Callable[[bool], None] | None = None
        self.revision = 0  # the latest store revision any answer (range, put, watch) carried

    def saw(self, revision: int) -> None:
        """Record a store revision from an answer's header: how far the store is, for watch lag."""
        self.revision = max(self.revision, revision)

    def note(self, ok: bool) -> None:
        """Record that etcd answered (``ok``) or failed; every call does, and so does the watch."""
        if ok != self.connected:
            self.connected = ok
            self.since = time.time()
            if self.on_state is not None:
                self.on_state(ok)

    def state(self) -> dict:
        """The connection as ``/readyz`` shows it."""
        return {"connected": bool(self.connected), "since": round(self.since, 3),
                "endpoints": self.options.label(), "revision": self.revision}

    # -- client construction -------------------------------------------------------------

    def _build(self):  # runs in a worker thread (auth does an RPC)
        import pyetcd

        creds = None
        if self.options.secure:
            def read(path: str) -> bytes | None:
                if not path:
                    return None
                with open(path, "rb") as fh:
                    return fh.read()

            creds = grpc.ssl_channel_credentials(
                read(self.options.cafile), read(self.options.keyfile), read(self.options.certfile)
            )
        endpoints = [
            pyetcd.Endpoint(
                host,
                port,
                secure=self.options.secure,
                creds=creds,
                time_retry=ENDPOINT_RETRY,
                opts=GRPC_OPTIONS,
            )
            for host, port in map(_split_endpoint, self.options.endpoints)
        ]
        client = pyetcd.MultiEndpointEtcd3Client(
            endpoints=endpoints,
            timeout=self.options.timeout,
            user=self.options.username or None,
            password=self.options.password or None,
            failover=True,
        )
        if not self.options.secure:
            # gRPC refuses call credentials on a plaintext channel; the token also travels as
            # request metadata, which is all etcd needs.
            client.call_credentials = None
        return client

    def _client_sync(self):
        with self._lock:
            if self._client is None:
                self._client = self._build()
            return self._client

    def _reset(self) -> None:
        with self._lock:
            client, self._client = self._client, None
        if client is not None:
            try:
                client.close()
            except Exception:  # closing a broken channel may itself fail
                pass

    def _run(self, fn, *args):
        """Run ``fn(client, *args)`` in this thread, mapping every failure to StoreUnavailable."""
        from pyetcd import exceptions as etcd_exc

        try:
            return fn(self._client_sync(), *args)
        except (grpc.RpcError, etcd_exc.Etcd3Exception, ValueError) as exc:
            if isinstance(exc, grpc.RpcError) and exc.code() in (  # type: ignore[attr-defined]
                grpc.StatusCode.UNAUTHENTICATED,
                grpc.StatusCode.PERMISSION_DENIED,
            ):
                self._reset()
            if isinstance(exc, grpc.RpcError) and exc.code() == grpc.StatusCode.UNAVAILABLE:  # type: ignore[attr-defined]
                client = self._client
                if client is not None:
                    client.endpoint_in_use.fail()
            raise StoreUnavailable(
                f"etcd at {self.options.label()} is not usable: {_describe(exc)}"
            ) from None

    async def _call(self, fn, *args):
        try:
            result = await trio.to_thread.run_sync(
                self._run, fn, *args, abandon_on_cancel=True, limiter=self._limiter
            )
        except StoreUnavailable:
            self.note(False)
            raise
        self.note(True)
        return result

    def close(self) -> None:
        self._reset()

    def endpoint_in_use(self) -> str | None:
        """The endpoint the client talks to now (``http://192.0.2.100:2379``); None before the first call."""
        client = self._client
        endpoint = client.endpoint_in_use if client is not None else None
        return f"{endpoint.protocol}://{endpoint.netloc}" if endpoint is not None else None

    # -- key/value -----------------------------------------------------------------------

    async def get(self, key: str) -> KV | None:
        def op(c):
            value, meta = c.get(key)
            if meta is None:
                return None
            return KV(key, value, meta.mod_revision, meta.lease_id)

        return await self._call(op)

    async def range(self, prefix: str) -> tuple[int, list[KV]]:
        """All keys under ``prefix`` in one range read, with the read's revision."""

        def op(c):
            resp = c.get_prefix_response(prefix)
            kvs = [KV(kv.key.decode(), kv.value, kv.mod_revision, kv.lease) for kv in resp.kvs]
            return resp.header.revision, kvs

        revision, kvs = await self._call(op)
        self.saw(revision)
        return revision, kvs

    async def put(self, key: str, value: str | bytes, lease_id: int = 0) -> int:
        def op(c):
            from pyetcd import leases

            lease = leases.Lease(lease_id, 0, c) if lease_id else None
            return c.put(key, value, lease=lease).header.revision

        revision = await self._call(op)
        self.saw(revision)
        return revision

    async def delete(self, key: str, expect_revision: int | None = None) -> bool:
        """Delete ``key``; with ``expect_revision`` only if it still has that mod revision."""

        def op(c):
            if expect_revision is None:
                return c.delete(key)
            ok, _ = c.transaction(
                compare=[c.transactions.mod(key) == expect_revision],
                success=[c.transactions.delete(key)],
                failure=[],
            )
            return ok

        return await self._call(op)

    async def write_if(
        self, key: str, value: str, expect_revision: int, lease_id: int = 0
    ) -> tuple[bool, KV | None]:
        """Put ``key`` only if its mod revision is ``expect_revision`` (0: only if absent).

        Returns ``(True, new KV)`` on success, else ``(False, current KV or None)``.
        """

        def op(c):
            from pyetcd import leases

            lease = leases.Lease(lease_id, 0, c) if lease_id else None
            compare = (
                c.transactions.version(key) == 0
                if expect_revision == 0
                else c.transactions.mod(key) == expect_revision
            )
            ok, responses = c.transaction(
                compare=[compare],
                success=[c.transactions.put(key, value, lease=lease)],
                failure=[c.transactions.get(key)],
            )
            if ok:
                rev = responses[0].response_put.header.revision
                return True, KV(key, value.encode(), rev, lease_id)
            current = responses[0] if responses else []
            if not current:
                return False, None
            cur_value, meta = current[0]
            return False, KV(key, cur_value, meta.mod_revision, meta.lease_id)

        ok, kv = await self._call(op)
        if ok and kv is not None:
            self.saw(kv.mod_revision)
        return ok, kv

    # -- leases --------------------------------------------------------------------------

    async def grant(self, ttl: int) -> int:
        return await self._call(lambda c: c.lease(ttl).id)

    async def revoke(self, lease_id: int) -> None:
        await self._call(lambda c: c.revoke_lease(lease_id))

    async def keepalive(self, lease_id: int) -> int:
        """Refresh an etcd lease; returns its new TTL, 0 when the lease no longer exists."""

        def op(c):
            for resp in c.refresh_lease(lease_id):
                return max(int(resp.TTL), 0)
            return 0

        return await self._call(op)

    async def time_to_live(self, lease_id: int) -> int:
        """Remaining seconds of an etcd lease; -1 when it does not exist."""
        return await self._call(lambda c: int(c.get_lease_info(lease_id).TTL))

    async def compact(self, revision: int) -> None:
        await self._call(lambda c: c.compact(revision, physical=True))

    # -- watch ---------------------------------------------------------------------------

    async def watch(
        self,
        prefix: str,
        start_revision: int,
        send: trio.MemorySendChannel[WatchResponse],
        *,
        on_created: Callable[[], None] | None = None,
        task_status=trio.TASK_STATUS_IGNORED,
    ) -> None:
        """Stream a ``WatchResponse`` per answer for ``prefix`` from ``start_revision`` into ``send``.

        Returns only by raising: ``WatchCompacted`` when etcd compacted past
        ``start_revision``, ``StoreUnavailable`` when the stream broke. Cancellation stops the
        worker thread promptly (pyetcd's cancel callback unblocks its iterator).
        """
        from pyetcd import events as etcd_events
        from pyetcd import exceptions as etcd_exc

        def start(c):
            try:
                return c.watch_prefix_response(prefix, start_revision=start_revision)
            except etcd_exc.RevisionCompactedError as exc:
                return exc

        started = await self._call(start)
        if isinstance(started, etcd_exc.RevisionCompactedError):
            raise WatchCompacted(started.compacted_revision)
        iterator, cancel = started
        if on_created is not None:
            on_created()  # etcd answered: connected, even if no event comes for a long time
        task_status.started()

        def convert(resp) -> tuple[int, list[WatchEvent]]:
            out = []
            for ev in resp.events:
                deleted = isinstance(ev, etcd_events.DeleteEvent)
                out.append(
                    WatchEvent(
                        ev.key.decode(),
                        None if deleted else ev.value,
                        ev.mod_revision,
                        0 if deleted else ev.lease,
                    )
                )
            return resp.header.revision, out

        async def forward(response: tuple[int, list[WatchEvent]]) -> None:
            self.saw(response[0])  # before queueing: a response waiting in the channel counts as lag
            await send.send(WatchResponse(*response, trio.current_time()))

        def pump() -> BaseException | None:
            try:
                for resp in iterator:
                    trio.from_thread.run(forward, convert(resp))
            except trio.Cancelled:
                raise
            except etcd_exc.RevisionCompactedError as exc:
                return WatchCompacted(exc.compacted_revision)
            except (grpc.RpcError, etcd_exc.Etcd3Exception, ValueError) as exc:
                return StoreUnavailable(f"etcd watch on {prefix} broke: {_describe(exc)}")
            return StoreUnavailable(f"etcd watch on {prefix} ended")

        async with trio.open_nursery() as nursery:

            async def canceller() -> None:
                try:
                    await trio.sleep_forever()
                finally:
                    try:
                        cancel()
                    except Exception:  # a failed endpoint refuses the cancel request
                        pass

            nursery.start_soon(canceller)
            error = await trio.to_thread.run_sync(pump)
            nursery.cancel_scope.cancel()
        if error is not None:
            raise error


STORE_BACKOFF_START = 0.2
STORE_BACKOFF_MAX = 5.0


async def retry_store(what: str, fn, rand=None):
    """``await fn()`` until etcd answers: jittered backoff from 0.2 s to 5 s, the outage logged
    when it starts, every 30 s and when it ends. Never raises ``StoreUnavailable``."""
    backoff = Backoff(STORE_BACKOFF_START, STORE_BACKOFF_MAX, rand=rand)
    outage = OutageLog(LOGGER, what)
    while True:
        try:
            result = await fn()
        except StoreUnavailable as exc:
            outage.failed(exc)
            await backoff.sleep()
            continue
        outage.recovered()
        return result
