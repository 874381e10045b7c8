"""The peer watch against a real etcd: events, malformed keys, compaction, etcd restarts."""

import subprocess

import pytest
import trio
from overlay_core.etcd import EtcdOptions, EtcdStore
from overlay_core.metrics import Metrics
from overlay_core.peers import PeerSet, PeerWatcher

pytestmark = pytest.mark.etcd


def value(ip, mac="aa:aa:aa:aa:aa:aa"):
    return ('{"PublicIP":"%s","PublicIPv6":null,"BackendType":"vxlan","BackendData":{"VtepMAC":"%s"}}'
            % (ip, mac))


class Recorder:
    def __init__(self):
        self.batches = []
        self.own = []
        self.changed = trio.Event()

    async def on_batch(self, batch, snapshot):
        self.batches.append((batch, snapshot))
        self.changed.set()
        self.changed = trio.Event()

    async def on_own(self, event):
        self.own.append(event)
        self.changed.set()
        self.changed = trio.Event()

    def flat(self):
        out = []
        for batch, snapshot in self.batches:
            out += [("add", p.key) for p in batch.added]
            out += [("change", n.key) for _, n in batch.changed]
            out += [("remove", p.key) for p in batch.removed]  # order within a batch is not asserted
            if snapshot:
                out.append(("snapshot", len(batch)))
        return out

    async def wait_for(self, predicate, timeout=15):
        with trio.fail_after(timeout):
            while not predicate(self.flat()):
                await self.changed.wait()


async def test_snapshot_then_live_events(shared_etcd, etcd_prefix):
    store = EtcdStore(EtcdOptions(endpoints=(shared_etcd.url,)))
    subnets = etcd_prefix + "/subnets/"
    await store.put(subnets + "10.5.1.0-24", value("192.0.2.1"))  # our own
    await store.put(subnets + "10.5.2.0-24", value("192.0.2.2"))
    rec = Recorder()
    watcher = PeerWatcher(store, subnets, PeerSet("10.5.1.0-24"), rec.on_batch, rec.on_own)
    async with trio.open_nursery() as nursery:
        await nursery.start(watcher.run)
        assert rec.flat() == [("add", "10.5.2.0-24"), ("snapshot", 1)]
        await store.put(subnets + "10.5.2.0-24", value("192.0.2.2"))  # renewal: no event
        await store.put(subnets + "garbage", "{}")  # malformed: skipped
        await store.put(subnets + "10.5.3.0-24", "not json")  # malformed value: skipped
        await store.put(subnets + "10.5.2.0-24", value("192.0.2.2", "bb:bb:bb:bb:bb:bb"))
        await rec.wait_for(lambda f: ("change", "10.5.2.0-24") in f)
        await store.put(subnets + "10.5.4.0-24", value("192.0.2.4"))
        await store.delete(subnets + "10.5.2.0-24")
        await store.delete(subnets + "10.5.1.0-24")
        await rec.wait_for(lambda f: ("remove", "10.5.2.0-24") in f and any(e.lease is None for e in rec.own))
        nursery.cancel_scope.cancel()
    assert sorted(e for e in rec.flat() if e[0] != "snapshot") == sorted([
        ("add", "10.5.2.0-24"), ("change", "10.5.2.0-24"), ("add", "10.5.4.0-24"), ("remove", "10.5.2.0-24")])
    # (the last two arrive in one batch or two; within a batch removals come first)
    assert rec.own[-1].lease is None and set(watcher.peer_set.peers) == {"10.5.4.0-24"}
    store.close()


async def test_resume_after_compaction_relists_and_diffs(shared_etcd, etcd_prefix):
    store = EtcdStore(EtcdOptions(endpoints=(shared_etcd.url,)))
    subnets = etcd_prefix + "/subnets/"
    await store.put(subnets + "10.5.2.0-24", value("192.0.2.2"))
    await store.put(subnets + "10.5.3.0-24", value("192.0.2.3"))
    peer_set = PeerSet()
    revision, kvs = await store.range(subnets)
    peer_set.reset(revision, kvs)  # state of an agent that then lost its watch
    await store.delete(subnets + "10.5.2.0-24")
    await store.put(subnets + "10.5.5.0-24", value("192.0.2.5"))
    await store.compact(await store.put(etcd_prefix + "/bump", "x"))
    rec, metrics = Recorder(), Metrics()
    watcher = PeerWatcher(store, subnets, peer_set, rec.on_batch, rec.on_own, metrics)
    async with trio.open_nursery() as nursery:
        await nursery.start(watcher.run)
        await rec.wait_for(lambda f: ("snapshot", 2) in f)
        nursery.cancel_scope.cancel()
    assert sorted(rec.flat()) == [("add", "10.5.5.0-24"), ("remove", "10.5.2.0-24"), ("snapshot", 2)]
    assert metrics.relists._value.get() == 1
    store.close()


