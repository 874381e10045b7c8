"""Supervised helpers with real processes: start, restart after kill -9, adoption by a new agent, stop."""

import itertools
import json
import logging
import os
import re
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import trio
from overlay_core.errors import OverlayError
from overlay_core.metrics import CollectorRegistry
from overlay_core.services.supervise import ProcessSpec, Supervisor, is_same_process, start_time

_counter = itertools.count()


async def always_ready() -> bool:
    return True


def alive(pid: int | None) -> bool:
    """Runs and is not a zombie (an orphan's zombie may wait a while for its reaper)."""
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(")", 1)[1].split()[0] not in ("Z", "X")
    except (OSError, TypeError):
        return False


def pids_running(argv: list[str]) -> list[int]:
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit() and alive(int(entry)):
            try:
                with open(f"/proc/{entry}/cmdline", "rb") as fh:
                    if fh.read().split(b"\0")[:-1] == [a.encode() for a in argv]:
                        found.append(int(entry))
            except OSError:
                pass
    return found


@pytest.fixture
def sleeper():
    """A ``sleep`` command line unique to this test; every process running it is killed afterwards."""
    argv = ["sleep", f"3600.{os.getpid()}{next(_counter):03d}"]
    try:
        yield argv
    finally:
        for pid in pids_running(argv):
            os.kill(pid, signal.SIGKILL)


@pytest.fixture
def registry():
    return CollectorRegistry()


async def wait_for(predicate, timeout: float = 20.0) -> None:
    with trio.fail_after(timeout):
        while not predicate():
            await trio.sleep(0.02)


def sample(registry, name: str, helper: str) -> float | None:
    return registry.get_sample_value(name, {"helper": helper})


async def test_helper_restarted_once_after_kill_9_then_stopped(tmp_path, sleeper, registry, caplog):
    caplog.set_level(logging.INFO, "overlay.supervise")
    restarted = []

    async def on_restart(helper):
        restarted.append(helper.pid)

    spec = ProcessSpec("sleeper", sleeper, always_ready, on_restart=on_restart, backoff_start=0.2, backoff_cap=1)
    async with Supervisor.open(tmp_path, registry) as sup:
        helper = await sup.supervise(spec)
        first = helper.pid
        assert alive(first) and helper.state == "running" and helper.restarts == 0 and not helper.adopted
        record = json.loads((tmp_path / "helpers" / "sleeper.json").read_text())
        assert record["pid"] == first and record["argv"] == sleeper and record["start_time"] == start_time(first)
        assert os.getsid(first) == first  # its own session: the agent's signals and exit do not reach it
        assert (tmp_path / "helpers" / "sleeper.log").exists()
        assert sample(registry, "overlay_helper_up", "sleeper") == 1
        assert sample(registry, "overlay_helper_restarts_total", "sleeper") == 0

        os.kill(first, signal.SIGKILL)
        await wait_for(lambda: restarted)
        assert restarted == [helper.pid] and helper.pid != first and alive(helper.pid) and not alive(first)
        assert helper.restarts == 1 and helper.state == "running"
        assert sample(registry, "overlay_helper_restarts_total", "sleeper") == 1
        assert sample(registry, "overlay_helper_up", "sleeper") == 1
        assert json.loads((tmp_path / "helpers" / "sleeper.json").read_text())["pid"] == helper.pid
        report = sup.report()["sleeper"]
        assert report["pid"] == helper.pid and report["state"] == "running" and report["restarts"] == 1
        json.dumps(sup.report())
        warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
        assert len(warnings) == 1 and warnings[0].startswith(f"helper sleeper (pid {first}) was killed by SIGKILL; "
                                                              "restarting in ")

        second = helper.pid
        await helper.stop()
        assert not alive(second) and helper.state == "stopped" and sup.report() == {}
        assert not (tmp_path / "helpers" / "sleeper.json").exists()
        assert sample(registry, "overlay_helper_up", "sleeper") == 0
    assert pids_running(sleeper) == []


AGENT = textwrap.dedent("""
    import sys, trio
    from overlay_core.services.supervise import ProcessSpec, Supervisor

    async def ready():
        return True

    async def main():
        async with Supervisor.open(sys.argv[1]) as sup:
            helper = await sup.supervise(ProcessSpec("sleeper", sys.argv[3:], ready,
                                                     survive_agent=sys.argv[2] == "survive"))
            print(helper.pid, flush=True)
            await trio.sleep_forever()

    trio.run(main)
""")


