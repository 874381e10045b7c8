"""One dedicated OS thread owns the pyroute2 ``IPRoute`` socket; trio awaits its results.

pyroute2 keeps per-thread sockets and event loops, so calling it from trio's thread pool
would open a socket per worker thread. Here every request is queued to a single thread
(reference/dependency-probe.md §2.4) and the trio caller awaits an event set from that thread.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable
from typing import Any, TypeVar

import trio

from ..leanimport import import_part

T = TypeVar("T")


class Netlink:
    """Run blocking pyroute2 calls on one thread: ``await nl.call(lambda ipr: ipr.get_links())``."""

    def __init__(self) -> None:
        self._queue: queue.SimpleQueue = queue.SimpleQueue()
        self._thread: threading.Thread | None = None

    def _start(self) -> None:
        # only rtnetlink and pyroute2's logging setup, not all of pyroute2 (see leanimport)
        _, linux = import_part("pyroute2", "config.log", "iproute.linux")
        IPRoute = linux.IPRoute  # noqa: N806

        ready = threading.Event()
        box: list[Any] = []

        def run() -> None:
            try:
                ipr = IPRoute()
            except Exception as exc:  # reported to the first caller
                box.append(exc)
                ready.set()
                return
            ready.set()
            try:
                while (item := self._queue.get()) is not None:
                    fn, token, done, result = item
                    try:
                        result.append((True, fn(ipr)))
                    except BaseException as exc:  # handed back to the trio caller
                        result.append((False, exc))
                    token.run_sync_soon(done.set)
            finally:
                ipr.close()

        self._thread = threading.Thread(target=run, name="overlay-netlink", daemon=True)
        self._thread.start()
        ready.wait()
        if box:
            self._thread = None
            raise box[0]

    async def call(self, fn: Callable[[Any], T]) -> T:
        """Run ``fn(ipr)`` on the netlink thread and return its result (or raise its error).

        The request runs to completion even if the caller is cancelled meanwhile, so the
        kernel never sees half of an operation the agent thinks was not sent.
        """
        if self._thread is None:
            self._start()
        done = trio.Event()
        result: list[tuple[bool, Any]] = []
        self._queue.put((fn, trio.lowlevel.current_trio_token(), done, result))
        with trio.CancelScope(shield=True):
            await done.wait()
        ok, value = result[0]
        if not ok:
            raise value
        return value

    def close(self) -> None:
        if self._thread is not None:
            self._queue.put(None)
            self._thread.join(timeout=2)
            self._thread = None
