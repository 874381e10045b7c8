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
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, NoEncryption, PrivateFormat, PublicFormat
from overlay_core import ConfigError
from overlay_core.services import Secret, load_or_create_secret

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


def load_or_create(path: Path) -> KeyPair:
    """The node's key pair from ``path``, created (mode 0600, parent 0755) when absent, through
    core's ``load_or_create_secret``: Flannel's 0400 files and ``wg genkey`` output (with a
    newline) are read as they are; a file that is unreadable, not a key, or open to group or
    others is a one-line ``ConfigError`` naming the file and what to do, never quoting it."""
    try:
        return load_or_create_secret(path, lambda: KeyPair.generate().private_b64().encode(),  # no newline, as Flannel
                                     lambda data: KeyPair.from_private(decode_key(data)), what="WireGuard private key")
    except OSError as exc:  # the key file could not be created
        raise ConfigError(f"cannot create the WireGuard private key file {path} ({exc.strerror or exc}); make its "
                          "directory writable or set WIREGUARD_KEY_FILE to a writable path") from None
