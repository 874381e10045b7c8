"""Through a real etcd: our lease bytes are Flannel's, a lease in Flannel's bytes is a working
peer, and a node whose lease goes away leaves every peer list."""

import pytest
import trio
from overlay_core.etcd import EtcdOptions, EtcdStore
from overlay_core.subnets import Keys, SubnetManager
from overlay_wireguard.calc import desired_peers
from overlay_wireguard.options import WgOptions
from overlay_wireguard.testing import ping

pytestmark = [pytest.mark.netns, pytest.mark.etcd]


@pytest.fixture
def store(shared_etcd):
    s = EtcdStore(EtcdOptions(endpoints=(shared_etcd.url,)))
    yield s
    s.close()


async def test_leases_through_etcd(wgnet, store, etcd_prefix):
    keys = Keys(etcd_prefix)
    subnets = SubnetManager(store, keys)
    n1, n2, n3 = (wgnet.add_node(i, WgOptions()) for i in (1, 2, 3))
    for node in (n1, n2, n3):
        await wgnet.start(node)
    ours = n1.lease()
    await store.put(keys.lease(ours), ours.attrs.to_json())
    for node in (n2, n3):  # written the way Flannel's wireguard backend writes them
        await store.put(keys.subnets + f"10.5.{node.index}.0-24",
                        '{"PublicIP":"192.0.2.%d","PublicIPv6":null,"BackendType":"wireguard",'
                        '"BackendData":{"PublicKey":"%s","Port":51820}}' % (node.index, node.keys.public))
    stored = await store.get(keys.lease(ours))
    assert stored.value.decode() == ('{"PublicIP":"192.0.2.1","PublicIPv6":null,"BackendType":"wireguard",'
                                     f'"BackendData":{{"PublicKey":"{n1.keys.public}","Port":51820}}}}')
    _, leases = await subnets.list_leases()
    assert sorted(le.key for le in leases) == ["10.5.1.0-24", "10.5.2.0-24", "10.5.3.0-24"]
    assert desired_peers(n1.local, leases, own_key=ours.key).skipped == {}
    for node in (n1, n2, n3):
        await wgnet.configure(node, leases)
    for dst in (n2, n3):
        sent, got = await trio.to_thread.run_sync(lambda d=dst: ping(n1.ns, d.pod, n1.pod))
        assert got == sent

    await store.delete(keys.subnets + "10.5.3.0-24")  # n3 leaves
    _, leases = await subnets.list_leases()
    await wgnet.configure(n1, leases)
    state = await n1.instances["flannel-wg"].client().get()
    assert [p.peer.key for p in state.peers] == [n2.keys.public]
    assert (await trio.to_thread.run_sync(lambda: ping(n1.ns, n3.pod, n1.pod, count=1)))[1] == 0
