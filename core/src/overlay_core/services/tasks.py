"""``TaskGroup``: the long-lived tasks of the agent and its backends, on one core-owned nursery.

What: ``await tasks.start(fn, *args)`` (returns once ``fn`` calls ``task_status.started()``),
``tasks.start_soon(fn, *args)``, ``tasks.start_soon(fn, *args, restart=Backoff(...))`` for a
task that may fail and should come back, and ``tasks.start_every(seconds, fn, *args)`` for a poll
(a helper's status, counters) that runs for as long as the agent does.
Why: a backend may need a loop from any hook (a drift check, a helper watch), and the nursery it
runs on must outlive the hook. A plain task that raises fails the agent (fail fast: a bug must
not hide); a restarting one logs one line per failure and runs again after the backoff.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

import trio

from ..retry import Backoff

LOGGER = logging.getLogger("overlay.tasks")


class TaskGroup:
    """Start tasks on ``nursery``; ``TaskGroup.open()`` makes one with a nursery of its own."""

    def __init__(self, nursery: trio.Nursery, logger: logging.Logger = LOGGER) -> None:
        self._nursery = nursery
        self._logger = logger
        self._polls: set[str] = set()

    @classmethod
    @asynccontextmanager
    async def open(cls, logger: logging.Logger = LOGGER) -> AsyncIterator[TaskGroup]:
        async with trio.open_nursery() as nursery:
            yield cls(nursery, logger)

    @property
    def cancel_scope(self) -> trio.CancelScope:
        return self._nursery.cancel_scope

    async def start(self, fn: Callable[..., Awaitable[Any]], *args: Any, name: str | None = None) -> Any:
        """Run ``fn(*args, task_status=...)`` and return what it passes to ``task_status.started()``."""
        return await self._nursery.start(fn, *args, name=name or _name(fn))

    def start_soon(self, fn: Callable[..., Awaitable[Any]], *args: Any, name: str | None = None,
                   restart: Backoff | None = None) -> None:
        """Run ``fn(*args)``. With ``restart``, an exception is logged and ``fn`` runs again after
        ``restart.next()`` seconds (the backoff resets once a run outlasted its cap); returning ends it."""
        name = name or _name(fn)
        if restart is None:
            self._nursery.start_soon(fn, *args, name=name)
        else:
            self._nursery.start_soon(self._restarting, fn, args, name, restart, name=name)

    def start_every(self, interval: float, fn: Callable[..., Awaitable[Any]], *args: Any,
                    name: str | None = None) -> None:
        """Run ``fn(*args)`` now and then ``interval`` seconds after each run ends. A run that
        raises is logged at debug level (a poll of a helper that is restarting fails, and the
        helper's supervision reports that) and the next run comes as usual. A second call with
        the same ``name`` does nothing, so a hook that fires again (a new lease) may call it."""
        name = name or _name(fn)
        if name not in self._polls:
            self._polls.add(name)
            self._nursery.start_soon(self._every, interval, fn, args, name, name=name)

    async def _every(self, interval: float, fn: Callable[..., Awaitable[Any]], args: tuple[Any, ...],
                     name: str) -> None:
        while True:
            try:
                await fn(*args)
            except Exception as exc:
                self._logger.debug("%s: %s: %s", name, type(exc).__name__, exc)
            await trio.sleep(interval)

    async def _restarting(self, fn: Callable[..., Awaitable[Any]], args: tuple[Any, ...], name: str,
                          backoff: Backoff) -> None:
        while True:
            started = trio.current_time()
            try:
                await fn(*args)
                return
            except Exception as exc:
                if trio.current_time() - started > backoff.cap:
                    backoff.reset()
                delay = backoff.next()
                self._logger.warning("%s failed: %s: %s; restarting in %.1f s", name, type(exc).__name__, exc, delay)
                self._logger.debug("%s failure", name, exc_info=exc)
            await trio.sleep(delay)


def _name(fn: Callable[..., Any]) -> str:
    return getattr(fn, "__qualname__", None) or repr(fn)
