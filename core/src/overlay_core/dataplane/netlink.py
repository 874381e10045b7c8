"""One dedicated OS thread owns the pyroute2 ``IPRoute`` socket; trio awaits its results.

pyroute2 keeps per-thread sockets and event loops, so calling it from trio's thread pool
would open a socket per worker thread. Every request goes to a single ``DedicatedThread``
(reference/dependency-probe.md §2.4); only rtnetlink and pyroute2's logging setup are
imported, not all of pyroute2 (see ``_lean``). Generic netlink sockets (``genl``) live on the
same thread, one per family, opened at first use and closed with the thread.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

from .._lean import import_part
from ..services.threads import DedicatedThread

T = TypeVar("T")


def _open_iproute() -> Any:
    _, linux = import_part("pyroute2", "config.log", "iproute.linux")
    return linux.IPRoute()


class Netlink:
    """Run blocking pyroute2 calls on one thread: ``await nl.call(lambda ipr: ipr.get_links())``.

    A request runs to completion even if the caller is cancelled meanwhile, so the kernel never
    sees half of an operation the agent thinks was not sent.
    """

    def __init__(self) -> None:
        self._thread: DedicatedThread[Any] = DedicatedThread("overlay-netlink", _open_iproute, self._close)
        self._families: dict[str, Any] = {}  # touched only on the netlink thread

    async def call(self, fn: Callable[[Any], T]) -> T:
        """Run ``fn(ipr)`` on the netlink thread and return its result (or raise its error)."""
        return await self._thread.call(fn)

    def family_socket(self, family: str, message_class: type) -> Any:
        """The generic netlink socket of ``family``, bound at first use; call it only from a
        function running on the netlink thread (``genl.GenericFamily`` does)."""
        sock = self._families.get(family)
        if sock is None:
            from .genl import open_family

            sock = self._families[family] = open_family(family, message_class)
        return sock

    def close(self) -> None:
        self._thread.close()

    def _close(self, ipr: Any) -> None:
        for sock in self._families.values():
            sock.close()
        self._families.clear()
        ipr.close()
