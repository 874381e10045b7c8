"""A trio client for wireguard-go's UAPI unix socket (the cross-platform WireGuard text protocol).

A request is ``get=1`` or ``set=1`` followed by ``key=value`` lines and an empty line; keys are
hex. Device keys come first; a peer section starts with ``public_key=``. The answer ends with
``errno=N`` and an empty line (N is 0 or a negative errno). One ``set`` carries any number of
peers, so a cold sync of 1000 peers is one transaction. Nothing a caller can see (exception
text, ``repr``) contains a private key or PSK; a public key never appears in an error either.
"""

from __future__ import annotations

import errno as errno_mod
import os
from collections.abc import Iterable
from ipaddress import ip_network
from pathlib import Path

import trio
from overlay_core import OverlayError
from overlay_core.services import Secret

from .keys import KEY_LEN, b64_to_hex, hex_to_b64
from .peer import DeviceConfig, DeviceState, PeerState, WgPeer, allowed_ips

ZERO_KEY = "0" * (2 * KEY_LEN)
_MAX_UNIX_PATH = 100  # sun_path is 108 bytes; longer paths are reached through /proc/self/fd


class UapiError(OverlayError):
    """wireguard-go refused a request (``errno``) or could not be reached (``errno`` None)."""

    def __init__(self, message: str, errno: int | None = None) -> None:
        super().__init__(message)
        self.errno = errno


def _secret_hex(secret: Secret | None) -> str:
    if secret is None:
        return ZERO_KEY
    value = secret.reveal()
    return value.hex() if isinstance(value, bytes) else value


def encode_peer(peer: WgPeer) -> list[str]:
    """A full peer section: replaces the peer's allowed IPs, PSK, endpoint and keepalive."""
    lines = [f"public_key={b64_to_hex(peer.public_key)}", "replace_allowed_ips=true",
             f"preshared_key={_secret_hex(peer.psk)}"]
    if peer.endpoint is not None:
        lines.append(f"endpoint={peer.endpoint}")
    lines.append(f"persistent_keepalive_interval={peer.keepalive}")
    lines.extend(f"allowed_ip={net}" for net in peer.allowed_ips)
    return lines


def encode_set(config: DeviceConfig | None = None, peers: Iterable[WgPeer] = (), remove: Iterable[str] = (),
               replace_peers: bool = False) -> bytes:
    """The ``set=1`` request. ``remove`` holds base64 public keys; removals go first so an allowed
    IP that moves from a removed peer to a new one ends up on the new one."""
    lines = ["set=1"]
    if config is not None:
        lines.append(f"private_key={_secret_hex(config.private_key)}")
        lines.append(f"listen_port={config.listen_port}")
    if replace_peers:
        lines.append("replace_peers=true")
    for key in remove:
        lines += [f"public_key={b64_to_hex(key)}", "remove=true"]
    for peer in peers:
        lines += encode_peer(peer)
    return ("\n".join(lines) + "\n\n").encode()


def _finish_peer(fields: dict, nets: list, device: str) -> PeerState:
    psk = fields.get("preshared_key")
    sec = int(fields.get("last_handshake_time_sec", 0))
    nsec = int(fields.get("last_handshake_time_nsec", 0))
    peer = WgPeer(
        hex_to_b64(fields["public_key"]),
        fields.get("endpoint"),
        allowed_ips(nets),
        Secret(bytes.fromhex(psk)) if psk and psk != ZERO_KEY else None,
        int(fields.get("persistent_keepalive_interval", 0)),
        device,
    )
    return PeerState(peer, sec + nsec / 1e9 if sec or nsec else None, int(fields.get("rx_bytes", 0)),
                     int(fields.get("tx_bytes", 0)))


def response_errno(text: str) -> int:
    """The ``errno=`` of an answer; ``ValueError`` when there is none (a truncated answer)."""
    for line in reversed(text.splitlines()):
        if line.startswith("errno="):
            return int(line[6:])
    raise ValueError("answer has no errno line")


