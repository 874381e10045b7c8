"""Which devices overlay made on this node, recorded in the state dir for ``overlay-core cleanup``.

What: ``state_dir/devices.json`` lists ``{"name", "kind"}`` of every device a backend has owned
(``Links.own``), merged across agent runs. Why: cleanup runs without the agent and without
knowing which backend made what; it deletes a recorded device only while a device of that name
and kind exists, so a device someone else made under another kind is never touched. The record
is written off the event loop (``Links.save_record``), only when something new was owned.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass

from ..services.files import atomic_write

LOGGER = logging.getLogger("overlay.links")

FILE_NAME = "devices.json"


@dataclass(frozen=True, order=True)
class RecordedDevice:
    name: str
    kind: str


def read_record(path: str | os.PathLike[str]) -> list[RecordedDevice]:
    """The recorded devices; a missing file is none, an unreadable one is logged and ignored."""
    try:
        with open(path, encoding="utf-8") as fh:
            data = json.load(fh)
        return sorted({RecordedDevice(str(d["name"]), str(d["kind"])) for d in data["devices"]})
    except FileNotFoundError:
        return []
    except (OSError, ValueError, KeyError, TypeError) as exc:
        LOGGER.warning("ignoring the unreadable device record %s: %s", path, exc)
        return []


def merge_record(path: str | os.PathLike[str], devices: set[RecordedDevice]) -> None:
    """Add ``devices`` to the record at ``path`` (blocking: run it in a thread)."""
    merged = set(read_record(path)) | devices
    body = {"devices": [{"name": d.name, "kind": d.kind} for d in sorted(merged)]}
    atomic_write(path, json.dumps(body, indent=1) + "\n", 0o644)
