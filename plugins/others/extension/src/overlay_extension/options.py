"""The ``Backend`` keys of Flannel's extension backend (its four commands, and the ShutdownCommand of
its example configs), read with core's option reader."""

from __future__ import annotations

from dataclasses import dataclass

from overlay_core import NetworkConfig
from overlay_core.options import option, read_options

BACKEND = "extension"


def _not_blank(command: str) -> None:
    # Flannel splits the command on whitespace and takes the first word: a blank command crashes it.
    if command and not command.strip():
        raise ValueError("is blank; give a command, or leave the key out to run nothing")


@dataclass(frozen=True)
class ExtensionOptions:
    """Each command is a ``sh -c`` script; an empty string (the default) means "run nothing"."""

    pre_startup: str = option("PreStartupCommand", "", check=_not_blank)
    post_startup: str = option("PostStartupCommand", "", check=_not_blank)
    subnet_add: str = option("SubnetAddCommand", "", check=_not_blank)
    subnet_remove: str = option("SubnetRemoveCommand", "", check=_not_blank)
    # In Flannel's shipped example configs (dist/extension-vxlan, -wireguard) but never run by Flannel:
    # accepted so those configs load, and never run here either (the backend says so in its log).
    shutdown: str = option("ShutdownCommand", "")


#: The Flannel keys above (the backend's ``option_names``: core refuses any other key).
OPTION_NAMES = ("PreStartupCommand", "PostStartupCommand", "SubnetAddCommand", "SubnetRemoveCommand",
                "ShutdownCommand")


def parse_options(config: NetworkConfig) -> ExtensionOptions:
    """The extension options of ``config``; ``ConfigError`` (one line) for a value that is not a string."""
    return read_options(ExtensionOptions, config, backend=BACKEND)
