"""Pure tests of the udp backend glue: options, lease, plan, forwarder command line, status."""

from ipaddress import IPv4Address, IPv4Network
from pathlib import Path
from types import SimpleNamespace

import pytest
from overlay_core import ConfigError, Lease, LeaseAttrs, parse_config
from overlay_core.backend import ExternalInterface, Node, check_backend_config
from overlay_core.kernel_backend import PeerPlan
from overlay_udp import datapath, lab
from overlay_udp.backend import (
    GLOBAL_COUNTERS,
    PEER_COUNTERS,
    ForwarderRoute,
    ForwarderRoutes,
    UdpBackend,
    forwarder_error,
)


def cfg(backend: str = '{"Type":"udp"}', extra: str = ""):
    return parse_config('{"Network":"10.5.0.0/16"%s,"Backend":%s}' % (extra, backend))


def iface(mtu: int = 1500, address: str | None = "192.0.2.1") -> ExternalInterface:
    ip = IPv4Address(address) if address else None
    return ExternalInterface("eth0", 2, mtu, ip, None, ip)


def backend(config=None, state_dir: str = "/run/overlay", mtu: int = 1500) -> UdpBackend:
    services = SimpleNamespace(path=lambda *parts: Path(state_dir, *parts), registry=None)
    b = UdpBackend(Node(config or cfg(), iface(mtu), SimpleNamespace()), services)
    b.overlay_network_config(b.node.config, b.node)
    return b


def peer(ip: str, subnet: str = "10.5.2.0/24", backend_type: str = "") -> Lease:
    return Lease(IPv4Network(subnet), None, LeaseAttrs(IPv4Address(ip), None, backend_type))


def test_port_option_default_range_and_unknown_keys():
    assert backend().options.port == 8285
    assert backend(cfg('{"Type":"udp","port":9000}')).options.port == 9000
    with pytest.raises(ConfigError, match="^udp: Port must be a whole number from 1 to 65535, got 0$"):
        check_backend_config(UdpBackend, cfg('{"Type":"udp","Port":0}'))
    with pytest.raises(ConfigError, match="unknown Backend key 'Prot'.*udp knows: Port"):
        check_backend_config(UdpBackend, cfg('{"Type":"udp","Prot":8285}'))


def test_lease_as_flannel_writes_it_and_peer_leases_without_type_accepted():
    b = backend(mtu=9000)
    request = b.overlay_lease_request(b.node)
    assert (request.backend_type, request.mtu, request.backend_data) == ("", 9000 - 28, None)
    assert b.accepts(peer("192.0.2.2")) and not b.accepts(peer("192.0.2.2", backend_type="vxlan"))


@pytest.mark.parametrize("extra, mtu, message", [
    (',"EnableIPv6":true,"IPv6Network":"2001:db8:10::/48"', 1500, "udp: carries IPv4 only"),
    ("", 600, "udp: eth0's MTU 600 leaves 572 for flannel0"),
])
def test_refused_configs(extra, mtu, message):
    with pytest.raises(ConfigError, match=message):
        backend(cfg(extra=extra), mtu=mtu)


def test_control_socket_path_must_fit_sun_path():
    with pytest.raises(ConfigError, match="longer than 107 bytes: use a shorter --state-dir"):
        backend(state_dir="/" + "d" * 110)


def test_plan_one_forwarder_route_per_peer():
    b = backend()
    assert b.plan(peer("192.0.2.2")) == PeerPlan("udp", (ForwarderRoute(IPv4Network("10.5.2.0/24"),
                                                                        IPv4Address("192.0.2.2")),))
    assert b.plan(peer("0.0.0.0")).mode == "skipped"
    assert ForwarderRoute(IPv4Network("10.5.2.0/24"), IPv4Address("192.0.2.3")).key == \
        ForwarderRoute(IPv4Network("10.5.2.0/24"), IPv4Address("192.0.2.2")).key  # another peer IP: a replace
    assert b.routes.accepts(b.plan(peer("192.0.2.2")).objects[0]) and not b.routes.accepts("route")


def test_forwarder_argv_has_no_routes_and_stays_the_same_for_a_lease():
    b = backend(cfg('{"Type":"udp","Port":9000}'), state_dir="/run/ovl/n1")
    b.node.lease = peer("192.0.2.1", "10.5.7.0/24")
    argv = b.forwarder_argv()
    assert argv[1:3] == ["-m", "overlay_udp.forwarder"] and "--route" not in argv
    assert argv[argv.index("--control") + 1] == "/run/ovl/n1/udp.sock"
    assert [argv[argv.index(k) + 1] for k in ("--network", "--subnet", "--mtu", "--bind", "--port")] == \
        ["10.5.0.0/16", "10.5.7.0/24", "1472", "192.0.2.1", "9000"]
    assert b.forwarder_argv() == argv


def test_peer_status_carries_the_forwarder_counters():
    b = backend()
    p = peer("192.0.2.2")
    b._objects([p])
    b.counters = {"peers": {"192.0.2.2": {"tx_packets": 3, "tx_bytes": 300, "rx_packets": 2, "rx_bytes": 200,
                                          "drops": 1}}, "path": "fast", "icmp_unreachable_sent": 4}
    status = b.overlay_peer_status()[p.key]
    assert status.state == "programmed"
    assert status.detail == {"mode": "udp", "tx_packets": 3, "tx_bytes": 300, "rx_packets": 2, "rx_bytes": 200,
                             "drops": 1}
    assert b.overlay_report()["udp"]["icmp_unreachable_sent"] == 4 and b.overlay_report()["udp"]["path"] == "fast"


def test_exported_counters_are_the_forwarders():
    assert set(GLOBAL_COUNTERS) == {*datapath._GLOBAL_FIELDS, "udp_rcvbuf_drops", "tun_queue_drops"}
    assert PEER_COUNTERS == datapath.PEER_FIELDS


def test_forwarder_error_is_its_last_one_line_message(tmp_path):
    log = tmp_path / "f.log"
    log.write_text("--- starting\noverlay-udp forwarder: old\nINFO x\noverlay-udp forwarder: cannot bind UDP x\n")
    assert forwarder_error(log) == "cannot bind UDP x"
    assert forwarder_error(tmp_path / "missing.log").startswith("the forwarder exited before it was ready; see ")


def test_lab_refuses_ipv6():
    assert lab.check(None, 3, 0, "dual") and lab.check(None, 3, 0, "") is None


async def test_dump_parses_only_entries_that_changed(monkeypatch):
    table = {"10.5.2.0/24": "192.0.2.2", "10.5.3.0/24": "192.0.2.3"}

    async def routes(path, op, **fields):  # the forwarder's answer to "routes" (its real form)
        assert (path, op) == ("/run/udp.sock", "routes")
        return {"ok": True, "routes": dict(table)}

    monkeypatch.setattr("overlay_udp.control.request", routes)
    target = ForwarderRoutes("/run/udp.sock")
    first = await target.dump()
    assert sorted(first) == [ForwarderRoute(IPv4Network(n), IPv4Address(p)) for n, p in sorted(table.items())]
    table["10.5.3.0/24"] = "192.0.2.9"
    second = {r.subnet: r for r in await target.dump()}
    assert second[IPv4Network("10.5.2.0/24")] is first[0]  # unchanged: the same object, not parsed again
    assert second[IPv4Network("10.5.3.0/24")].peer == IPv4Address("192.0.2.9")
