"""Generic netlink requests (a family such as ``wireguard``) on the agent's netlink thread.

A backend builds its family's messages itself (it knows their attributes); core owns the socket:
one pyroute2 ``GenericNetlinkSocket`` per family, opened on the netlink thread at first use and
closed with it, so requests are serialised with every other netlink call and never run on the
trio loop. The family id is only known once the socket is bound, so a request is a function
``build(family_id) -> messages``; it runs on the netlink thread too.
"""

from __future__ import annotations

import errno as errnos
import os
from collections.abc import Callable, Sequence
from typing import Any

from .._lean import import_part
from ..errors import KernelFeatureMissingError, OverlayError


class GenericNetlinkError(OverlayError):
    """The kernel refused a generic netlink request; ``errno`` says why."""

    def __init__(self, message: str, errno: int | None = None) -> None:
        super().__init__(message)
        self.errno = errno


def open_family(family: str, message_class: type) -> Any:
    """A generic netlink socket bound to ``family`` (on the calling thread: the netlink thread).
    A kernel without the family is a one-line ``KernelFeatureMissingError``."""
    netlink, generic = import_part("pyroute2", "netlink.exceptions", "netlink.generic")
    sock = generic.GenericNetlinkSocket()
    sock.asyncore.module_err_level = "debug"  # our own one-line error says it (pyroute2 logs two lines)
    try:
        sock.bind(family, message_class)
    except netlink.NetlinkError as exc:
        sock.close()
        if exc.code == errnos.ENOENT:
            raise KernelFeatureMissingError(
                f"this kernel has no generic netlink family {family!r} (its module is not loaded): "
                f"load it with 'modprobe {family}' or choose another backend") from None
        raise GenericNetlinkError(f"generic netlink {family}: {os.strerror(exc.code)}", exc.code) from None
    except BaseException:
        sock.close()
        raise
    return sock


def send(sock: Any, family: str, messages: Sequence[Any]) -> list[Any]:
    """Send each message with its own header flags and collect every reply (ACKs and dump
    parts). The first refusal stops the batch: a ``GenericNetlinkError`` naming the errno, never
    the message (it may carry a key)."""
    netlink = import_part("pyroute2", "netlink.exceptions")[0]
    replies: list[Any] = []
    for n, msg in enumerate(messages):
        try:
            replies.extend(sock.nlm_request(msg, msg_type=sock.prid, msg_flags=msg["header"]["flags"]))
        except netlink.NetlinkError as exc:
            done = f" ({n} of {len(messages)} messages applied)" if n else ""
            raise GenericNetlinkError(f"generic netlink {family}: {os.strerror(exc.code)}{done}", exc.code) from None
    return replies


class GenericFamily:
    """Requests to one generic netlink family through the agent's netlink thread
    (``services.links.generic(family, message_class)``)."""

    def __init__(self, netlink: Any, family: str, message_class: type) -> None:
        self.netlink = netlink
        self.family = family
        self.message_class = message_class

    def __repr__(self) -> str:
        return f"GenericFamily({self.family!r})"

    async def request(self, build: Callable[[int], Sequence[Any]]) -> list[Any]:
        """Run ``build(family_id)`` and send its messages in order on the netlink thread; the
        replies (decoded with ``message_class``). Raises ``GenericNetlinkError`` or, without the
        family in the kernel, ``KernelFeatureMissingError``."""

        def run(ipr: Any) -> list[Any]:
            sock = self.netlink.family_socket(self.family, self.message_class)
            return send(sock, self.family, build(sock.prid))

        return await self.netlink.call(run)
