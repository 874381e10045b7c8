"""One desired-vs-actual machinery for everything a backend programs.

A *target* is anything with desired and actual state: the kernel's routes, neighbours and FDB
entries; a WireGuard device's peers; charon's connections; a cloud route table. Its objects are
hashable values with a ``key`` (what identifies the object: a route's destination, a peer's
public key): two objects with one key and other values mean "replace". ``converge`` makes what
the target owns equal to what is desired and counts every repair; cleaning a node is converging
every target to nothing.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Iterable, Sequence
from typing import Any, Protocol, runtime_checkable


@runtime_checkable
class Target(Protocol):
    """What the reconcile machinery needs from a target.

    ``accepts(obj)``: whether a *desired* object is one this target programs (routing a plan's
    objects to targets). ``owns(obj)``: whether an *actual* object (from ``dump``) is this
    target's to manage; anything else is never touched. ``apply`` makes the changes and returns
    how many failed (each failure logged by the target; the next converge retries).
    """

    name: str

    def accepts(self, obj: Any) -> bool: ...

    def owns(self, obj: Any) -> bool: ...

    async def dump(self) -> Iterable[Any]: ...

    async def apply(self, to_set: list[Any], to_delete: list[Any]) -> int: ...


def kind(obj: Any) -> str:
    """The object kind used in metrics and logs (``route``, ``fdbentry``, ``peer``…)."""
    return getattr(obj, "kind", None) or type(obj).__name__.lower()


def diff(desired: Iterable[Any], actual: Iterable[Any], owns: Callable[[Any], bool]) -> tuple[list, list]:
    """``(to_set, to_delete)``: desired objects missing or different, and owned objects not desired.

    Matched by ``key``; a desired object whose key exists with other values is set (replace
    semantics). Identity is checked before equality, so interned objects diff cheaply.
    """
    want: dict[Hashable, Any] = {o.key: o for o in desired}
    have: dict[Hashable, Any] = {o.key: o for o in actual if owns(o)}
    to_set = [o for k, o in want.items() if (h := have.get(k)) is not o and h != o]
    to_delete = [o for k, o in have.items() if k not in want]
    return to_set, to_delete


def split(objects: Iterable[Any], targets: Sequence[Target]) -> list[list[Any]]:
    """The objects each target accepts, in the order of ``targets``."""
    out: list[list[Any]] = [[] for _ in targets]
    for obj in objects:
        for index, target in enumerate(targets):
            if target.accepts(obj):
                out[index].append(obj)
                break
        else:
            raise ValueError(f"no target programs {obj!r}")
    return out


async def apply(targets: Sequence[Target], to_set: Iterable[Any], to_delete: Iterable[Any]) -> int:
    """Incremental changes (a peer event), each object to its target; returns the failures."""
    failures = 0
    for target, sets, deletes in zip(targets, split(to_set, targets), split(to_delete, targets)):
        if sets or deletes:
            failures += await target.apply(sets, deletes)
    return failures


async def converge(target: Target, desired: Iterable[Any], metrics=None) -> tuple[int, int]:
    """Make what ``target`` owns equal ``desired``; returns ``(set, deleted)`` counts and counts
    each repair in ``overlay_reconcile_changes_total{target, object, action}``."""
    to_set, to_delete = diff(desired, await target.dump(), target.owns)
    if to_set or to_delete:
        await target.apply(to_set, to_delete)
        if metrics is not None:
            for objs, action in ((to_set, "set"), (to_delete, "delete")):
                for obj in objs:
                    metrics.repairs.labels(target.name, kind(obj), action).inc()
    return len(to_set), len(to_delete)


async def converge_all(targets: Sequence[Target], desired: Iterable[Any], metrics=None) -> tuple[int, int]:
    """``converge`` every target with its share of ``desired``; ``desired=[]`` cleans up."""
    total_set = total_deleted = 0
    for target, share in zip(targets, split(desired, targets)):
        changed = await converge(target, share, metrics)
        total_set += changed[0]
        total_deleted += changed[1]
    return total_set, total_deleted