async def run_agent_and_kill_9(state_dir, argv: list[str], survive: bool = True) -> int:
    """Run a Supervisor in another Python process until its helper is ready, then ``kill -9`` that process."""
    agent = await trio.lowlevel.open_process(
        [sys.executable, "-c", AGENT, str(state_dir), "survive" if survive else "die", *argv],
        stdout=subprocess.PIPE,
    )
    try:
        with trio.fail_after(30):
            line = b""
            while not line.endswith(b"\n"):
                chunk = await agent.stdout.receive_some()
                assert chunk, "the agent exited before its helper was ready"
                line += chunk
        return int(line)
    finally:
        agent.kill()
        await agent.wait()
        await agent.stdout.aclose()


async def test_restart_asked_by_the_backend_goes_through_supervision(tmp_path, sleeper, caplog):
    restarted = []

    async def on_restart(helper):
        restarted.append(helper.pid)

    spec = ProcessSpec("sleeper", sleeper, always_ready, on_restart=on_restart, backoff_start=0.2, backoff_cap=1)
    async with Supervisor.open(tmp_path) as sup:
        helper = await sup.supervise(spec)
        first = helper.pid
        assert helper.restart("its TUN device was deleted")
        await wait_for(lambda: restarted)
        assert restarted == [helper.pid] and helper.pid != first and not alive(first) and helper.restarts == 1
        assert f"restarting helper sleeper (pid {first}): its TUN device was deleted" in caplog.text
        await helper.stop()
        assert not helper.restart("stopped helpers are not restarted")


async def test_helper_survives_kill_9_of_the_agent_and_the_next_agent_adopts_it(tmp_path, sleeper, registry):
    pid = await run_agent_and_kill_9(tmp_path, sleeper)
    assert alive(pid)  # the agent is gone, the data path is not

    restarted = []

    async def on_restart(helper):
        restarted.append(helper.pid)

    spec = ProcessSpec("sleeper", sleeper, always_ready, on_restart=on_restart, backoff_start=0.2, backoff_cap=1)
    async with Supervisor.open(tmp_path, registry) as sup:
        helper = await sup.supervise(spec)
        assert helper.pid == pid and helper.adopted and helper.restarts == 0 and helper.state == "running"
        assert pids_running(sleeper) == [pid]
        # an adopted helper is not our child, yet its death is seen (pidfd) and it is restarted
        os.kill(pid, signal.SIGKILL)
        await wait_for(lambda: restarted)
        assert helper.restarts == 1 and helper.pid != pid and alive(helper.pid)
    # leaving the supervisor is an agent stop: the survivor stays, and the next agent adopts it again
    assert alive(helper.pid)
    async with Supervisor.open(tmp_path) as sup:
        again = await sup.supervise(spec)
        assert again.pid == helper.pid and again.adopted
        await again.stop()
    assert pids_running(sleeper) == []


async def test_a_helper_that_must_not_survive_is_stopped_by_the_next_agent(tmp_path, sleeper):
    pid = await run_agent_and_kill_9(tmp_path, sleeper, survive=False)
    async with Supervisor.open(tmp_path) as sup:
        helper = await sup.supervise(ProcessSpec("sleeper", sleeper, always_ready, survive_agent=False))
        assert helper.pid != pid and not helper.adopted
        assert not alive(pid) and pids_running(sleeper) == [helper.pid]
        assert os.getsid(helper.pid) != helper.pid  # in the agent's session
    # and it dies with its agent
    assert not alive(helper.pid) and not (tmp_path / "helpers" / "sleeper.json").exists()


def write_record(state_dir, pid: int, started: int | None, argv: list[str]) -> None:
    (state_dir / "helpers").mkdir(parents=True, exist_ok=True)
    (state_dir / "helpers" / "sleeper.json").write_text(
        json.dumps({"pid": pid, "start_time": started, "argv": argv}))


@pytest.fixture
def other_process(sleeper):
    """A live process that is not a recorded helper: it must never be adopted nor signalled."""
    proc = subprocess.Popen(sleeper)
    try:
        yield proc
    finally:
        proc.kill()
        proc.wait()


@pytest.mark.parametrize("case", ["dead", "other start time", "other command line", "garbage"])
async def test_a_record_that_does_not_match_the_live_process_is_not_adopted(tmp_path, sleeper, other_process, case):
    if case == "dead":
        gone = subprocess.Popen(["true"])
        gone.wait()
        write_record(tmp_path, gone.pid, 12345, sleeper)
    elif case == "other start time":  # pid reuse: same pid and command line, another process
        write_record(tmp_path, other_process.pid, start_time(other_process.pid) - 1, sleeper)
    elif case == "other command line":
        write_record(tmp_path, other_process.pid, start_time(other_process.pid), ["sleep", "1"])
    else:
        (tmp_path / "helpers").mkdir()
        (tmp_path / "helpers" / "sleeper.json").write_text("{not json")
    async with Supervisor.open(tmp_path) as sup:
        helper = await sup.supervise(ProcessSpec("sleeper", sleeper, always_ready))
        assert not helper.adopted and helper.pid != other_process.pid
        assert other_process.poll() is None  # never signalled
        assert json.loads((tmp_path / "helpers" / "sleeper.json").read_text())["pid"] == helper.pid
        await helper.stop()
    assert pids_running(sleeper) == [other_process.pid]


