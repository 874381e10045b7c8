"""A value that must never be printed: str(), repr() and format() give '***'.

Same contract as core's planned ``overlay_core.services.Secret``; this module goes when core ships it.
"""

from __future__ import annotations


class Secret:
    """Holds a credential. ``reveal()`` is the only way to read it; equality compares values."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        return self._value

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash((Secret, self._value))

    def __repr__(self) -> str:
        return "'***'"

    def __str__(self) -> str:
        return "***"

    def __format__(self, spec: str) -> str:
        return "***"
