"""One OS thread that owns one blocking resource (here a ``vici.Session``).

A local stand-in with the interface of core's ``DedicatedThread(name, open, close)``
(RUNTIME-API.md): ``await t.call(fn)`` runs ``fn(resource)`` on that thread. Why not
``trio.to_thread.run_sync`` with a ``CapacityLimiter(1)``: trio's worker threads are pooled, so
successive calls may land on different OS threads; the session is then shared across threads
(safe only with an extra lock) and a cancelled caller abandons a call still running on a pool
thread. One thread with a queue serialises calls by construction, and cancellation only stops
the waiting: the call itself finishes on its thread and its result is dropped.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable
from typing import Any, Generic, TypeVar

import trio

R = TypeVar("R")
T = TypeVar("T")


class _Job:
    __slots__ = ("fn", "done", "token", "result", "error")

    def __init__(self, fn: Callable[[Any], Any], token: trio.lowlevel.TrioToken) -> None:
        self.fn, self.token, self.done = fn, token, trio.Event()
        self.result: Any = None
        self.error: BaseException | None = None


class DedicatedThread(Generic[R]):
    """``open()`` runs on the thread at the first call; ``close(resource)`` at :meth:`stop`."""

    def __init__(self, name: str, open: Callable[[], R], close: Callable[[R], None]) -> None:
        self._open, self._close = open, close
        self._jobs: queue.SimpleQueue[_Job | None] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        resource: R | None = None
        opened = False
        while (job := self._jobs.get()) is not None:
            try:
                if not opened:
                    resource, opened = self._open(), True
                job.result = job.fn(resource)
            except BaseException as exc:  # handed to the caller
                job.error = exc
            try:
                job.token.run_sync_soon(job.done.set)
            except trio.RunFinishedError:
                pass
        if opened:
            self._close(resource)  # type: ignore[arg-type]

    async def call(self, fn: Callable[[R], T]) -> T:
        """Run ``fn(resource)`` on the thread and return its result (or raise its error)."""
        if not self._thread.is_alive():
            raise RuntimeError(f"thread {self._thread.name} is stopped")
        job = _Job(fn, trio.lowlevel.current_trio_token())
        self._jobs.put(job)
        await job.done.wait()
        if job.error is not None:
            raise job.error
        return job.result

    async def stop(self) -> None:
        """Finish queued calls, close the resource, end the thread."""
        self._jobs.put(None)
        await trio.to_thread.run_sync(self._thread.join)