async def test_a_changed_command_line_replaces_the_previous_helper(tmp_path, sleeper):
    async with Supervisor.open(tmp_path) as sup:
        old = await sup.supervise(ProcessSpec("sleeper", sleeper, always_ready))
    assert alive(old.pid)
    newer = [*sleeper[:-1], sleeper[-1] + "1"]
    try:
        async with Supervisor.open(tmp_path) as sup:
            helper = await sup.supervise(ProcessSpec("sleeper", newer, always_ready, stop_grace=2))
            assert not helper.adopted and not alive(old.pid) and pids_running(newer) == [helper.pid]
            await helper.stop()
    finally:
        for pid in pids_running(newer):
            os.kill(pid, signal.SIGKILL)


# A helper that can hand over: with --takeover it stops the process named in its pid file (as the
# udp forwarder asks the running one for its descriptors, which then exits), unless told to fail.
TAKER = textwrap.dedent("""
    import os, signal, sys, time
    pidfile, args = sys.argv[1], sys.argv[2:]
    if "--takeover" in args:
        if os.path.exists(pidfile + ".fail"):
            sys.exit(3)
        os.kill(int(open(pidfile).read()), signal.SIGTERM)
    with open(pidfile + ".tmp", "w") as fh:
        fh.write(str(os.getpid()))
    os.replace(pidfile + ".tmp", pidfile)
    time.sleep(3600)
""")


@pytest.fixture
def taker(tmp_path):
    argv = [sys.executable, "-c", TAKER, str(tmp_path / f"taker-{next(_counter)}.pid")]
    try:
        yield argv
    finally:
        for running in (argv, [*argv, "--takeover"]):
            for pid in pids_running(running):
                os.kill(pid, signal.SIGKILL)


def taker_spec(argv, version: str, **kwargs) -> ProcessSpec:
    async def ready() -> bool:  # the pid file names a running taker
        try:
            pid = int(Path(argv[3]).read_text())
        except (OSError, ValueError):
            return False
        return pid in pids_running(argv) + pids_running([*argv, "--takeover"])
    return ProcessSpec("taker", argv, ready, version=version, handover_args=("--takeover",), **kwargs)


async def test_a_helper_of_another_version_is_replaced_by_handover(tmp_path, taker, caplog):
    caplog.set_level(logging.INFO, "overlay.supervise")
    async with Supervisor.open(tmp_path) as sup:
        old = await sup.supervise(taker_spec(taker, "1"))
    assert alive(old.pid)
    async with Supervisor.open(tmp_path) as sup:
        new = await sup.supervise(taker_spec(taker, "2"))
        assert not new.adopted and new.pid != old.pid and new.state == "running"
        assert pids_running([*taker, "--takeover"]) == [new.pid] and not alive(old.pid)
        record = json.loads((tmp_path / "helpers" / "taker.json").read_text())
        assert record["pid"] == new.pid and record["version"] == "2" and record["argv"] == taker
        assert f"pid {new.pid} took over from pid {old.pid}" in caplog.text
        assert "runs version 1, this agent has 2" in caplog.text
    # the replacement (started with --takeover) is what the next agent of version 2 adopts
    async with Supervisor.open(tmp_path) as sup:
        again = await sup.supervise(taker_spec(taker, "2", stop_grace=2))
        assert again.adopted and again.pid == new.pid
        await again.stop()
    assert not alive(new.pid)


async def test_a_failed_handover_keeps_the_old_helper(tmp_path, taker, caplog):
    async with Supervisor.open(tmp_path) as sup:
        old = await sup.supervise(taker_spec(taker, "1"))
    before = json.loads((tmp_path / "helpers" / "taker.json").read_text())
    Path(taker[3] + ".fail").touch()
    async with Supervisor.open(tmp_path) as sup:
        helper = await sup.supervise(taker_spec(taker, "2", stop_grace=2))
        assert helper.adopted and helper.pid == old.pid and alive(old.pid)
        assert pids_running([*taker, "--takeover"]) == []
        assert json.loads((tmp_path / "helpers" / "taker.json").read_text()) == before
        assert f"the replacement exited with status 3 before pid {old.pid} handed over; keeping pid {old.pid}" \
            in caplog.text
        await helper.stop()
    assert not alive(old.pid)


