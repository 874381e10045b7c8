import base64
import os
import stat

import pytest
from overlay_core.errors import ConfigError
from overlay_core.services.files import atomic_write, load_or_create_secret

KEY = b"c2VjcmV0LWtleS1tYXRlcmlhbC0zMi1ieXRlcy4uLi4=\n"  # base64 of 32 bytes


def parse_key(data: bytes) -> bytes:
    raw = base64.b64decode(data.strip(), validate=True)
    if len(raw) != 32:
        raise ValueError(f"bad key {data!r}")  # quotes the value: must not reach the ConfigError
    return raw


def mode_of(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


@pytest.fixture
def strict_umask():
    old = os.umask(0o077)
    try:
        yield
    finally:
        os.umask(old)


def test_atomic_write_creates_parents_0755_and_file_at_mode(tmp_path, strict_umask):
    path = tmp_path / "a" / "b" / "file.env"
    atomic_write(path, "one\n")
    assert path.read_text() == "one\n" and mode_of(path) == 0o644
    assert mode_of(tmp_path / "a") == 0o755 and mode_of(tmp_path / "a" / "b") == 0o755
    atomic_write(str(path), b"two", mode=0o600)
    assert path.read_bytes() == b"two" and mode_of(path) == 0o600
    assert os.listdir(path.parent) == ["file.env"]


def test_atomic_write_keeps_the_old_file_when_writing_fails(tmp_path):
    path = tmp_path / "file"
    atomic_write(path, "old")
    with pytest.raises(TypeError):
        atomic_write(path, 12345)  # type: ignore[arg-type]
    assert path.read_text() == "old" and os.listdir(tmp_path) == ["file"]


def test_atomic_write_replaces_not_rewrites(tmp_path):
    path = tmp_path / "file"
    atomic_write(path, "old")
    with open(path) as reader:  # a reader holding the old file keeps seeing all of it
        atomic_write(path, "new content")
        assert reader.read() == "old"
    assert path.read_text() == "new content"


def test_secret_created_0600_when_absent_then_reused(tmp_path, strict_umask):
    path = tmp_path / "run" / "key"
    made = []

    def make() -> bytes:
        made.append(1)
        return KEY

    first = load_or_create_secret(path, make, parse_key)
    assert mode_of(path) == 0o600 and path.read_bytes() == KEY and mode_of(path.parent) == 0o755
    second = load_or_create_secret(path, make, parse_key)
    assert first == second == base64.b64decode(KEY) and made == [1]


def test_secret_file_readable_by_others_is_refused(tmp_path):
    path = tmp_path / "key"
    path.write_bytes(KEY)
    path.chmod(0o640)
    with pytest.raises(ConfigError) as err:
        load_or_create_secret(path, lambda: KEY, parse_key, what="WireGuard private key")
    assert str(err.value) == (f"the WireGuard private key file {path} has mode 0640, so others may read it; "
                              f"run: chmod 600 {path}")


def test_unparsable_secret_file_names_the_file_never_the_value(tmp_path):
    path = tmp_path / "key"
    path.write_bytes(b"not-a-key-but-a-secret-value")
    path.chmod(0o600)
    with pytest.raises(ConfigError) as err:
        load_or_create_secret(path, lambda: KEY, parse_key)
    msg = str(err.value)
    assert msg == f"the key file {path} does not hold a valid key; fix it, or remove it to have a new one created"
    assert "secret-value" not in msg and err.value.__cause__ is None and err.value.__suppress_context__
    assert "\n" not in msg


def test_unreadable_secret_file(tmp_path):
    path = tmp_path / "key"
    path.mkdir()
    with pytest.raises(ConfigError, match=f"the key file {path} is not a regular file; remove it"):
        load_or_create_secret(path, lambda: KEY, parse_key)
    missing_dir = tmp_path / "file-not-dir"
    missing_dir.write_text("")
    with pytest.raises(ConfigError, match=f"cannot read the key file {missing_dir}/key: Not a directory"):
        load_or_create_secret(missing_dir / "key", lambda: KEY, parse_key)
