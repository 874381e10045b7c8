"""Flannel's ``extension`` backend for overlay: peers connected by shell commands (``sh -c``)."""

from __future__ import annotations

from .backend import ExtensionBackend
from .commands import CommandResult, run_command, startup_env
from .options import ExtensionOptions, parse_options
from .target import CommandTarget, PeerCommand

__version__ = "0.1.0"

__all__ = ["CommandResult", "CommandTarget", "ExtensionBackend", "ExtensionOptions", "PeerCommand",
           "__version__", "parse_options", "run_command", "startup_env"]
