"""Supervised helper processes (wireguard-go, charon): started or adopted, probed, restarted.

What: ``await supervisor.supervise(ProcessSpec(...))`` returns a ``Helper`` once the helper's
``ready()`` probe answers True. The helper is adopted when ``state_dir/helpers/<name>.json``
names a live process with the recorded start time (``/proc/<pid>/stat`` field 22) and command
line, else started in a session of its own with its output appended to
``state_dir/helpers/<name>.log``. A recorded process with another command line is stopped
first; one of another ``version`` too, unless the spec has ``handover_args``: then a new process
started beside it takes its work over (the old one exits; if the new one fails, it is kept).
It is watched through a pidfd (which works for an adopted pid that is not our child), restarted
with a ``Backoff`` when it dies or is not ready within ``ready_timeout`` (one log line each
time), and ``on_restart`` runs once it is ready again.
Why: the data path lives in these daemons. An agent restart or ``kill -9`` must not take it
down, so a survivor is never our process group's member nor tied to a pipe of ours; and a
restarted daemon forgets its configuration, so its backend must be told to program it again.
A recorded pid that now belongs to another process (pid reuse) is never signalled.
"""

from __future__ import annotations

import itertools
import json
import logging
import os
import select
import signal
import subprocess
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import trio

from ..errors import OverlayError
from ..retry import Backoff
from .files import atomic_write, ensure_dir
from .tasks import TaskGroup

LOGGER = logging.getLogger("overlay.supervise")

READY_POLL = 0.1  # seconds between two ready() probes
LOG_ROTATE_BYTES = 1 << 20  # at a (re)start, a larger log is moved to <name>.log.1


@dataclass(frozen=True)
class ProcessSpec:
    """How to run one helper. The helper must stay in the foreground (``wireguard-go -f``); a
    wrapper that ``exec``s it (``unshare … sh -c '… exec charon'``) is fine: the command line the
    process shows once ready is recorded, and adoption compares with that. ``env`` is added to
    the agent's environment."""

    name: str  # unique per agent, a file name: "wireguard-go-flannel-wg"
    argv: Sequence[str]
    ready: Callable[[], Awaitable[bool]]  # True once usable (a UAPI or VICI socket answers)
    env: Mapping[str, str] = field(default_factory=dict)
    ready_timeout: float = 10.0
    survive_agent: bool = True  # False: stopped with the agent, never adopted
    on_restart: Callable[[Helper], Awaitable[None]] | None = None
    backoff_start: float = 0.5
    backoff_cap: float = 30.0
    stop_grace: float = 5.0  # SIGTERM, then SIGKILL after this many seconds
    version: str = ""  # the helper's code; a recorded process of another version is replaced ("": not compared)
    handover_args: Sequence[str] = ()  # appended to argv: a new version takes over from the old process

    def __post_init__(self) -> None:
        if not self.name or "/" in self.name or self.name.startswith("."):
            raise ValueError(f"helper name {self.name!r} must be a plain file name")
        if not self.argv:
            raise ValueError(f"helper {self.name}: argv is empty")


def _stat_fields(pid: int) -> list[str] | None:
    """Fields 3… of ``/proc/<pid>/stat`` (after the command name, which may hold spaces), None if gone."""
    try:
        with open(f"/proc/{pid}/stat") as fh:
            text = fh.read()
    except OSError:
        return None
    return text[text.rindex(")") + 2:].split()


def start_time(pid: int) -> int | None:
    """The process' start time in clock ticks since boot (stat field 22); None if it is gone."""
    fields = _stat_fields(pid)
    return int(fields[19]) if fields else None


def _cmdline(pid: int) -> list[str] | None:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as fh:
            raw = fh.read()
    except OSError:
        return None
    return [part.decode(errors="surrogateescape") for part in raw.split(b"\0")[:-1]]


def is_same_process(pid: int, started: int | None, argv: Sequence[str]) -> bool:
    """True when ``pid`` runs (not a zombie), started at ``started`` and has command line ``argv``."""
    fields = _stat_fields(pid)
    if fields is None or fields[0] in ("Z", "X") or started is None or int(fields[19]) != started:
        return False
    return _cmdline(pid) == list(argv)


