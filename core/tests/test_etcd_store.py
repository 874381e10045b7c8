"""The store facade against a real etcd on 127.0.0.1 (started by the fixture)."""

import pytest
import trio
from overlay_core.errors import StoreError
from overlay_core.etcd import EtcdOptions, EtcdStore, StoreUnavailable, WatchCompacted

pytestmark = pytest.mark.etcd


@pytest.fixture
def store(shared_etcd):
    s = EtcdStore(EtcdOptions(endpoints=(shared_etcd.url,)))
    yield s
    s.close()


async def test_guarded_writes(store, etcd_prefix):
    key = etcd_prefix + "/k"
    ok, kv = await store.write_if(key, "one", 0)
    assert ok and kv.value == b"one"
    ok, current = await store.write_if(key, "two", 0)  # create only if absent
    assert not ok and current.value == b"one"
    ok, kv2 = await store.write_if(key, "two", kv.mod_revision)  # guarded by mod revision
    assert ok and kv2.mod_revision > kv.mod_revision
    ok, current = await store.write_if(key, "three", kv.mod_revision)  # stale revision refused
    assert not ok and current.value == b"two"
    assert not await store.delete(key, expect_revision=kv.mod_revision)
    assert await store.delete(key, expect_revision=kv2.mod_revision)
    assert await store.get(key) is None


async def test_leases_keepalive_and_expiry(store, etcd_prefix):
    lease_id = await store.grant(2)
    ok, _ = await store.write_if(etcd_prefix + "/leased", "x", 0, lease_id)
    assert ok and (await store.get(etcd_prefix + "/leased")).lease_id == lease_id
    assert 0 < await store.time_to_live(lease_id) <= 2
    assert await store.keepalive(lease_id) == 2
    await store.revoke(lease_id)
    assert await store.get(etcd_prefix + "/leased") is None
    assert await store.keepalive(lease_id) == 0
    assert await store.time_to_live(lease_id) == -1


async def test_range_is_one_read_with_revision(store, etcd_prefix):
    for i in range(5):
        await store.put(f"{etcd_prefix}/subnets/10.5.{i}.0-24", "{}")
    revision, kvs = await store.range(etcd_prefix + "/subnets/")
    assert len(kvs) == 5 and revision >= max(kv.mod_revision for kv in kvs)


async def test_watch_streams_then_reports_compaction(store, etcd_prefix):
    rev = await store.put(etcd_prefix + "/a", "1")
    await store.put(etcd_prefix + "/b", "2")
    await store.delete(etcd_prefix + "/a")
    send, recv = trio.open_memory_channel(10)
    got = []
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            await nursery.start(store.watch, etcd_prefix + "/", rev, send)
            while len(got) < 3:
                events = (await recv.receive()).events
                got += [(e.key.rsplit("/", 1)[1], e.value) for e in events]
            nursery.cancel_scope.cancel()
    assert got == [("a", b"1"), ("b", b"2"), ("a", None)]
    latest = await store.put(etcd_prefix + "/c", "3")
    await store.compact(latest)
    with pytest.raises(WatchCompacted) as info:
        await store.watch(etcd_prefix + "/", rev, send)
    assert info.value.revision == latest


async def test_unreachable_endpoint_is_a_clear_error():
    from overlay_core.testing.etcdserver import free_port

    store = EtcdStore(EtcdOptions(endpoints=(f"http://127.0.0.1:{free_port()}",), timeout=1))
    with trio.fail_after(10), pytest.raises(StoreUnavailable, match="is not usable"):
        await store.get("/x")
    store.close()


def test_missing_tls_file_is_a_one_line_error(tmp_path):
    with pytest.raises(StoreError, match="--etcd-cafile .*does not exist"):
        EtcdStore(EtcdOptions(cafile=str(tmp_path / "nope.pem")))
    with pytest.raises(StoreError, match="must be given together"):
        EtcdStore(EtcdOptions(certfile=__file__))
    for bad in ("http://127.0.0.1:port", "ftp://127.0.0.1:2379", "http://:2379"):
        with pytest.raises(StoreError, match="is not a URL like http://192.0.2.100:2379"):
            EtcdStore(EtcdOptions(endpoints=(bad,)))


async def test_fail_over_to_a_live_endpoint(shared_etcd):
    from overlay_core.testing.etcdserver import free_port

    dead = f"http://127.0.0.1:{free_port()}"
    store = EtcdStore(EtcdOptions(endpoints=(dead, shared_etcd.url), timeout=1))
    with trio.fail_after(20):
        while True:
            try:
                await store.put("/failover/k", "v")
                break
            except StoreUnavailable:
                await trio.sleep(0.1)  # the dead endpoint was tried first: the next call moves on
    assert (await store.get("/failover/k")).value == b"v"
    store.close()


async def test_username_and_password(etcd_factory):
    import subprocess

    server = etcd_factory()
    ctl = ["etcdctl", f"--endpoints={server.url}"]
    env = {"ETCDCTL_API": "3", "PATH": "/usr/bin:/bin"}
    for args in (["user", "add", "root:rootpw"], ["user", "add", "node:nodepw"], ["role", "add", "overlay"],
                 ["role", "grant-permission", "overlay", "--prefix=true", "readwrite", "/coreos.com/"],
                 ["user", "grant-role", "node", "overlay"], ["auth", "enable"]):
        subprocess.run(ctl + args, env=env, check=True, capture_output=True)
    good = EtcdStore(EtcdOptions(endpoints=(server.url,), username="node", password="nodepw"))
    await good.put("/coreos.com/network/k", "v")
    assert (await good.get("/coreos.com/network/k")).value == b"v"
    bad = EtcdStore(EtcdOptions(endpoints=(server.url,), username="node", password="wrong", timeout=2))
    with pytest.raises(StoreUnavailable, match="is not usable"):
        await bad.get("/coreos.com/network/k")
    anonymous = EtcdStore(EtcdOptions(endpoints=(server.url,), timeout=2))
    with pytest.raises(StoreUnavailable):
        await anonymous.get("/coreos.com/network/k")
    for s in (good, bad, anonymous):
        s.close()
