"""Retry pacing and quiet logging for things that fail for a while: etcd, helpers, cloud APIs.

``Backoff`` spaces out attempts (exponential, capped, jittered so that many agents do not retry
in step); ``OutageLog`` reports an outage once when it starts, then every ``every`` seconds with
its duration, and once when it ends; ``LogOnce`` reports a condition once per key (a peer with
an unusable lease, an option that is ignored) however often it is met.
"""

from __future__ import annotations

import logging
import random
from collections import OrderedDict
from collections.abc import Callable, Hashable

import trio


class Backoff:
    """Delays ``start, start*factor, …`` up to ``cap``, each spread by ``±jitter`` (a fraction).

    ``next()`` returns the delay to wait now and grows the next one; ``reset()`` after a success.
    The cap bounds the base delay, so with ``jitter=0.5`` a delay lies in ``[base/2, base*1.5)``.
    ``next(limit=s)`` never returns more than ``s`` (the time left before a deadline; 0 or less
    gives 0).
    """

    def __init__(self, start: float, cap: float, factor: float = 2.0, jitter: float = 0.5,
                 rand: random.Random | None = None) -> None:
        if not 0 < start <= cap or factor < 1 or not 0 <= jitter <= 1:
            raise ValueError(f"invalid backoff: start={start} cap={cap} factor={factor} jitter={jitter}")
        self.start, self.cap, self.factor, self.jitter = start, cap, factor, jitter
        self._rand = rand or random.Random()
        self._base = start

    def next(self, limit: float | None = None) -> float:
        delay = self._base * (1 - self.jitter + 2 * self.jitter * self._rand.random()) if self.jitter else self._base
        self._base = min(self._base * self.factor, self.cap)
        return delay if limit is None else max(0.0, min(delay, limit))

    def reset(self) -> None:
        self._base = self.start

    async def sleep(self, limit: float | None = None) -> None:
        """``await trio.sleep(self.next(limit))``."""
        await trio.sleep(self.next(limit))


class OutageLog:
    """One warning when ``what`` starts failing, one every ``every`` s while it lasts, one info when it works again.

    ``failed(error)`` after each failed attempt, ``recovered()`` after each success (silent unless
    an outage was in progress). ``note`` is added to the warning, e.g. "the data plane stays as it
    is". Time comes from ``clock`` (trio's clock by default, so tests with a mock clock see it).
    """

    def __init__(self, logger: logging.Logger, what: str, every: float = 30.0, note: str = "",
                 clock: Callable[[], float] = trio.current_time) -> None:
        self.logger, self.what, self.every, self.note, self._clock = logger, what, every, note, clock
        self.since: float | None = None
        self._logged: float | None = None

    @property
    def down(self) -> bool:
        return self.since is not None

    def failed(self, error: object) -> None:
        now = self._clock()
        if self.since is None:
            self.since = now
        if self._logged is None or now - self._logged >= self.every:
            self._logged = now
            note = f"{self.note}; " if self.note else ""
            self.logger.warning("%s: %s; %sretrying (down for %.0f s)", self.what, error, note, now - self.since)

    def recovered(self) -> float | None:
        """End the outage; returns its duration in seconds, None when there was none."""
        if self.since is None:
            return None
        lasted = self._clock() - self.since
        self.logger.info("%s: working again after %.1f s", self.what, lasted)
        self.since = self._logged = None
        return lasted


class LogOnce:
    """Log a message once per key; remembers at most ``limit`` keys (the oldest are forgotten first).

    ``forget(key)`` when the condition is over, so that it is reported again if it comes back.
    """

    def __init__(self, logger: logging.Logger, limit: int = 1024) -> None:
        self.logger, self.limit = logger, limit
        self._seen: OrderedDict[Hashable, None] = OrderedDict()

    def log(self, key: Hashable, level: int, msg: str, *args: object) -> bool:
        """Log ``msg % args`` at ``level`` unless ``key`` was logged already; True when it was logged now."""
        if key in self._seen:
            return False
        self._seen[key] = None
        if len(self._seen) > self.limit:
            self._seen.popitem(last=False)
        self.logger.log(level, msg, *args)
        return True

    def warning(self, key: Hashable, msg: str, *args: object) -> bool:
        return self.log(key, logging.WARNING, msg, *args)

    def info(self, key: Hashable, msg: str, *args: object) -> bool:
        return self.log(key, logging.INFO, msg, *args)

    def forget(self, key: Hashable) -> None:
        self._seen.pop(key, None)