class _Process:
    """A helper process we started (``child``) or adopted, with a pidfd for signals and watching."""

    def __init__(self, pid: int, child: trio.Process | None = None) -> None:
        self.pid, self.child = pid, child
        self.pidfd = os.pidfd_open(pid)  # ProcessLookupError when it is gone already

    def alive(self) -> bool:
        if self.child is not None:
            return self.child.poll() is None
        return not select.select([self.pidfd], [], [], 0)[0]

    async def wait(self) -> int | None:
        """Until it exits; its return code (negative: killed by that signal), None for an adopted one."""
        if self.child is not None:
            return await self.child.wait()  # trio reaps our child
        await trio.lowlevel.wait_readable(self.pidfd)
        return None

    def signal(self, sig: int) -> None:
        try:
            signal.pidfd_send_signal(self.pidfd, sig)
        except ProcessLookupError:
            pass

    async def terminate(self, grace: float) -> None:
        """SIGTERM, SIGKILL after ``grace`` s; returns once it is gone (shielded from cancellation)."""
        with trio.CancelScope(shield=True):
            self.signal(signal.SIGTERM)
            with trio.move_on_after(grace):
                await self.wait()
                return
            LOGGER.warning("pid %d did not exit within %g s of SIGTERM; sending SIGKILL", self.pid, grace)
            self.signal(signal.SIGKILL)
            await self.wait()

    def close(self) -> None:
        trio.lowlevel.notify_closing(self.pidfd)
        os.close(self.pidfd)


def _describe(code: int | None) -> str:
    if code is None:
        return "exited"
    if code < 0:
        try:
            return f"was killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"was killed by signal {-code}"
    return f"exited with status {code}"


class Helper:
    """One supervised process: ``pid``, ``state`` ("starting", "running", "restarting", "failed",
    "stopped"), ``restarts``, ``since`` (Unix time of the last state change), ``adopted``."""

    def __init__(self, supervisor: Supervisor, spec: ProcessSpec) -> None:
        self.spec = spec
        self.name = spec.name
        self.pid: int | None = None
        self.state = "starting"
        self.since = time.time()
        self.restarts = 0
        self.adopted = False
        self._supervisor = supervisor
        self._proc: _Process | None = None
        self._scope: trio.CancelScope | None = None
        self._stopping = False
        self._finished = trio.Event()

    def _set_state(self, state: str) -> None:
        if state != self.state:
            self.state, self.since = state, time.time()
        self._supervisor._set_up(self.name, state == "running")

    def report(self) -> dict[str, Any]:
        return {"pid": self.pid, "state": self.state, "restarts": self.restarts, "since": self.since,
                "adopted": self.adopted}

    def restart(self, reason: str) -> bool:
        """Ask the running process to end (SIGTERM) so that supervision starts it anew, with the
        usual backoff and ``on_restart``: for a helper whose state the backend found broken beyond
        repair from outside (a TUN device it made, deleted by hand). False when none runs."""
        if self.state != "running" or self.pid is None:
            return False
        LOGGER.warning("restarting helper %s (pid %d): %s", self.name, self.pid, reason)
        try:
            os.kill(self.pid, signal.SIGTERM)
        except ProcessLookupError:
            return False
        return True

    async def stop(self) -> None:
        """Stop supervising, terminate the process (SIGTERM, then SIGKILL) and remove its record.

        Also after its watch ended with the agent (or a cancelled ``supervise``): then the
        recorded process is stopped if it still runs.
        """
        self._stopping = True
        if self._scope is not None:
            self._scope.cancel()
        await self._finished.wait()
        if self.state != "stopped":
            await self._supervisor._stop_recorded(self.name)
            self._set_state("stopped")
            if self._supervisor.helpers.get(self.name) is self:
                del self._supervisor.helpers[self.name]


