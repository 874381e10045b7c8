"""The connected peers, kept in the agent's state directory across restarts.

Why: a peer that leaves while the agent is down must still get its SubnetRemoveCommand, with
the data its add command was given; only the previous agent knew that. At start the record
says which peers were connected; the backend then treats those that are gone (or whose data
changed) as connected, so the first reconcile runs their remove command, and lets every other
peer's add command run again (the start-up commands may have undone what it did).
"""

from __future__ import annotations

import dataclasses
import json
import logging
from pathlib import Path

import trio
from overlay_core.services import atomic_write

from .target import PeerCommand

LOGGER = logging.getLogger("overlay.extension")
VERSION = 1


def _read(path: Path) -> dict[str, PeerCommand]:
    try:
        data = json.loads(path.read_text())
        peers = [PeerCommand(**entry) for entry in data["peers"]] if data.get("version") == VERSION else []
    except FileNotFoundError:
        return {}
    except (OSError, ValueError, TypeError, KeyError, AttributeError) as exc:
        LOGGER.warning("extension: ignoring the record of connected peers %s (%s): peers that left while "
                       "the agent was down get no SubnetRemoveCommand", path, type(exc).__name__)
        return {}
    return {peer.key: peer for peer in peers}


def _encode(peers: dict[str, PeerCommand]) -> str:
    entries = [dataclasses.asdict(peer) for _, peer in sorted(peers.items())]
    return json.dumps({"version": VERSION, "peers": entries}, indent=1)


class ConnectedRecord:
    """``<state-dir>/extension/connected.json``: read once, rewritten after every change (atomically)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._written: str | None = None

    async def load(self) -> dict[str, PeerCommand]:
        return await trio.to_thread.run_sync(_read, self.path)

    async def save(self, peers: dict[str, PeerCommand]) -> None:
        text = _encode(peers)
        if text != self._written:
            await trio.to_thread.run_sync(atomic_write, self.path, text, 0o600)
            self._written = text
