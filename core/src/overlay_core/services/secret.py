"""``Secret``: a password, pre-shared key or private key that never prints its value.

``str()``, ``repr()`` and ``format()`` all give ``'***'``, so a secret can sit in an options
dataclass, a log call or an f-string without leaking; ``reveal()`` is the one, greppable, way
to the value. It is deliberately not a ``str`` subclass: string methods would hand out the value.
"""

from __future__ import annotations

import hmac

MASK = "***"


class Secret:
    """A ``str`` or ``bytes`` value hidden from every text conversion. Equal when the values are."""

    __slots__ = ("_value",)

    def __init__(self, value: str | bytes | Secret) -> None:
        if isinstance(value, Secret):
            value = value._value
        if not isinstance(value, (str, bytes)):
            raise TypeError(f"a Secret holds str or bytes, not {type(value).__name__}")
        self._value = value

    def reveal(self) -> str | bytes:
        """The value itself: only for the call that needs it (a socket, a key file, a kernel request)."""
        return self._value

    def __str__(self) -> str:
        return MASK

    __repr__ = __str__

    def __format__(self, spec: str) -> str:
        return format(MASK, spec)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Secret):
            return NotImplemented
        a, b = self._value, other._value
        if type(a) is not type(b):
            return False
        if isinstance(a, str):
            a, b = a.encode(), b.encode()  # type: ignore[union-attr]
        return hmac.compare_digest(a, b)  # type: ignore[arg-type]

    def __hash__(self) -> int:
        return hash((Secret, self._value))

    def __bool__(self) -> bool:
        return bool(self._value)

    def __reduce__(self):  # copy/pickle keep the value (a frozen options dataclass is copied), never show it
        return (Secret, (self._value,))
