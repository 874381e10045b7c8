"""Files the agent and its backends write: atomically, and key files private and reused.

``atomic_write`` writes a temp file in the same directory, fsyncs and renames it over the
target, so a reader (the CNI plugin, a helper daemon) sees the old file or the new one, never
half of one. ``load_or_create_secret`` keeps a key across restarts (a WireGuard private key must
not change under the peers that know its public half) and refuses a file others can read.
"""

from __future__ import annotations

import os
import stat
import tempfile
from collections.abc import Callable
from typing import TypeVar

from ..errors import ConfigError

T = TypeVar("T")
StrPath = str | os.PathLike[str]


def ensure_dir(directory: StrPath) -> None:
    """Create ``directory`` and missing parents at 0755 whatever the umask (readers such as CNI need them)."""
    directory = os.path.abspath(directory)
    if os.path.isdir(directory):
        return
    ensure_dir(os.path.dirname(directory))
    try:
        os.mkdir(directory)
    except FileExistsError:
        return
    os.chmod(directory, 0o755)


def atomic_write(path: StrPath, data: bytes | str, mode: int = 0o644) -> None:
    """Replace ``path`` with ``data`` (str is written as UTF-8) at ``mode``; a missing parent is created 0755."""
    path = os.path.abspath(path)
    directory, name = os.path.split(path)
    ensure_dir(directory)
    fd, tmp = tempfile.mkstemp(prefix=f".{name}.", dir=directory)  # created 0600: never wider than ``mode``
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data.encode() if isinstance(data, str) else data)
            fh.flush()
            os.fchmod(fh.fileno(), mode)
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    dir_fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(dir_fd)  # the rename itself survives a crash
    finally:
        os.close(dir_fd)


def load_or_create_secret(path: StrPath, make: Callable[[], bytes], parse: Callable[[bytes], T],
                          mode: int = 0o600, what: str = "key") -> T:
    """``parse`` of the file's bytes; when the file is absent, ``make()`` is written there at ``mode`` first.

    A file that cannot be read, is readable or writable by group or others, or that ``parse``
    rejects (any exception) is a one-line ``ConfigError`` naming the file and what to do; the
    value and the parser's message (which may quote it) never appear in it.
    """
    path = os.fspath(path)
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        data = make()
        atomic_write(path, data, mode)
        return parse(data)
    except OSError as exc:
        raise ConfigError(f"cannot read the {what} file {path}: {exc.strerror}; fix its owner and permissions, "
                          "or remove it to have a new one created") from None
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise ConfigError(f"the {what} file {path} is not a regular file; remove it to have a new one created")
        if info.st_mode & 0o077:
            raise ConfigError(f"the {what} file {path} has mode {stat.S_IMODE(info.st_mode):04o}, so others may "
                              f"read it; run: chmod {mode:o} {path}")
        with open(fd, "rb", closefd=False) as fh:
            data = fh.read()
    finally:
        os.close(fd)
    try:
        return parse(data)
    except Exception:
        raise ConfigError(f"the {what} file {path} does not hold a valid {what}; fix it, or remove it to have "
                          "a new one created") from None