def parse_get(text: str, device: str = "") -> DeviceState:
    """Parse a ``get=1`` answer into the settings and peers (with counters) of ``device``."""
    settings: dict[str, str] = {}
    peers: list[PeerState] = []
    current: dict[str, str] | None = None
    nets: list = []
    for line in text.splitlines():
        if not line:
            continue
        key, sep, value = line.partition("=")
        if not sep:
            raise ValueError("answer has a line without '='")
        if key == "public_key":
            if current is not None:
                peers.append(_finish_peer(current, nets, device))
            current, nets = {"public_key": value}, []
        elif key == "errno":
            continue
        elif current is None:
            settings[key] = value
        elif key == "allowed_ip":
            nets.append(ip_network(value))
        else:
            current[key] = value
    if current is not None:
        peers.append(_finish_peer(current, nets, device))
    private = settings.get("private_key")
    config = DeviceConfig(Secret(bytes.fromhex(private)) if private and private != ZERO_KEY else None,
                          int(settings.get("listen_port", 0)), device)
    return DeviceState(config, tuple(peers))


async def open_unix(path: Path) -> trio.SocketStream:
    """Connect to a unix socket, also when its path is longer than ``sun_path`` allows."""
    if len(os.fsencode(path)) < _MAX_UNIX_PATH:
        return await trio.open_unix_socket(os.fspath(path))
    fd = os.open(path.parent, os.O_PATH | os.O_DIRECTORY)
    try:
        return await trio.open_unix_socket(f"/proc/self/fd/{fd}/{path.name}")
    finally:
        os.close(fd)


class UapiClient:
    """Talks to one wireguard-go device through ``socket_path`` (one connection per request)."""

    def __init__(self, socket_path: Path | str, device: str, timeout: float = 10.0) -> None:
        self.socket_path = Path(socket_path)
        self.device = device
        self.timeout = timeout

    def _error(self, what: str, code: int | None = None) -> UapiError:
        return UapiError(f"wireguard-go device {self.device} ({self.socket_path}): {what}", code)

    async def request(self, payload: bytes) -> str:
        """Send one request and return the whole answer (up to and including the empty line)."""
        try:
            with trio.fail_after(self.timeout):
                stream = await open_unix(self.socket_path)
                async with stream:
                    await stream.send_all(payload)
                    buf = bytearray()
                    while not buf.endswith(b"\n\n"):
                        chunk = await stream.receive_some(262144)
                        if not chunk:
                            raise self._error("closed the connection before answering; is wireguard-go running?")
                        buf += chunk
        except trio.TooSlowError:
            raise self._error(f"no answer within {self.timeout:g} s") from None
        except OSError as exc:
            raise self._error(f"not reachable ({exc.strerror or exc}); is wireguard-go running?") from None
        return buf.decode()

    async def get(self) -> DeviceState:
        text = await self.request(b"get=1\n\n")
        try:
            code = response_errno(text)
            if code:
                raise self._error(f"get failed: {_errname(code)}", code)
            return parse_get(text, self.device)
        except (ValueError, KeyError) as exc:
            raise self._error(f"unreadable get answer ({exc})") from None

    async def set(self, config: DeviceConfig | None = None, peers: Iterable[WgPeer] = (),
                  remove: Iterable[str] = (), replace_peers: bool = False) -> None:
        """One ``set`` transaction; ``UapiError`` with the errno when wireguard-go refuses it
        (it stops at the first bad line: the lines before it are applied)."""
        text = await self.request(encode_set(config, peers, remove, replace_peers))
        try:
            code = response_errno(text)
        except ValueError as exc:
            raise self._error(f"unreadable set answer ({exc})") from None
        if code:
            raise self._error(f"set refused: {_errname(code)} (the wireguard-go log says which line)", code)

    async def answers(self) -> bool:
        """True when the socket answers a ``get`` (the ready probe and adoption test)."""
        try:
            await self.get()
        except UapiError:
            return False
        return True


def _errname(code: int) -> str:
    name = errno_mod.errorcode.get(-code) or errno_mod.errorcode.get(code) or "?"
    return f"errno {code} ({name}: {os.strerror(abs(code))})"
