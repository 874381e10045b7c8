"""A value that must never be printed: the IPsec pre-shared key.

Shaped like ``overlay_core.services.Secret`` of the backend runtime (RUNTIME-API.md) so the
import can switch to core's class without other changes.
"""

from __future__ import annotations


class Secret:
    """Holds a secret; ``str``, ``repr`` and ``format`` give ``***``, ``reveal()`` the value."""

    __slots__ = ("_value",)

    def __init__(self, value: str | bytes) -> None:
        self._value = value

    def reveal(self) -> str | bytes:
        return self._value

    def __str__(self) -> str:
        return "***"

    __repr__ = __str__

    def __format__(self, spec: str) -> str:
        return "***"

    def __len__(self) -> int:
        return len(self._value)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(self._value)

    def __reduce__(self):  # pickling would write the value somewhere we do not control
        raise TypeError("a Secret cannot be pickled")
