"""Fakes for unit-testing backends without a kernel: a reconcile target that keeps its state
in memory and records every change it is asked to make."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any


class RecordingTarget:
    """A ``reconcile.Target`` whose actual state is a dict by key. ``applied`` lists every
    ``(to_set, to_delete)`` call; ``state`` can be edited by a test to simulate drift."""

    def __init__(self, name: str = "recording", accepts: Callable[[Any], bool] | None = None) -> None:
        self.name = name
        self._accepts = accepts or (lambda obj: True)
        self.state: dict[Any, Any] = {}
        self.applied: list[tuple[list[Any], list[Any]]] = []

    def accepts(self, obj: Any) -> bool:
        return self._accepts(obj)

    def owns(self, obj: Any) -> bool:
        return True

    async def dump(self) -> list[Any]:
        return list(self.state.values())

    async def apply(self, to_set: list[Any], to_delete: list[Any]) -> int:
        self.applied.append((list(to_set), list(to_delete)))
        for obj in to_delete:
            self.state.pop(obj.key, None)
        for obj in to_set:
            self.state[obj.key] = obj
        return 0
