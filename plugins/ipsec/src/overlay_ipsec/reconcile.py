"""A local stand-in for core's ``converge(target, desired)`` (RUNTIME-API.md), so the targets
can be driven and tested before the backend runtime lands; replaced by core's, same semantics:
diff by ``key``, a dumped object the target owns but nobody desires is deleted, a desired object
missing or with another value (same key) is set."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any


async def converge(target: Any, desired: Iterable[Any]) -> tuple[int, int, int]:
    """Bring ``target`` to the objects of ``desired`` it accepts; (set, deleted, failed)."""
    want = {obj.key: obj for obj in desired if target.accepts(obj)}
    have = {obj.key: obj for obj in await target.dump() if target.owns(obj)}
    to_set = [obj for key, obj in want.items() if have.get(key) != obj]
    to_delete = [obj for key, obj in have.items() if key not in want]
    failed = await target.apply(to_set, to_delete)
    return len(to_set), len(to_delete), failed
