"""A value that must never be printed: a PSK or a private key.

Core will provide ``overlay_core.services.Secret`` with the same interface (``str``/``repr``/
``format`` give ``'***'``, ``.reveal()`` returns the value, equality compares values); this
local one is the single place to swap for it.
"""

from __future__ import annotations

import hmac


class Secret:
    __slots__ = ("_value",)

    def __init__(self, value: str | bytes) -> None:
        self._value = value

    def reveal(self) -> str | bytes:
        return self._value

    def __repr__(self) -> str:
        return "'***'"

    def __str__(self) -> str:
        return "***"

    def __format__(self, spec: str) -> str:
        return "***"

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Secret):
            return NotImplemented
        a, b = self._value, other._value
        if type(a) is not type(b):
            return False
        return hmac.compare_digest(a.encode() if isinstance(a, str) else a, b.encode() if isinstance(b, str) else b)

    def __hash__(self) -> int:
        return hash((Secret, self._value))
