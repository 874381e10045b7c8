import os
import socket
import subprocess
import sys
import uuid

import pytest
from overlay_core import runtime


@pytest.mark.parametrize("env, applied", [
    ({}, True),
    ({"MALLOC_ARENA_MAX": "4"}, False),
    ({"GLIBC_TUNABLES": "glibc.malloc.arena_max=4"}, False),
])
def test_tune_malloc_steps_aside_for_an_environment_override(env, applied):
    # a fresh process: malloc settings are process-wide
    clean = {k: v for k, v in os.environ.items() if k not in runtime.OVERRIDE_VARIABLES}
    out = subprocess.run(
        [sys.executable, "-c", "from overlay_core.runtime import tune_malloc; print(tune_malloc())"],
        env={**clean, **env}, capture_output=True, text=True, check=True,
    ).stdout
    assert out.strip() == str(applied)


def test_named_mallopt_constants_match_glibc():
    assert (runtime.M_TRIM_THRESHOLD, runtime.M_MMAP_THRESHOLD, runtime.M_ARENA_MAX) == (-1, -3, -8)


def test_release_memory_runs():
    runtime.release_memory()


@pytest.mark.parametrize("abstract", [False, True])
def test_sd_notify_sends_to_the_notify_socket(tmp_path, abstract):
    name = f"overlay-test-{uuid.uuid4().hex}"
    address = "\0" + name if abstract else str(tmp_path / "notify")
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as server:
        server.bind(address)
        env = {"NOTIFY_SOCKET": "@" + name if abstract else address}
        assert runtime.sd_notify("READY=1", env)
        assert server.recv(64) == b"READY=1"


def test_sd_notify_without_systemd_or_with_a_dead_socket(tmp_path, caplog):
    assert runtime.sd_notify("READY=1", {}) is False
    assert runtime.sd_notify("READY=1", {"NOTIFY_SOCKET": str(tmp_path / "gone")}) is False
    assert "systemd notification failed" in caplog.text


@pytest.mark.parametrize("env, interval", [
    ({}, None),
    ({"WATCHDOG_USEC": "20000000"}, 20.0),
    ({"WATCHDOG_USEC": "500000", "WATCHDOG_PID": str(os.getpid())}, 0.5),
    ({"WATCHDOG_USEC": "500000", "WATCHDOG_PID": "1"}, None),  # meant for another process
    ({"WATCHDOG_USEC": "0"}, None),
    ({"WATCHDOG_USEC": "soon"}, None),
])
def test_watchdog_interval(env, interval):
    assert runtime.watchdog_interval(env) == interval


async def test_watchdog_pings_the_notify_socket_every_half_interval(tmp_path, monkeypatch):
    import trio

    address = str(tmp_path / "notify")
    monkeypatch.setenv("NOTIFY_SOCKET", address)
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as server:
        server.bind(address)
        server.setblocking(False)
        with trio.move_on_after(0.45):  # pings at 0, 0.1, 0.2, 0.3, 0.4 s (a loaded machine may send fewer)
            await runtime.watchdog(0.2)
        pings = []
        while True:
            try:
                pings.append(server.recv(64))
            except BlockingIOError:
                break
    assert 2 <= len(pings) <= 5 and set(pings) == {b"WATCHDOG=1"}