async def test_etcd_killed_and_restarted_during_watch(etcd_factory):
    server = etcd_factory()
    store = EtcdStore(EtcdOptions(endpoints=(server.url,), timeout=2))
    subnets = "/coreos.com/network/subnets/"
    await store.put(subnets + "10.5.2.0-24", value("192.0.2.2"))
    rec = Recorder()
    watcher = PeerWatcher(store, subnets, PeerSet(), rec.on_batch, rec.on_own)
    async with trio.open_nursery() as nursery:
        await nursery.start(watcher.run)
        server.stop(9)
        with trio.fail_after(15):
            while watcher.connected:
                await trio.sleep(0.05)
        await trio.sleep(1)
        await trio.to_thread.run_sync(lambda: server.start())
        await store_put_retry(store, subnets + "10.5.3.0-24", value("192.0.2.3"))
        await rec.wait_for(lambda f: ("add", "10.5.3.0-24") in f, timeout=30)
        nursery.cancel_scope.cancel()
    assert rec.flat() == [("add", "10.5.2.0-24"), ("snapshot", 1), ("add", "10.5.3.0-24")]
    assert set(watcher.peer_set.peers) == {"10.5.2.0-24", "10.5.3.0-24"}
    store.close()


async def store_put_retry(store, key, val):
    from overlay_core.etcd import StoreUnavailable

    with trio.fail_after(20):
        while True:
            try:
                return await store.put(key, val)
            except StoreUnavailable:
                await trio.sleep(0.2)


@pytest.fixture
def pki(tmp_path):
    d = tmp_path / "pki"
    d.mkdir()

    def run(*args):
        subprocess.run(["openssl", *args], cwd=d, check=True, capture_output=True)

    run("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key", "-out", "ca.crt",
        "-days", "2", "-subj", "/CN=overlay-test-ca")
    for name, usage in (("server", "serverAuth,clientAuth"), ("client", "clientAuth")):
        run("req", "-newkey", "rsa:2048", "-nodes", "-keyout", f"{name}.key", "-out", f"{name}.csr",
            "-subj", f"/CN=overlay-{name}")
        (d / f"{name}.ext").write_text(f"subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage={usage}\n")
        run("x509", "-req", "-in", f"{name}.csr", "-CA", "ca.crt", "-CAkey", "ca.key", "-CAcreateserial",
            "-out", f"{name}.crt", "-days", "2", "-extfile", f"{name}.ext")
    return d


async def test_tls_with_client_certificates(etcd_factory, pki):
    from overlay_core.etcd import StoreUnavailable

    server = etcd_factory(tls={"cert": str(pki / "server.crt"), "key": str(pki / "server.key"),
                               "ca": str(pki / "ca.crt")})
    good = EtcdStore(EtcdOptions(endpoints=(server.url,), cafile=str(pki / "ca.crt"),
                                 certfile=str(pki / "client.crt"), keyfile=str(pki / "client.key")))
    await good.put("/tls/k", "v")
    assert (await good.get("/tls/k")).value == b"v"
    no_cert = EtcdStore(EtcdOptions(endpoints=(server.url,), cafile=str(pki / "ca.crt"), timeout=2))
    with pytest.raises(StoreUnavailable):
        await no_cert.get("/tls/k")
    plain = EtcdStore(EtcdOptions(endpoints=(server.url.replace("https", "http"),), timeout=2))
    with pytest.raises(StoreUnavailable):
        await plain.get("/tls/k")
    for s in (good, no_cert, plain):
        s.close()


async def test_store_revision_seen_and_event_latency_for_watch_lag(shared_etcd, etcd_prefix):
    store = EtcdStore(EtcdOptions(endpoints=(shared_etcd.url,)))
    subnets = etcd_prefix + "/subnets/"
    rec, metrics = Recorder(), Metrics()
    watcher = PeerWatcher(store, subnets, PeerSet(), rec.on_batch, rec.on_own, metrics)
    async with trio.open_nursery() as nursery:
        await nursery.start(watcher.run)
        written = await store.put(subnets + "10.5.2.0-24", value("192.0.2.2"))
        assert store.revision == written  # seen from the put's answer, whether or not the watch applied it yet
        await rec.wait_for(lambda f: ("add", "10.5.2.0-24") in f)
        with trio.fail_after(10):
            while watcher.peer_set.revision < written:
                await trio.sleep(0.02)
        nursery.cancel_scope.cancel()
    assert store.revision == watcher.peer_set.revision == written  # caught up: lag 0
    assert metrics.event_seconds._sum.get() > 0 and store.state()["revision"] == written
    store.close()
