"""Peers connected by shell commands, as a reconcile target.

Desired state: every accepted peer is *added* (its SubnetAddCommand succeeded). Actual state:
the peers whose add command succeeded and whose remove command has not yet succeeded, as this
target recorded them; a shell script cannot be asked what it did, so this record is the only
"dump" there is (drift behind the commands' back is invisible). Core's reconcile diffs the two,
which gives the behaviour Flannel lacks: an add that failed is run again on every reconcile
until it succeeds, a removal that failed likewise. A peer whose data changed (new public IP or
BackendData) gets the remove command with its old data (best effort), then the add command
with the new. A peer that never got added is forgotten without a remove command.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

import trio
from overlay_core import Lease

from .commands import CommandResult, run_command, stdin_of, text
from .options import ExtensionOptions

if TYPE_CHECKING:
    from .record import ConnectedRecord

LOGGER = logging.getLogger("overlay.extension")
Runner = Callable[[str, Mapping[str, str], str], Awaitable[CommandResult]]


@dataclass(frozen=True)
class PeerCommand:
    """A peer as SubnetAdd/RemoveCommand see it: their variables and stdin (keyed by lease key)."""

    key: str
    subnet: str
    ipv6_subnet: str
    public_ip: str
    public_ipv6: str
    stdin: str
    kind: ClassVar[str] = "subnet"

    @classmethod
    def of(cls, peer: Lease) -> PeerCommand:
        """``ValueError`` (a reason) when the peer's BackendData is not an extension node's string."""
        attrs = peer.attrs
        return cls(peer.key, text(peer.subnet), text(peer.ipv6_subnet), text(attrs.public_ip),
                   text(attrs.public_ipv6), stdin_of(attrs.backend_data))

    def env(self) -> dict[str, str]:
        """SUBNET and PUBLIC_IP as Flannel sets them; IPV6SUBNET and PUBLIC_IPV6 as its docs promise."""
        return {"SUBNET": self.subnet, "IPV6SUBNET": self.ipv6_subnet, "PUBLIC_IP": self.public_ip,
                "PUBLIC_IPV6": self.public_ipv6}

    def describe(self) -> str:
        nets = " ".join(n for n in (self.subnet, self.ipv6_subnet) if n)
        return f"{nets} at {self.public_ip or self.public_ipv6 or '-'}"


@dataclass
class Failure:
    """The last failure of a peer's command: which one, how many times in a row, how it ended."""

    option: str
    attempts: int
    summary: str


class CommandTarget:
    """The ``extension`` reconcile target: runs SubnetAddCommand and SubnetRemoveCommand."""

    name = "extension"

    def __init__(self, options: ExtensionOptions, run: Runner = run_command,
                 record: ConnectedRecord | None = None) -> None:
        self.options = options
        self.run = run
        self.record = record
        self.added: dict[str, PeerCommand] = {}
        self.failing: dict[str, Failure] = {}
        self._lock = trio.Lock()  # one change at a time: a reconcile and a peer event never interleave

    def accepts(self, obj: Any) -> bool:
        return isinstance(obj, PeerCommand)

    def owns(self, obj: Any) -> bool:
        return isinstance(obj, PeerCommand)

    async def dump(self) -> list[PeerCommand]:
        return list(self.added.values())

    def adopt(self, previous: Mapping[str, PeerCommand], desired: Mapping[str, PeerCommand]) -> None:
        """Take over the peers a previous agent connected that are gone or changed, so that the next
        converge runs their remove command; the others are left to their add command, which runs again."""
        stale = {key: old for key, old in previous.items() if desired.get(key) != old and key not in self.added}
        if stale:
            LOGGER.info("extension: %d peers connected before this start are gone or changed: their "
                        "SubnetRemoveCommand runs now", len(stale))
        self.added.update(stale)

    async def apply(self, to_set: list[PeerCommand], to_delete: list[PeerCommand]) -> int:
        """Remove, then add; returns how many commands failed (each logged; the next reconcile retries)."""
        failed = 0
        async with self._lock:
            for obj in to_delete:
                old = self.added.get(obj.key)
                if old is None:  # never added (its add kept failing): nothing to undo
                    self.failing.pop(obj.key, None)
                elif await self._run("SubnetRemoveCommand", self.options.subnet_remove, old):
                    del self.added[obj.key]
                else:
                    failed += 1
            for obj in to_set:
                old = self.added.get(obj.key)
                if old == obj:  # a peer that came back unchanged before its removal succeeded
                    self.failing.pop(obj.key, None)
                    continue
                if old is not None:  # changed data: undo with the old values, whatever the outcome
                    await self._run("SubnetRemoveCommand", self.options.subnet_remove, old)
                    del self.added[obj.key]
                if await self._run("SubnetAddCommand", self.options.subnet_add, obj):
                    self.added[obj.key] = obj
                else:
                    failed += 1
            if self.record is not None:
                await self.record.save(self.added)
        return failed

    async def _run(self, option: str, command: str, obj: PeerCommand) -> bool:
        """Run one peer command (none configured: success); log a failure in one line."""
        if not command:
            return True
        result = await self.run(command, obj.env(), obj.stdin)
        previous = self.failing.get(obj.key)
        if result.ok:
            self.failing.pop(obj.key, None)
            if previous is not None and previous.option == option:
                LOGGER.info("extension: %s for %s succeeded after %d failed attempts", option, obj.describe(),
                            previous.attempts)
            else:
                LOGGER.debug("extension: %s for %s: %s", option, obj.describe(), result.summary())
            return True
        attempts = previous.attempts + 1 if previous is not None and previous.option == option else 1
        self.failing[obj.key] = Failure(option, attempts, result.summary())
        if attempts & (attempts - 1) == 0:  # attempts 1, 2, 4, 8…: a command failing for days stays quiet
            LOGGER.warning("extension: %s for %s failed (attempt %d; retried at every reconcile): %s",
                           option, obj.describe(), attempts, result.summary())
        return False
