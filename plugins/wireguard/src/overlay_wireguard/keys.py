"""WireGuard keys: X25519 through ``cryptography``, and the node's persistent private key file.

The private key lives at ``/run/flannel/wgkey`` (Flannel's path, so a node switching between
Flannel and overlay keeps its identity) or at ``$WIREGUARD_KEY_FILE``. It is created once and
reused on every restart, so the public key in the lease never changes and peers never churn.
Key material never reaches a log line or an error message.
"""

from __future__ import annotations

import base64
import binascii
import os
import stat
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, NoEncryption, PrivateFormat, PublicFormat
from overlay_core import ConfigError

from .secret import Secret

DEFAULT_KEY_FILE = "/run/flannel/wgkey"
KEY_LEN = 32


def key_file_path(env: Mapping[str, str] = os.environ) -> Path:
    """Where the private key is kept: ``$WIREGUARD_KEY_FILE`` or Flannel's default."""
    return Path(env.get("WIREGUARD_KEY_FILE") or DEFAULT_KEY_FILE)


def decode_key(text: str | bytes) -> bytes:
    """The 32 bytes of a base64 key (surrounding whitespace allowed); ``ValueError`` otherwise."""
    try:
        raw = base64.b64decode(text.strip() if isinstance(text, bytes) else text.strip().encode(), validate=True)
    except (binascii.Error, ValueError):
        raise ValueError("not base64") from None
    if len(raw) != KEY_LEN:
        raise ValueError(f"decodes to {len(raw)} bytes, not {KEY_LEN}")
    return raw


def encode_key(raw: bytes) -> str:
    return base64.b64encode(raw).decode()


def b64_to_hex(text: str) -> str:
    """Base64 key (leases, ``wg``) to the hex form the UAPI protocol wants."""
    return decode_key(text).hex()


def hex_to_b64(text: str) -> str:
    raw = bytes.fromhex(text)
    if len(raw) != KEY_LEN:
        raise ValueError(f"hex key of {len(raw)} bytes, not {KEY_LEN}")
    return encode_key(raw)


@dataclass(frozen=True)
class KeyPair:
    """A private key (held as a ``Secret`` of its 32 raw bytes) and its base64 public key."""

    private: Secret
    public: str

    @classmethod
    def from_private(cls, raw: bytes) -> KeyPair:
        public = X25519PrivateKey.from_private_bytes(raw).public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
        return cls(Secret(raw), encode_key(public))

    @classmethod
    def generate(cls) -> KeyPair:
        raw = X25519PrivateKey.generate().private_bytes(Encoding.Raw, PrivateFormat.Raw, NoEncryption())
        return cls.from_private(raw)

    def private_hex(self) -> str:
        return self.private.reveal().hex()  # type: ignore[union-attr]

    def private_b64(self) -> str:
        return encode_key(self.private.reveal())  # type: ignore[arg-type]


def public_key_of(private_b64: str) -> str:
    """``wg pubkey``: the base64 public key of a base64 private key."""
    return KeyPair.from_private(decode_key(private_b64)).public


def _refuse(path: Path, what: str, todo: str) -> ConfigError:
    return ConfigError(f"wireguard key file {path} {what}; {todo}")


def _read(path: Path) -> KeyPair:
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    except OSError as exc:
        raise _refuse(path, f"cannot be read ({exc.strerror})",
                      "fix its permissions, or delete it to make a new key (peers then see a new public key)") from None
    try:
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            raise _refuse(path, "is not a regular file", "remove it so a key file can be created there")
        if mode & 0o077:
            raise _refuse(path, f"is readable or writable by others (mode {stat.S_IMODE(mode):04o})",
                          f"run `chmod 600 {path}`")
        data = os.read(fd, 1024)
    finally:
        os.close(fd)
    try:
        return KeyPair.from_private(decode_key(data))
    except ValueError as exc:
        raise _refuse(path, f"does not hold a base64 WireGuard private key ({exc})",
                      "restore the right file, or delete it to make a new key (peers then see a new public key)",
                      ) from None


def _create(path: Path) -> KeyPair:
    """Write a new key atomically: a 0600 temporary file linked into place, so the file is never
    seen half written and a key another process created meanwhile is kept, not overwritten."""
    os.makedirs(path.parent, mode=0o755, exist_ok=True)
    pair = KeyPair.generate()
    tmp = path.parent / f".{path.name}.{os.getpid()}.tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(pair.private_b64().encode())  # no newline: the bytes Flannel writes
            fh.flush()
            os.fsync(fh.fileno())
        try:
            os.link(tmp, path)
        except FileExistsError:
            return _read(path)
    finally:
        tmp.unlink(missing_ok=True)
    return pair


def load_or_create(path: Path) -> KeyPair:
    """The node's key pair from ``path``, created (mode 0600, parent 0755) when absent.

    Core's ``files.load_or_create_secret`` will take this over; the checks stay the same: an
    unreadable, malformed or group/world-accessible file is a one-line ``ConfigError`` naming
    the file and what to do.
    """
    if os.path.lexists(path):
        return _read(path)
    try:
        return _create(path)
    except OSError as exc:
        raise _refuse(path, f"cannot be created ({exc.strerror})",
                      "make its directory writable or set WIREGUARD_KEY_FILE to a writable path") from None
