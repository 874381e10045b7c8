"""Process-level settings of the agent: glibc malloc tuning, memory release, systemd notify and watchdog.

What: ``tune_malloc()`` once at start (before threads exist), ``release_memory()`` after the
start-up burst, ``sd_notify("READY=1")`` when ready and ``WATCHDOG=1`` every half
``watchdog_interval()`` when systemd asks for it.
Why here: they concern the process, not the overlay; one place with named constants instead of
magic numbers in the CLI and the agent.
"""

from __future__ import annotations

import ctypes
import gc
import logging
import os
import socket
from collections.abc import Mapping

LOGGER = logging.getLogger("overlay.runtime")

# mallopt(3) parameters (glibc malloc.h)
M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3
M_ARENA_MAX = -8

ARENA_MAX = 2
MMAP_THRESHOLD = 128 << 10
TRIM_THRESHOLD = 128 << 10
# set in the unit file (or the environment) to tune glibc malloc yourself; tune_malloc then does nothing
OVERRIDE_VARIABLES = ("MALLOC_ARENA_MAX", "GLIBC_TUNABLES")


def _libc() -> ctypes.CDLL | None:
    try:
        return ctypes.CDLL("libc.so.6")
    except OSError:
        return None


def tune_malloc(environ: Mapping[str, str] = os.environ) -> bool:
    """Two malloc arenas and fixed 128 KiB mmap/trim thresholds; True when applied.

    glibc gives every thread its own arena, and the agent's few threads (gRPC, netlink) would
    then hold tens of MB they barely use. Fixed thresholds stop glibc from raising them after
    the first large buffer (an etcd listing, a netlink dump), which would keep every later such
    buffer resident. Skipped when ``MALLOC_ARENA_MAX`` or ``GLIBC_TUNABLES`` is set, and on a
    libc without ``mallopt`` (musl).
    """
    if any(name in environ for name in OVERRIDE_VARIABLES):
        return False
    libc = _libc()
    mallopt = getattr(libc, "mallopt", None)
    if mallopt is None:
        return False
    for param, value in ((M_ARENA_MAX, ARENA_MAX), (M_MMAP_THRESHOLD, MMAP_THRESHOLD),
                         (M_TRIM_THRESHOLD, TRIM_THRESHOLD)):
        mallopt(param, value)
    return True


def release_memory() -> None:
    """Collect garbage and hand freed heap back to the OS (after imports and the first sync)."""
    gc.collect()
    trim = getattr(_libc(), "malloc_trim", None)
    if trim is not None:
        trim(0)


def sd_notify(message: str, environ: Mapping[str, str] = os.environ) -> bool:
    """Send ``message`` (``READY=1``, ``WATCHDOG=1``, ``STOPPING=1``) to systemd; True when sent.

    A no-op without ``NOTIFY_SOCKET`` (not started by systemd with Type=notify); a send failure
    is logged, never raised.
    """
    path = environ.get("NOTIFY_SOCKET")
    if not path:
        return False
    if path.startswith("@"):
        path = "\0" + path[1:]  # abstract socket
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
            sock.sendto(message.encode(), path)
    except OSError as exc:
        LOGGER.warning("systemd notification failed: %s", exc)
        return False
    return True


def watchdog_interval(environ: Mapping[str, str] = os.environ) -> float | None:
    """systemd's watchdog timeout in seconds (``WatchdogSec=``), None when it is off or meant for another process.

    Send ``sd_notify("WATCHDOG=1")`` at least every half of it.
    """
    usec = environ.get("WATCHDOG_USEC")
    pid = environ.get("WATCHDOG_PID")
    if not usec or (pid and pid != str(os.getpid())):
        return None
    try:
        value = int(usec)
    except ValueError:
        return None
    return value / 1e6 if value > 0 else None


async def watchdog(interval: float) -> None:
    """Tell systemd we are alive (``WATCHDOG=1``) every half ``interval``, for as long as the event
    loop runs: a loop that hangs stops the pings and systemd restarts the unit."""
    import trio  # not at module level: the CLI tunes malloc before it imports trio

    while True:
        sd_notify("WATCHDOG=1")
        await trio.sleep(interval / 2)
