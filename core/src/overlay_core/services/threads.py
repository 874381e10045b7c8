"""OS threads for blocking work that must stay off the trio loop.

What:
- ``DedicatedThread``: one thread owns one blocking resource (a pyroute2 ``IPRoute``, a
  ``vici.Session``) and runs every request on it in order: ``await t.call(lambda r: r.get_links())``.
- ``run_worker``: a thread running a packet loop ``fn(stop, *args)`` until trio stops it; ``stop``
  has a ``fileno()`` the loop polls beside its sockets, so stopping never waits for a packet.
- ``Swappable``: a reference to an immutable value (a peer route table) that trio replaces
  whole and a worker thread reads without a lock, once per packet.
Why: such libraries keep per-thread state (pyroute2 opens a socket per thread), so trio's
thread pool would multiply them; and a request handed to the kernel must not be abandoned
half-way because the trio caller was cancelled.
"""

from __future__ import annotations

import logging
import os
import queue
import threading
from collections.abc import Callable
from typing import Any, Generic, TypeVar

import trio

LOGGER = logging.getLogger("overlay.threads")

R = TypeVar("R")
T = TypeVar("T")
CLOSE_TIMEOUT = 2.0


def _deliver(token: trio.lowlevel.TrioToken, done: trio.Event) -> None:
    try:
        token.run_sync_soon(done.set)
    except trio.RunFinishedError:  # the trio run that asked is gone; nobody waits any more
        pass


class DedicatedThread(Generic[R]):
    """One OS thread named ``name`` owns the resource ``open()`` makes; ``call(fn)`` runs ``fn(resource)`` there.

    The thread starts with the first call; ``open`` runs on it then, and again on the next
    call if it raised (the error goes to the caller), so a daemon that is not up yet can be
    retried. ``close()`` runs ``close(resource)`` on the thread after the queued calls and
    ends it; a later call starts afresh.
    """

    def __init__(self, name: str, open: Callable[[], R], close: Callable[[R], None] | None = None) -> None:
        self.name = name
        self._open, self._close = open, close
        self._queue: queue.SimpleQueue = queue.SimpleQueue()
        self._thread: threading.Thread | None = None

    def _run(self) -> None:
        resource: Any = None
        opened = False
        try:
            while (item := self._queue.get()) is not None:
                fn, token, done, box = item
                try:
                    if not opened:
                        resource, opened = self._open(), True
                    box.append((True, fn(resource)))
                except BaseException as exc:  # handed back to the trio caller
                    box.append((False, exc))
                _deliver(token, done)
        finally:
            if opened and self._close is not None:
                try:
                    self._close(resource)
                except Exception:
                    LOGGER.exception("%s: closing failed", self.name)

    async def call(self, fn: Callable[[R], T]) -> T:
        """``fn(resource)`` on the thread; its result, or its exception raised here.

        Once queued, the request runs to completion even if the caller is cancelled meanwhile
        (the wait is shielded; the cancellation takes effect at the caller's next checkpoint),
        so the kernel never applies an operation the agent believes was abandoned.
        """
        await trio.lowlevel.checkpoint_if_cancelled()
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name=self.name, daemon=True)
            self._thread.start()
        done = trio.Event()
        box: list[tuple[bool, Any]] = []
        self._queue.put((fn, trio.lowlevel.current_trio_token(), done, box))
        with trio.CancelScope(shield=True):
            await done.wait()
        ok, value = box[0]
        if not ok:
            raise value
        return value

    def close(self) -> None:
        """Finish the queued calls, close the resource and end the thread (waits up to 2 s)."""
        if self._thread is not None:
            self._queue.put(None)
            self._thread.join(timeout=CLOSE_TIMEOUT)
            self._thread = None


class StopSignal:
    """Set once by trio, seen by a worker: ``is_set()`` to test, ``fileno()`` (an eventfd) to poll on.

    The eventfd is closed when the worker ends (``close``); setting it afterwards does nothing.
    """

    def __init__(self) -> None:
        self._event = threading.Event()
        self._lock = threading.Lock()
        self._fd: int | None = os.eventfd(0, os.EFD_CLOEXEC | os.EFD_NONBLOCK)

    def fileno(self) -> int:
        """Readable once the signal is set: put it in the worker's poll/epoll set."""
        if self._fd is None:
            raise ValueError("the stop signal is closed")
        return self._fd

    def is_set(self) -> bool:
        return self._event.is_set()

    def set(self) -> None:
        with self._lock:
            if not self._event.is_set():
                self._event.set()
                if self._fd is not None:
                    os.eventfd_write(self._fd, 1)

    def close(self) -> None:
        with self._lock:
            if self._fd is not None:
                os.close(self._fd)
                self._fd = None


class Worker:
    """A thread running ``fn(stop, *args)``, from ``run_worker``.

    ``await wait()`` returns when the thread has ended and raises what ``fn`` raised; run it
    as a task (``tasks.start_soon(worker.wait)``) so a crashed packet loop fails like any task.
    ``await stop()`` sets the signal, wakes the thread and waits for it the same way.
    """

    def __init__(self, name: str, fn: Callable[..., None], args: tuple[Any, ...]) -> None:
        self.name = name
        self.stop_signal = StopSignal()
        self._done = trio.Event()
        self._error: BaseException | None = None
        token = trio.lowlevel.current_trio_token()

        def run() -> None:
            try:
                fn(self.stop_signal, *args)
            except BaseException as exc:
                self._error = exc
            finally:
                self.stop_signal.close()
                _deliver(token, self._done)

        self._thread = threading.Thread(target=run, name=name, daemon=True)
        self._thread.start()

    @property
    def running(self) -> bool:
        return not self._done.is_set()

    async def wait(self) -> None:
        await self._done.wait()
        self._thread.join()  # it has returned from fn already: this is immediate
        if self._error is not None:
            raise self._error

    async def stop(self) -> None:
        """Ask the loop to stop and wait for it (shielded: a stop always completes)."""
        self.stop_signal.set()
        with trio.CancelScope(shield=True):
            await self.wait()


def run_worker(name: str, fn: Callable[..., None], *args: Any) -> Worker:
    """Start ``fn(stop, *args)`` on a new OS thread called ``name``; call from trio."""
    return Worker(name, fn, args)


class Swappable(Generic[T]):
    """A value trio replaces whole (``set``) and worker threads read lock-free (``get``).

    Rebinding one attribute is atomic in CPython, so a reader sees the old value or the new one,
    never a mix. The value must be immutable (tuple, frozenset, ``MappingProxyType`` of a fresh
    dict): build the new table, then ``set`` it.
    """

    __slots__ = ("_value",)

    def __init__(self, value: T) -> None:
        self._value = value

    def get(self) -> T:
        return self._value

    def set(self, value: T) -> None:
        self._value = value
