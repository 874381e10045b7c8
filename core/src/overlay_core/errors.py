"""Errors a user can meet. The CLI prints them as one line, without a traceback."""

from __future__ import annotations

import difflib
from collections.abc import Iterable


class OverlayError(Exception):
    """Base class: the message says what is wrong and what to do, in one line."""


class ConfigError(OverlayError):
    """The network config, a flag, or a backend option is invalid."""


class BackendNotFoundError(OverlayError):
    """The configured ``Backend.Type`` has no installed package."""


class StoreError(OverlayError):
    """The store (etcd) cannot be used: unreachable, TLS files missing, auth refused."""


class InterfaceError(OverlayError):
    """No usable external interface or public IP."""


class KernelFeatureMissingError(OverlayError):
    """The kernel lacks a module a backend needs (for example ``ipip``)."""


class SubnetsExhaustedError(OverlayError):
    """Every subnet in [SubnetMin, SubnetMax] is leased or reserved."""


def did_you_mean(name: str, known: Iterable[str]) -> str:
    """``" (did you mean 'X'?)"`` for the known name closest to ``name`` (case-insensitive), else ``""``.

    The one place where error messages suggest a correction, so every misspelt key, backend
    type or flag is answered the same way.
    """
    by_lower = {k.lower(): k for k in known}
    close = difflib.get_close_matches(name.lower(), list(by_lower), n=1, cutoff=0.6)
    return f" (did you mean {by_lower[close[0]]!r}?)" if close else ""
