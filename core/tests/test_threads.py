import select
import socket
import threading
import time
from types import MappingProxyType

import pytest
import trio
from overlay_core.services.threads import DedicatedThread, Swappable, run_worker


class Resource:
    def __init__(self, opened: list) -> None:
        self.thread = threading.get_ident()
        self.closed_on: int | None = None
        opened.append(self)


async def test_dedicated_thread_runs_every_call_on_one_thread_that_owns_the_resource():
    opened: list[Resource] = []
    def close(r: Resource) -> None:
        r.closed_on = threading.get_ident()

    t = DedicatedThread("test-owner", lambda: Resource(opened), close)
    idents = [await t.call(lambda r: (r, threading.get_ident(), threading.current_thread().name)) for _ in range(3)]
    assert len(opened) == 1
    resource = opened[0]
    assert {i[1] for i in idents} == {resource.thread} and resource.thread != threading.get_ident()
    assert idents[0][0] is resource and idents[0][2] == "test-owner"
    t.close()
    assert resource.closed_on == resource.thread
    await t.call(lambda r: None)  # a call after close starts afresh
    assert len(opened) == 2
    t.close()


async def test_errors_come_back_to_the_caller_and_a_failed_open_is_retried():
    attempts = []

    def open_() -> str:
        attempts.append(1)
        if len(attempts) == 1:
            raise ConnectionRefusedError("daemon not up yet")
        return "session"

    t = DedicatedThread("test-retry", open_)
    with pytest.raises(ConnectionRefusedError, match="not up yet"):
        await t.call(lambda s: s)
    assert await t.call(lambda s: s.upper()) == "SESSION"
    with pytest.raises(KeyError):
        await t.call(lambda s: {}["missing"])
    assert await t.call(len) == 7 and len(attempts) == 2
    t.close()


async def test_a_cancelled_caller_never_leaves_an_operation_half_done():
    done = []
    t = DedicatedThread("test-shield", lambda: None)

    def slow(_):
        time.sleep(0.3)
        done.append("applied")
        return "result"

    results = []
    with trio.move_on_after(0.05) as scope:
        results.append(await t.call(slow))  # returns even though the deadline passed meanwhile
        await trio.sleep(0)  # the cancellation takes effect at the next checkpoint
        results.append("not reached")
    assert scope.cancelled_caught and done == ["applied"] and results == ["result"]

    with trio.CancelScope() as scope:
        scope.cancel()
        await t.call(lambda _: done.append("never sent"))  # already cancelled: nothing is queued
    assert done == ["applied"]
    t.close()


async def test_calls_from_concurrent_tasks_run_in_order_one_at_a_time():
    log = []
    t = DedicatedThread("test-order", lambda: log)

    def step(i):
        def run(lst):
            lst.append(("start", i))
            time.sleep(0.01)
            lst.append(("end", i))
        return run

    async with trio.open_nursery() as nursery:
        for i in range(5):
            nursery.start_soon(t.call, step(i))
    t.close()
    for n in range(0, len(log), 2):
        assert log[n][0] == "start" and log[n + 1] == ("end", log[n][1])


def echo_loop(stop, sock: socket.socket, table: Swappable, seen: list) -> None:
    """A packet loop: answer each datagram with the entry the current table has for it."""
    poller = select.poll()
    poller.register(sock, select.POLLIN)
    poller.register(stop.fileno(), select.POLLIN)
    while not stop.is_set():
        for fd, _ in poller.poll():
            if fd == sock.fileno():
                data = sock.recv(64)
                if data == b"crash":
                    raise RuntimeError("bad packet")
                routes = table.get()  # one lock-free read per packet
                seen.append(routes)
                sock.send(routes.get(data, b"unreachable"))


@pytest.fixture
def pair():
    a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
    yield a, b
    a.close()
    b.close()


async def test_worker_reads_swapped_tables_and_stops_promptly(pair):
    ours, theirs = pair
    theirs_t = trio.socket.from_stdlib_socket(theirs)
    table = Swappable(MappingProxyType({b"10.0.1.0": b"via 192.0.2.1"}))
    seen: list = []
    worker = run_worker("test-echo", echo_loop, ours, table, seen)
    assert worker.running and worker.name == "test-echo"

    async def ask(dst: bytes) -> bytes:
        await theirs_t.send(dst)
        with trio.fail_after(10):
            return await theirs_t.recv(64)

    assert await ask(b"10.0.1.0") == b"via 192.0.2.1"
    old = table.get()
    table.set(MappingProxyType({**old, b"10.0.2.0": b"via 192.0.2.2"}))
    assert await ask(b"10.0.2.0") == b"via 192.0.2.2"
    assert await ask(b"10.0.3.0") == b"unreachable"
    assert seen[0] is old and old == {b"10.0.1.0": b"via 192.0.2.1"}  # the old table was never changed
    with trio.fail_after(10):
        await worker.stop()  # blocked in poll(): the eventfd wakes it
    assert not worker.running and worker.stop_signal.is_set()
    with pytest.raises(ValueError):
        worker.stop_signal.fileno()
    await worker.stop()  # stopping twice is harmless


async def test_a_crashing_worker_surfaces_in_trio(pair):
    ours, theirs = pair
    worker = run_worker("test-crash", echo_loop, ours, Swappable(MappingProxyType({})), [])
    theirs.send(b"crash")
    with pytest.raises(ExceptionGroup) as group:
        with trio.fail_after(10):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(worker.wait)
                await trio.sleep_forever()
    assert [str(e) for e in group.value.exceptions] == ["bad packet"]
    assert not worker.running
    with pytest.raises(RuntimeError, match="bad packet"):
        await worker.stop()


async def test_worker_that_polls_stop_without_fd():
    ticks = []

    def spin(stop, n):
        while not stop.is_set():
            ticks.append(n)
            time.sleep(0.001)

    worker = run_worker("test-spin", spin, 7)
    while not ticks:
        await trio.sleep(0.01)
    await worker.stop()
    count = len(ticks)
    await trio.sleep(0.02)
    assert len(ticks) == count and set(ticks) == {7}
