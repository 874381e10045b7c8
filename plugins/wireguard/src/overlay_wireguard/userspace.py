"""Running wireguard-go: the command line, the ready probe, and finding a running instance.

wireguard-go serves its UAPI socket at ``/var/run/wireguard/<device>.sock``, a directory that
every network namespace shares. On a real node that is what we want (``wg show`` works as
usual). Several nodes on one machine (the lab, the tests) would collide on ``flannel-wg.sock``,
so an instance with its own socket directory runs in a private mount namespace where that
directory is bind-mounted on ``/var/run/wireguard``; the agent talks to ``<dir>/<device>.sock``.
Both forms ``exec`` into ``wireguard-go -f <device>``, so the started pid is wireguard-go's.
"""

from __future__ import annotations

import os
import socket
import struct
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType

import trio

from .uapi import UapiClient

SYSTEM_SOCKET_DIR = Path("/var/run/wireguard")
_MOUNT_AND_EXEC = 'mkdir -p /var/run/wireguard && mount --bind "$1" /var/run/wireguard && exec "$3" -f "$2"'


def _is_system_dir(path: Path) -> bool:
    return path.resolve() in {SYSTEM_SOCKET_DIR.resolve(), Path("/run/wireguard")}


@dataclass(frozen=True)
class WireguardGo:
    """One wireguard-go instance for ``device`` with its UAPI socket in ``socket_dir``."""

    device: str
    socket_dir: Path = SYSTEM_SOCKET_DIR
    binary: str = "wireguard-go"
    env: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({"WG_PROCESS_FOREGROUND": "1"}))

    @property
    def name(self) -> str:
        """The helper name the core supervisor keys this process by."""
        return f"wireguard-go:{self.device}"

    @property
    def private_socket_dir(self) -> bool:
        return not _is_system_dir(self.socket_dir)

    @property
    def socket_path(self) -> Path:
        return self.socket_dir / f"{self.device}.sock"

    def argv(self) -> list[str]:
        """The command to start (in the node's network namespace, in a new session so it
        outlives the agent): plain ``wireguard-go -f`` for the system socket directory, else
        wrapped in ``unshare --mount`` with the per-instance directory bind-mounted."""
        if not self.private_socket_dir:
            return [self.binary, "-f", self.device]
        return ["unshare", "--mount", "--propagation", "private", "sh", "-c", _MOUNT_AND_EXEC,
                "wireguard-go-mount", os.fspath(self.socket_dir.resolve()), self.device, self.binary]

    def running_argv(self) -> list[str]:
        """``/proc/<pid>/cmdline`` of the instance once started (both forms exec into this)."""
        return [self.binary, "-f", self.device]

    def wg_argv(self, *args: str) -> list[str]:
        """A ``wg`` command line that sees this instance (``wg show``, ``wg set`` for debugging)."""
        if not self.private_socket_dir:
            return ["wg", *args]
        return ["unshare", "--mount", "--propagation", "private", "sh", "-c",
                'mkdir -p /var/run/wireguard && mount --bind "$1" /var/run/wireguard && shift && exec wg "$@"',
                "wg-mount", os.fspath(self.socket_dir.resolve()), *args]

    def prepare(self) -> None:
        """Create a per-instance socket directory (0755) before the start."""
        if self.private_socket_dir:
            self.socket_dir.mkdir(mode=0o755, parents=True, exist_ok=True)

    def client(self, timeout: float = 10.0) -> UapiClient:
        return UapiClient(self.socket_path, self.device, timeout)

    async def ready(self) -> bool:
        """The supervisor's ready probe: the UAPI socket answers ``get``."""
        return await self.client(timeout=2.0).answers()

    async def running_pid(self) -> int | None:
        """The pid of a wireguard-go already serving this device in our network namespace (to
        adopt it), else None. The socket's peer credentials give the pid; a socket served
        from another namespace (the system directory is shared by all) does not count."""
        if not await self.ready():
            return None
        try:
            pid = await socket_owner(self.socket_path)
        except OSError:
            return None
        try:
            theirs, ours = os.stat(f"/proc/{pid}/ns/net"), os.stat("/proc/thread-self/ns/net")
        except OSError:
            return None
        same = (theirs.st_dev, theirs.st_ino) == (ours.st_dev, ours.st_ino)
        return pid if same else None


async def socket_owner(path: Path) -> int:
    """The pid that listens on unix socket ``path`` (``SO_PEERCRED``)."""
    sock = trio.socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    with sock:
        target = os.fspath(path)
        fd = None
        if len(os.fsencode(target)) >= 100:
            fd = os.open(path.parent, os.O_PATH | os.O_DIRECTORY)
            target = f"/proc/self/fd/{fd}/{path.name}"
        try:
            await sock.connect(target)
        finally:
            if fd is not None:
                os.close(fd)
        pid, _uid, _gid = struct.unpack("3i", sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, 12))
    return pid


