import logging
import random

import pytest
import trio
from overlay_core.retry import Backoff, LogOnce, OutageLog

LOGGER = logging.getLogger("overlay.test.retry")


def test_backoff_without_jitter_doubles_up_to_the_cap_and_resets():
    b = Backoff(0.1, 1.0, jitter=0)
    assert [round(b.next(), 3) for _ in range(6)] == [0.1, 0.2, 0.4, 0.8, 1.0, 1.0]
    b.reset()
    assert b.next() == 0.1


def test_backoff_jitter_spreads_each_delay_around_its_base():
    b = Backoff(1.0, 4.0, jitter=0.5, rand=random.Random(7))
    bases = [1.0, 2.0, 4.0, 4.0, 4.0]
    delays = [b.next() for _ in bases]
    for delay, base in zip(delays, bases):
        assert base * 0.5 <= delay < base * 1.5
    assert len(set(delays)) == len(delays)


def test_backoff_same_seed_same_delays_and_other_factor():
    a, b = Backoff(0.2, 5, factor=3, rand=random.Random(1)), Backoff(0.2, 5, factor=3, rand=random.Random(1))
    assert [a.next() for _ in range(5)] == [b.next() for _ in range(5)]
    c = Backoff(0.2, 5, factor=3, jitter=0)
    assert [round(c.next(), 3) for _ in range(4)] == [0.2, 0.6, 1.8, 5]


def test_backoff_limit_bounds_the_delay_by_a_deadline():
    b = Backoff(1.0, 10.0, jitter=0)
    assert b.next(limit=0.3) == 0.3
    assert b.next(limit=5) == 2.0  # the base grew even though the first delay was cut short
    assert b.next(limit=-1) == 0.0


@pytest.mark.parametrize("args", [(0, 1), (2, 1), (1, 2, 0.5), (1, 2, 2, 1.5)])
def test_backoff_rejects_nonsense(args):
    with pytest.raises(ValueError):
        Backoff(*args)


async def test_backoff_sleep_waits_the_delay(autojump_clock):
    b = Backoff(2.0, 8.0, jitter=0)
    start = trio.current_time()
    await b.sleep()
    await b.sleep(limit=1)
    assert trio.current_time() - start == pytest.approx(3.0)


def test_outage_log_first_failure_then_every_period_then_recovery_once(caplog):
    now = [100.0]
    log = OutageLog(LOGGER, "reading the config", every=30, note="nothing changes", clock=lambda: now[0])
    caplog.set_level(logging.INFO, LOGGER.name)
    assert log.recovered() is None and not caplog.records
    for t in (100, 110, 129, 130, 150, 161):
        now[0] = t
        log.failed(ConnectionError("refused"))
    assert log.down
    now[0] = 170.5
    assert log.recovered() == pytest.approx(70.5)
    assert log.recovered() is None
    assert [r.getMessage() for r in caplog.records] == [
        "reading the config: refused; nothing changes; retrying (down for 0 s)",
        "reading the config: refused; nothing changes; retrying (down for 30 s)",
        "reading the config: refused; nothing changes; retrying (down for 61 s)",
        "reading the config: working again after 70.5 s",
    ]
    assert [r.levelno for r in caplog.records] == [logging.WARNING] * 3 + [logging.INFO]
    # a new outage starts its own count and logs its first failure at once
    now[0] = 171
    log.failed("timeout")
    assert caplog.records[-1].getMessage() == "reading the config: timeout; nothing changes; retrying (down for 0 s)"


async def test_outage_log_uses_trio_clock_by_default(autojump_clock, caplog):
    caplog.set_level(logging.INFO, LOGGER.name)
    log = OutageLog(LOGGER, "etcd")
    log.failed("down")
    await trio.sleep(12)
    assert log.recovered() == pytest.approx(12)
    assert caplog.records[-1].getMessage() == "etcd: working again after 12.0 s"


def test_log_once_per_key_bounded_and_forgettable(caplog):
    caplog.set_level(logging.INFO, LOGGER.name)
    once = LogOnce(LOGGER, limit=2)
    assert once.warning("a", "peer %s unusable", "a")
    assert not once.warning("a", "peer %s unusable", "a")
    assert once.info("b", "b")
    assert once.info("c", "c")  # "a" is forgotten: only two keys are kept
    assert once.warning("a", "peer %s unusable", "a")
    once.forget("a")
    once.forget("never seen")
    assert once.warning("a", "again")
    assert [r.getMessage() for r in caplog.records] == ["peer a unusable", "b", "c", "peer a unusable", "again"]
    assert len(once._seen) == 2