async def test_another_command_line_is_never_handed_over(tmp_path, taker):
    """Descriptors a helper passes on are bound to its settings: another command line stops it first."""
    async with Supervisor.open(tmp_path) as sup:
        old = await sup.supervise(taker_spec(taker, "1"))
    other = [*taker, "--other-setting"]
    try:
        async with Supervisor.open(tmp_path) as sup:
            new = await sup.supervise(taker_spec(other, "2", stop_grace=2))
            assert not alive(old.pid) and pids_running(other) == [new.pid]
            assert pids_running([*other, "--takeover"]) == []
            await new.stop()
    finally:
        for pid in pids_running(other):
            os.kill(pid, signal.SIGKILL)


async def test_a_helper_started_through_an_exec_wrapper_is_adopted(tmp_path, sleeper):
    """charon and wireguard-go are started through ``unshare … sh -c '… exec …'``: the process
    that stays shows the helper's own command line, and that is what adoption checks."""
    wrapped = ["sh", "-c", 'exec "$@"', "sh", *sleeper]

    async def exec_done() -> bool:
        return bool(pids_running(sleeper))

    async with Supervisor.open(tmp_path) as sup:
        first = await sup.supervise(ProcessSpec("wrapped", wrapped, exec_done))
    assert pids_running(sleeper) == [first.pid]
    async with Supervisor.open(tmp_path) as sup:
        again = await sup.supervise(ProcessSpec("wrapped", wrapped, exec_done, stop_grace=2))
        assert again.adopted and again.pid == first.pid
        await again.stop()
    assert not alive(first.pid)


async def test_a_helper_never_ready_is_failed_killed_and_retried(tmp_path, sleeper, registry, caplog):
    caplog.set_level(logging.INFO, "overlay.supervise")
    seen: set[int] = set()
    sup_box = []

    async def never_ready() -> bool:
        seen.add(sup_box[0].helpers["sleeper"].pid)
        return False

    spec = ProcessSpec("sleeper", sleeper, never_ready, ready_timeout=0.3, backoff_start=0.1, backoff_cap=0.2)
    async with Supervisor.open(tmp_path, registry) as sup:
        sup_box.append(sup)
        with trio.move_on_after(20):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(sup.supervise, spec)
                await wait_for(lambda: "sleeper" in sup.helpers and sup.helpers["sleeper"].restarts >= 2)
                helper = sup.helpers["sleeper"]
                assert helper.state in ("failed", "starting")
                assert sample(registry, "overlay_helper_up", "sleeper") == 0
                nursery.cancel_scope.cancel()
        await helper.stop()
    assert len(seen) >= 2 and not any(alive(pid) for pid in seen)
    failures = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert re.fullmatch(r"helper sleeper \(pid \d+\) was not ready within 0.3 s; restarting in 0\.\d s", failures[0])


async def test_ready_only_on_the_second_process_returns_then_without_on_restart(tmp_path, sleeper):
    probes: dict[int, int] = {}
    restarted = []
    box = []

    async def ready_from_second_process() -> bool:
        pid = box[0].helpers["sleeper"].pid
        probes.setdefault(pid, len(probes))
        return probes[pid] >= 1

    async def on_restart(helper):
        restarted.append(helper.pid)

    spec = ProcessSpec("sleeper", sleeper, ready_from_second_process, ready_timeout=0.3, on_restart=on_restart,
                       backoff_start=0.1, backoff_cap=0.2)
    async with Supervisor.open(tmp_path) as sup:
        box.append(sup)
        with trio.fail_after(20):
            helper = await sup.supervise(spec)
        assert helper.restarts == 1 and helper.state == "running" and len(probes) == 2 and restarted == []
        os.kill(helper.pid, signal.SIGKILL)
        await wait_for(lambda: restarted)
        assert helper.restarts == 2
        await helper.stop()


async def test_a_helper_exiting_before_it_is_ready_is_logged_with_its_status(tmp_path, caplog):
    caplog.set_level(logging.INFO, "overlay.supervise")

    async def ready() -> bool:
        return False

    spec = ProcessSpec("false", ["false"], ready, backoff_start=0.05, backoff_cap=0.1)
    async with Supervisor.open(tmp_path) as sup:
        with trio.move_on_after(20):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(sup.supervise, spec)
                await wait_for(lambda: "false" in sup.helpers and sup.helpers["false"].restarts >= 1)
                helper = sup.helpers["false"]
                nursery.cancel_scope.cancel()
        await helper.stop()
    assert re.search(r"helper false \(pid \d+\) exited with status 1 before it was ready; restarting in 0\.\d s",
                     caplog.text)


