"""Errors a user can meet. The CLI prints them as one line, without a traceback."""

from __future__ import annotations


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
