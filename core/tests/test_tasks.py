import logging

import pytest
import trio
from overlay_core.retry import Backoff
from overlay_core.services.tasks import TaskGroup


async def test_start_returns_the_started_value_and_tasks_run_side_by_side():
    events = []

    async def server(port, *, task_status=trio.TASK_STATUS_IGNORED):
        task_status.started(port + 1)
        events.append("serving")
        await trio.sleep_forever()

    async with TaskGroup.open() as tasks:
        assert await tasks.start(server, 41, name="server") == 42
        tasks.start_soon(trio.sleep, 0)
        await trio.sleep(0.01)
        assert events == ["serving"]
        tasks.cancel_scope.cancel()


async def test_a_plain_task_that_raises_fails_the_group():
    async def boom():
        raise ValueError("bug")

    with pytest.raises(ExceptionGroup) as group:
        async with TaskGroup.open() as tasks:
            tasks.start_soon(boom)
            await trio.sleep_forever()
    assert [str(e) for e in group.value.exceptions] == ["bug"]


async def test_a_restarting_task_is_logged_one_line_and_run_again_after_the_backoff(autojump_clock, caplog):
    caplog.set_level(logging.INFO, "overlay.tasks")
    runs = []

    async def flaky(label):
        runs.append(trio.current_time())
        if len(runs) < 4:
            raise ConnectionError(f"{label} refused")

    async with TaskGroup.open() as tasks:
        tasks.start_soon(flaky, "vici", name="vici-session", restart=Backoff(1, 3, jitter=0))
    gaps = [round(b - a, 3) for a, b in zip(runs, runs[1:])]
    assert gaps == [1, 2, 3] and len(runs) == 4  # returned normally on the 4th run: not restarted
    lines = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert lines == [
        "vici-session failed: ConnectionError: vici refused; restarting in 1.0 s",
        "vici-session failed: ConnectionError: vici refused; restarting in 2.0 s",
        "vici-session failed: ConnectionError: vici refused; restarting in 3.0 s",
    ]


async def test_backoff_resets_after_a_long_healthy_run(autojump_clock):
    runs = []

    async def crashes_after_a_while():
        runs.append(trio.current_time())
        if len(runs) == 3:
            await trio.sleep(100)  # healthy for longer than the cap
        if len(runs) < 5:
            raise RuntimeError("x")

    async with TaskGroup.open() as tasks:
        tasks.start_soon(crashes_after_a_while, restart=Backoff(1, 4, jitter=0))
    gaps = [round(b - a, 3) for a, b in zip(runs, runs[1:])]
    assert gaps == [1, 2, 101, 2]


async def test_cancellation_stops_a_restarting_task():
    runs = []

    async def fails():
        runs.append(1)
        raise OSError("nope")

    with trio.move_on_after(0.2):
        async with TaskGroup.open() as tasks:
            tasks.start_soon(fails, restart=Backoff(0.05, 0.05, jitter=0))
    assert 1 <= len(runs) < 10


async def test_a_poll_runs_every_interval_survives_its_errors_and_starts_once_per_name(autojump_clock, caplog):
    caplog.set_level(logging.DEBUG, "overlay.tasks")
    runs = []

    async def poll(tag):
        runs.append((tag, trio.current_time()))
        if len(runs) == 2:
            raise ConnectionRefusedError("helper restarting")

    async with TaskGroup.open() as tasks:
        start = trio.current_time()
        tasks.start_every(5.0, poll, "a", name="status")
        tasks.start_every(5.0, poll, "b", name="status")  # the same poll again: ignored
        await trio.sleep(12.0)
        tasks.cancel_scope.cancel()
    assert [(tag, round(t - start)) for tag, t in runs] == [("a", 0), ("a", 5), ("a", 10)]
    assert "status: ConnectionRefusedError: helper restarting" in caplog.text