class Supervisor:
    """Keeps the helpers of one agent; their watch tasks run on ``tasks``.

    ``registry``: a Prometheus registry for ``overlay_helper_restarts_total{helper}`` and
    ``overlay_helper_up{helper}``.
    """

    def __init__(self, state_dir: str | os.PathLike[str], tasks: TaskGroup, registry: Any = None,
                 rand: Any = None) -> None:
        self.directory = Path(state_dir) / "helpers"
        self.tasks = tasks
        self.helpers: dict[str, Helper] = {}
        self._rand = rand
        self._restarts = self._up = None
        if registry is not None:
            from ..metrics import Counter, Gauge

            self._restarts = Counter("overlay_helper_restarts", "Restarts of a supervised helper process",
                                     ["helper"], registry=registry)
            self._up = Gauge("overlay_helper_up", "1 while a supervised helper process runs and is ready",
                             ["helper"], registry=registry)

    @classmethod
    @asynccontextmanager
    async def open(cls, state_dir: str | os.PathLike[str], registry: Any = None) -> AsyncIterator[Supervisor]:
        """A supervisor with a task group of its own, for as long as the ``async with`` lasts.

        Leaving it is an agent stop: survivors keep running, the others are stopped.
        """
        async with TaskGroup.open(LOGGER) as tasks:
            try:
                yield cls(state_dir, tasks, registry)
            finally:
                tasks.cancel_scope.cancel()

    def report(self) -> dict[str, dict[str, Any]]:
        """JSON-safe state of every helper, by name (for ``/readyz``)."""
        return {name: helper.report() for name, helper in sorted(self.helpers.items())}

    async def supervise(self, spec: ProcessSpec) -> Helper:
        """Adopt or start the helper; returns once its ``ready()`` probe answered True.

        A first start that cannot run the command at all raises ``OverlayError``; a helper that
        starts but is not ready is retried with backoff (this call waits on: bound it with
        ``trio.fail_after`` if the caller must give up).
        """
        if spec.name in self.helpers:
            raise ValueError(f"helper {spec.name} is supervised already")
        helper = self.helpers[spec.name] = Helper(self, spec)
        if self._restarts is not None:
            self._restarts.labels(helper=spec.name)
        try:
            await self.tasks.start(self._keep, helper, name=f"helper {spec.name}")
        except BaseException:
            self.helpers.pop(spec.name, None)
            raise
        return helper

    def recorded(self) -> dict[str, int]:
        """Recorded helpers whose process still runs as recorded, by name: their pids (``cleanup --dry-run``)."""
        out = {}
        for path in sorted(self.directory.glob("*.json")):
            name = path.name[:-len(".json")]
            record = self._read_record(name)
            if record and is_same_process(record["pid"], record["start_time"], record.get("cmdline") or record["argv"]):
                out[name] = record["pid"]
        return out

    async def cleanup(self, names: Sequence[str] | None = None) -> list[str]:
        """Stop the recorded helpers ``names`` (default: every one) that still run, and drop their
        records (``overlay-core cleanup``); the names stopped."""
        if names is None:
            names = [path.name[:-len(".json")] for path in sorted(self.directory.glob("*.json"))]
        return [name for name in names if await self._stop_recorded(name)]

    async def _stop_recorded(self, name: str) -> bool:
        """Terminate the process the record of ``name`` names if it still runs as recorded (the command
        line it showed once ready: a wrapper has exec'd by then); drop the record."""
        record = self._read_record(name)
        stopped = False
        if record and is_same_process(record["pid"], record["start_time"], record.get("cmdline") or record["argv"]):
            try:
                proc = _Process(record["pid"])
            except ProcessLookupError:
                pass
            else:
                await proc.terminate(float(record.get("stop_grace", 5.0)))
                proc.close()
                stopped = True
        self._remove_record(name)
        return stopped

    # -- the watch task ------------------------------------------------------------------

    async def _keep(self, helper: Helper, *, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        spec = helper.spec
        backoff = Backoff(spec.backoff_start, spec.backoff_cap, rand=self._rand)
        started = False  # ready once: supervise() has returned
        with trio.CancelScope() as helper._scope:
            try:
                helper._proc = await self._adopt(helper)
                for attempt in itertools.count():
                    since = trio.current_time()
                    try:
                        if helper._proc is None:
                            helper._proc = await self._spawn(helper)
                    except OSError as exc:
                        if attempt == 0:
                            raise OverlayError(f"cannot start helper {spec.name}: {spec.argv[0]}: "
                                               f"{exc.strerror or exc}; is it installed?") from None
                        pid, problem = None, f"could not be started: {exc.strerror or exc}"
                        helper._set_state("failed")
                    else:
                        pid = helper._proc.pid
                        problem, ready = await self._run_once(helper, started, task_status)
                        started = started or ready
                    if trio.current_time() - since > backoff.cap:
                        backoff.reset()
                    delay = backoff.next()
                    helper.restarts += 1
                    if self._restarts is not None:
                        self._restarts.labels(helper=spec.name).inc()
                    LOGGER.warning("helper %s%s %s; restarting in %.1f s",
                                   spec.name, f" (pid {pid})" if pid else "", problem, delay)
                    await trio.sleep(delay)
            finally:
                await self._finish(helper)

    async def _run_once(self, helper: Helper, started: bool, task_status: Any) -> tuple[str, bool]:
        """Wait until the current process is ready, then until it exits: why it is gone (it is by
        then), and whether it was ready. The first ready ends ``supervise()``, later ones call ``on_restart``."""
        proc = helper._proc
        assert proc is not None
        helper.pid = proc.pid
        helper._set_state("starting")
        problem = await self._wait_ready(helper, proc)
        if problem is None:
            self._note_cmdline(helper.spec, proc.pid)
            helper._set_state("running")
            if not started:
                task_status.started()
            elif helper.spec.on_restart is not None:
                await self._on_restart(helper)
            problem = _describe(await proc.wait())
            helper._set_state("restarting")
        else:
            helper._set_state("failed")
            await proc.terminate(helper.spec.stop_grace)
        helper._proc = None
        proc.close()
        return problem, helper.state == "restarting"

    async def _finish(self, helper: Helper) -> None:
        """The watch ends: a stopped helper, or one that must not outlive the agent, goes with it."""
        proc = helper._proc
        if helper._stopping or not helper.spec.survive_agent:
            if proc is not None:
                await proc.terminate(helper.spec.stop_grace)
            self._remove_record(helper.name)
            helper._set_state("stopped")
            self.helpers.pop(helper.name, None)
        if proc is not None:
            proc.close()
            helper._proc = None
        helper._finished.set()

    async def _wait_ready(self, helper: Helper, proc: _Process) -> str | None:
        """None once ``ready()`` is True; else why not (exited, or not ready in time)."""
        with trio.move_on_after(helper.spec.ready_timeout):
            while True:
                if not proc.alive():
                    return f"{_describe(proc.child.returncode if proc.child else None)} before it was ready"
                try:
                    if await helper.spec.ready():
                        return None
                except Exception as exc:  # a probe that cannot connect yet: not ready
                    LOGGER.debug("helper %s: ready probe: %s", helper.name, exc)
                await trio.sleep(READY_POLL)
        return f"was not ready within {helper.spec.ready_timeout:g} s"

    async def _on_restart(self, helper: Helper) -> None:
        try:
            await helper.spec.on_restart(helper)  # type: ignore[misc]
        except Exception as exc:
            LOGGER.warning("helper %s: on_restart failed: %s: %s", helper.name, type(exc).__name__, exc)

    async def _adopt(self, helper: Helper) -> _Process | None:
        """The recorded process of a previous agent when it still runs as recorded; stops it when it
        must not be kept (other command line, or not meant to survive); ignores a reused pid."""
        spec = helper.spec
        record = self._read_record(spec.name)
        if record is None:
            return None
        pid = record["pid"]
        proc = None
        shown = record.get("cmdline") or record["argv"]
        if is_same_process(pid, record["start_time"], shown):
            try:
                proc = _Process(pid)
            except ProcessLookupError:
                proc = None
        # checked again with the pidfd open: the pid cannot be reused under it any more
        if proc is None or not is_same_process(pid, record["start_time"], shown):
            if proc is not None:
                proc.close()
            self._remove_record(spec.name)
            return None
        same_version = not spec.version or record.get("version") == spec.version
        if spec.survive_agent and record["argv"] == list(spec.argv) and same_version:
            LOGGER.info("helper %s: adopting pid %d left running by the previous agent", spec.name, pid)
            helper.adopted = True
            return proc
        if not spec.survive_agent:
            why = "it must not outlive its agent"
        elif record["argv"] != list(spec.argv):
            why = "its command line changed"
        else:
            why = f"it runs version {record.get('version') or '(unrecorded)'}, this agent has {spec.version}"
        if spec.survive_agent and spec.handover_args and record["argv"] == list(spec.argv):
            LOGGER.info("helper %s: replacing pid %d left by the previous agent (%s): the new process takes over "
                        "from it", spec.name, pid, why)
            return await self._hand_over(helper, proc, record)
        LOGGER.info("helper %s: stopping pid %d left by the previous agent: %s", spec.name, pid, why)
        await proc.terminate(spec.stop_grace)
        proc.close()
        self._remove_record(spec.name)
        return None

    async def _hand_over(self, helper: Helper, old: _Process, record: dict[str, Any]) -> _Process:
        """Start the replacement with ``handover_args`` beside ``old`` and return it once ``old`` has
        exited (it handed its work over). When the replacement cannot start, exits first or ``old``
        does not exit within ``ready_timeout``, the replacement goes and ``old`` is kept (adopted)."""
        spec = helper.spec
        try:
            new = await self._spawn(helper, spec.handover_args)
        except OSError as exc:
            problem, new = f"could not be started: {exc.strerror or exc}", None
        else:
            gone: list[_Process] = []

            async def watch(proc: _Process, cancel: trio.CancelScope) -> None:
                await proc.wait()
                gone.append(proc)
                cancel.cancel()

            with trio.move_on_after(spec.ready_timeout):
                async with trio.open_nursery() as nursery:
                    for proc in (old, new):
                        nursery.start_soon(watch, proc, nursery.cancel_scope)
            if gone and gone[0] is old:
                LOGGER.info("helper %s: pid %d took over from pid %d", spec.name, new.pid, old.pid)
                old.close()
                return new
            problem = (f"{_describe(new.child.returncode if new.child else None)} before pid {old.pid} handed over"
                       if gone else f"pid {old.pid} did not hand over within {spec.ready_timeout:g} s")
            await new.terminate(spec.stop_grace)
            new.close()
        LOGGER.warning("helper %s: the replacement %s; keeping pid %d", spec.name, problem, old.pid)
        atomic_write(self._record_path(spec.name), json.dumps(record) + "\n", 0o644)
        helper.adopted = True
        return old

    async def _spawn(self, helper: Helper, extra_args: Sequence[str] = ()) -> _Process:
        """Start the helper (own session for a survivor), output appended to its log; OSError if it cannot run."""
        spec = helper.spec
        argv = [*spec.argv, *extra_args]
        ensure_dir(self.directory)
        log_path = self.directory / f"{spec.name}.log"
        if log_path.exists() and log_path.stat().st_size > LOG_ROTATE_BYTES:
            os.replace(log_path, log_path.with_name(log_path.name + ".1"))
        with open(log_path, "ab") as log, trio.CancelScope(shield=True):
            log.write(f"--- {time.strftime('%Y-%m-%dT%H:%M:%S%z')} overlay: starting {argv}\n".encode())
            log.flush()
            child = await trio.lowlevel.open_process(
                argv, stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                start_new_session=spec.survive_agent, env={**os.environ, **spec.env},
            )
            proc = _Process(child.pid, child)
            self._write_record(spec, child.pid, argv)
        return proc

    # -- records and metrics ---------------------------------------------------------------

    def _record_path(self, name: str) -> Path:
        return self.directory / f"{name}.json"

    def _write_record(self, spec: ProcessSpec, pid: int, argv: list[str]) -> None:
        """``argv``: the spec's (compared at adoption); ``cmdline``: what was run (handover arguments
        included), until the ready process shows its own."""
        record = {"pid": pid, "start_time": start_time(pid), "argv": list(spec.argv), "cmdline": argv,
                  "version": spec.version, "survive_agent": spec.survive_agent, "stop_grace": spec.stop_grace}
        atomic_write(self._record_path(spec.name), json.dumps(record) + "\n", 0o644)

    def _note_cmdline(self, spec: ProcessSpec, pid: int) -> None:
        """Record what the ready process shows as its command line (a wrapper has exec'd by now)."""
        record = self._read_record(spec.name)
        shown = _cmdline(pid)
        if record is not None and record["pid"] == pid and shown and record.get("cmdline") != shown:
            record["cmdline"] = shown
            atomic_write(self._record_path(spec.name), json.dumps(record) + "\n", 0o644)

    def _read_record(self, name: str) -> dict[str, Any] | None:
        try:
            record = json.loads(self._record_path(name).read_text())
            if isinstance(record["pid"], int) and isinstance(record["argv"], list):
                return record
        except FileNotFoundError:
            return None
        except (OSError, ValueError, KeyError, TypeError):
            pass
        LOGGER.info("helper %s: ignoring the unreadable record %s", name, self._record_path(name))
        return None

    def _remove_record(self, name: str) -> None:
        try:
            self._record_path(name).unlink()
        except FileNotFoundError:
            pass

    def _set_up(self, name: str, up: bool) -> None:
        if self._up is not None:
            self._up.labels(helper=name).set(1 if up else 0)