STUBBORN = ("import pathlib, signal, sys, time\n"
            "signal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
            "pathlib.Path(sys.argv[1]).touch()\n"
            "time.sleep(3600)\n")


async def test_stop_kills_a_helper_that_ignores_sigterm_after_the_grace(tmp_path, caplog):
    caplog.set_level(logging.INFO, "overlay.supervise")
    flag = tmp_path / "ready-flag"
    argv = [sys.executable, "-c", STUBBORN, str(flag)]

    async def ready() -> bool:  # the helper says it is usable by creating a file
        return flag.exists()

    try:
        async with Supervisor.open(tmp_path) as sup:
            helper = await sup.supervise(ProcessSpec("stubborn", argv, ready, stop_grace=0.5))
            pid = helper.pid
            assert flag.exists() and alive(pid)
            await helper.stop()
        assert not alive(pid)
        assert f"pid {pid} did not exit within 0.5 s of SIGTERM; sending SIGKILL" in caplog.text
    finally:
        for pid in pids_running(argv):
            os.kill(pid, signal.SIGKILL)


async def test_a_missing_command_is_a_one_line_error(tmp_path):
    async with Supervisor.open(tmp_path) as sup:
        with pytest.raises(OverlayError) as err:
            await sup.supervise(ProcessSpec("nope", ["/nonexistent/helper", "-f"], always_ready))
        assert str(err.value) == ("cannot start helper nope: /nonexistent/helper: No such file or directory; "
                                  "is it installed?")
        assert sup.helpers == {}


async def test_cleanup_stops_every_recorded_helper(tmp_path, sleeper, other_process):
    async with Supervisor.open(tmp_path) as sup:
        helper = await sup.supervise(ProcessSpec("sleeper", sleeper, always_ready))
    pid = helper.pid
    (tmp_path / "helpers" / "stale.json").write_text(json.dumps(
        {"pid": other_process.pid, "start_time": 1, "argv": sleeper}))
    async with Supervisor.open(tmp_path) as sup:
        assert await sup.cleanup() == ["sleeper"]
    assert not alive(pid) and other_process.poll() is None
    assert list((tmp_path / "helpers").glob("*.json")) == []


def test_same_process_checks_start_time_command_line_and_zombies():
    me = os.getpid()
    with open(f"/proc/{me}/cmdline", "rb") as fh:
        argv = [a.decode() for a in fh.read().split(b"\0")[:-1]]
    assert is_same_process(me, start_time(me), argv)
    assert not is_same_process(me, start_time(me) + 1, argv)
    assert not is_same_process(me, start_time(me), argv[:1] + ["x"])
    zombie = subprocess.Popen(["true"])  # exits, and stays a zombie until waited for
    deadline = time.monotonic() + 10
    while alive(zombie.pid) and time.monotonic() < deadline:
        time.sleep(0.01)
    assert start_time(zombie.pid) is not None
    assert not is_same_process(zombie.pid, start_time(zombie.pid), ["true"])
    zombie.wait()
    assert start_time(zombie.pid) is None


@pytest.mark.parametrize("name", ["", "a/b", ".hidden"])
def test_helper_names_are_plain_file_names(name):
    with pytest.raises(ValueError):
        ProcessSpec(name, ["sleep", "1"], always_ready)


async def test_cleanup_finds_and_stops_a_helper_started_through_an_exec_wrapper(tmp_path, sleeper, other_process):
    """``overlay-core cleanup`` matches the command line the helper showed once ready (charon's
    wrapper has exec'd by then), not the wrapper's argv; a stale record is never a live helper."""
    wrapped = ["sh", "-c", 'exec "$@"', "sh", *sleeper]

    async def exec_done() -> bool:
        return bool(pids_running(sleeper))

    async with Supervisor.open(tmp_path) as sup:
        helper = await sup.supervise(ProcessSpec("wrapped", wrapped, exec_done, stop_grace=2))
    (tmp_path / "helpers" / "stale.json").write_text(json.dumps(
        {"pid": other_process.pid, "start_time": 1, "argv": sleeper}))
    offline = Supervisor(tmp_path, tasks=None)
    assert offline.recorded() == {"wrapped": helper.pid}
    assert await offline.cleanup(["wrapped"]) == ["wrapped"]
    assert not alive(helper.pid) and other_process.poll() is None
    assert offline.recorded() == {}
