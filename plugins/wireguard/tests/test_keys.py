"""Keys: X25519 against wg(8), the persistent key file and its one-line errors."""

import base64
import os
import shutil
import stat
import subprocess
from pathlib import Path

import pytest
from overlay_core import ConfigError
from overlay_wireguard.keys import (
    KeyPair,
    b64_to_hex,
    decode_key,
    hex_to_b64,
    key_file_path,
    load_or_create,
    public_key_of,
)


def test_path_from_env():
    assert str(key_file_path({})) == "/run/flannel/wgkey"
    assert str(key_file_path({"WIREGUARD_KEY_FILE": "/x/k"})) == "/x/k"


@pytest.mark.skipif(not shutil.which("wg"), reason="wireguard-tools not installed")
def test_public_key_matches_wg_pubkey():
    priv = subprocess.run(["wg", "genkey"], capture_output=True, text=True, check=True).stdout.strip()
    pub = subprocess.run(["wg", "pubkey"], input=priv, capture_output=True, text=True, check=True).stdout.strip()
    assert public_key_of(priv) == pub
    pair = KeyPair.generate()
    assert subprocess.run(["wg", "pubkey"], input=pair.private_b64(), capture_output=True, text=True,
                          check=True).stdout.strip() == pair.public


def test_hex_roundtrip_and_bad_keys():
    pair = KeyPair.generate()
    assert hex_to_b64(b64_to_hex(pair.public)) == pair.public
    assert len(b64_to_hex(pair.public)) == 64
    with pytest.raises(ValueError, match="not base64"):
        decode_key("%%%")
    with pytest.raises(ValueError, match="decodes to 3 bytes"):
        decode_key(base64.b64encode(b"abc").decode())
    assert pair.private_b64() not in repr(pair) and pair.private_hex() not in repr(pair)


def test_created_once_then_reused(tmp_path):
    path = tmp_path / "run" / "flannel" / "wgkey"
    first = load_or_create(path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o755
    assert path.read_text() == first.private_b64()  # no newline, as Flannel writes it
    assert load_or_create(path) == first
    assert [p.name for p in path.parent.iterdir()] == ["wgkey"]  # no temporary left behind


def test_reads_flannel_and_wg_genkey_files(tmp_path):
    path = tmp_path / "wgkey"
    pair = KeyPair.generate()
    path.write_text(pair.private_b64() + "\n")  # wg genkey style; Flannel writes 0400
    os.chmod(path, 0o400)
    assert load_or_create(path).public == pair.public


@pytest.mark.parametrize("content, mode, message", [
    ("garbage", 0o600, "does not hold a valid WireGuard private key; fix it, or remove it"),
    (base64.b64encode(b"k" * 16).decode(), 0o600, "does not hold a valid WireGuard private key"),
    (None, 0o640, "has mode 0640, so others may read it; run: chmod 600 "),
    (None, 0o604, "mode 0604"),
])
def test_bad_key_file_one_line(tmp_path, content, mode, message):
    path = tmp_path / "wgkey"
    secret = KeyPair.generate().private_b64()
    path.write_text(content if content is not None else secret)
    os.chmod(path, mode)
    with pytest.raises(ConfigError) as err:
        load_or_create(path)
    text = str(err.value)
    assert message in text and str(path) in text and "\n" not in text and secret not in text


def test_unreadable_and_uncreatable(tmp_path):
    path = tmp_path / "wgkey"
    os.mkdir(path)
    with pytest.raises(ConfigError, match="is not a regular file"):
        load_or_create(path)
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(ConfigError, match="cannot read the WireGuard private key file .*/file/wgkey: Not a directory"):
        load_or_create(blocker / "wgkey")


def test_uncreatable_key_file_is_one_line():
    with pytest.raises(ConfigError, match=r"cannot create the WireGuard private key file /proc/wgg-nokey/wgkey \(.+\); "
                                          "make its directory writable or set WIREGUARD_KEY_FILE"):
        load_or_create(Path("/proc/wgg-nokey/wgkey"))  # /proc takes no new directories, even from root
