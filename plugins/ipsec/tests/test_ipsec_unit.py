"""Unit tests: options, desired state, charon config/argv, policy text, SA status."""

from __future__ import annotations

from ipaddress import IPv4Address, IPv4Network, IPv6Network
from types import SimpleNamespace

import pytest
from overlay_core import ConfigError, Lease, LeaseAttrs, OverlayError, parse_config
from overlay_core.backend import ExternalInterface, Node, PeerStatus
from overlay_core.dataplane.objects import Route
from overlay_core.kernel_backend import PeerPlan
from overlay_core.services import Secret
from overlay_ipsec import KERNEL, LIBIPSEC, IpsecBackend, desired_state, parse_options
from overlay_ipsec import lab as ipsec_lab
from overlay_ipsec.calc import ChildUp, ConnSpec, SharedKey, XfrmPolicy
from overlay_ipsec.charon import CharonPaths, charon_argv, find_charon, render_config, write_config
from overlay_ipsec.status import peer_status
from overlay_ipsec.target import CharonTarget, ForeignConn, batch_script, parse_policies
from overlay_ipsec.vici_client import ChildSa, IkeSa, LoadedChild, LoadedConn, ViciClient, ViciError

PSK = "k" * 96
NETWORK = IPv4Network("10.0.0.0/8")


def config(backend: dict, **extra) -> object:
    import json

    return parse_config(json.dumps({"Network": "10.0.0.0/8", "Backend": {"Type": "ipsec", **backend}, **extra}))


# --- options ---------------------------------------------------------------------------------

def test_options_defaults_and_mtu():
    opts = parse_options(config({"PSK": PSK}))
    assert (opts.udp_encap, opts.esp_proposal) == (False, "aes128gcm16-sha256-prfsha256-ecp256")
    assert opts.psk.reveal() == PSK
    assert opts.mtu(1500) == 1423
    assert parse_options(config({"psk": PSK, "udpencap": True})).mtu(1500) == 1415
    assert opts.mtu(1500, libipsec=True) == 1400 and opts.mtu(1450, libipsec=True) == 1365


@pytest.mark.parametrize("backend, message", [
    ({}, "ipsec: PSK is required"),
    ({"PSK": "short-secret-value"}, "ipsec: PSK must be at least 96 characters long, got 18"),
    ({"PSK": 12345}, "ipsec: PSK must be a string, got a JSON number"),
    ({"PSK": PSK, "UDPEncap": "yes"}, "ipsec: UDPEncap must be true or false, got 'yes'"),
    ({"PSK": PSK, "ESPProposal": "aes128gcm16,aes256gcm16"}, "ipsec: ESPProposal must be one strongSwan proposal"),
    ({"PSK": PSK, "ESPProposal": ""}, "ipsec: ESPProposal must be one strongSwan proposal"),
    ({"PSK": PSK, "ESPPropsal": "x"}, "ipsec: unknown option 'esppropsal' (did you mean 'ESPProposal'?)"),
])
def test_options_errors_are_one_line_without_the_psk(backend, message):
    with pytest.raises(ConfigError) as err:
        parse_options(config(backend))
    text = str(err.value)
    assert text.startswith(message) and "\n" not in text
    assert "short-secret-value" not in text and PSK not in text


def test_options_ipv4_only():
    with pytest.raises(ConfigError, match="IPv6-only"):
        parse_options(parse_config('{"EnableIPv4":false,"EnableIPv6":true,"IPv6Network":"2001:db8::/48",'
                                   '"Backend":{"Type":"ipsec","PSK":"%s"}}' % PSK))
    with pytest.raises(ConfigError, match="set EnableIPv6 to false"):
        parse_options(config({"PSK": PSK}, EnableIPv6=True, IPv6Network="2001:db8::/48"))


def test_options_never_show_the_psk():
    assert "hunter2" not in repr(parse_options(config({"PSK": "hunter2" * 20})))


# --- desired state ---------------------------------------------------------------------------

def lease(subnet: str, ip: str, btype: str = "ipsec") -> Lease:
    return Lease(IPv4Network(subnet), None, LeaseAttrs(IPv4Address(ip), backend_type=btype))


OWN = lease("10.1.1.0/24", "192.0.2.1")


def test_connection_dict_kernel_mode_is_flannels():
    opts = parse_options(config({"PSK": PSK}))
    desired = desired_state(OWN, [lease("10.1.2.0/24", "192.0.2.2")], opts, KERNEL, NETWORK)
    conn = next(o for o in desired.objects if isinstance(o, ConnSpec))
    assert conn.to_vici() == {"192.0.2.1-10.1.1.0/24-10.1.2.0/24-192.0.2.2": {
        "version": "2", "local_addrs": ["192.0.2.1"], "remote_addrs": ["192.0.2.2"],
        "proposals": ["aes256-sha256-modp4096"], "keyingtries": "0", "encap": "no",
        "local": {"auth": "psk"}, "remote": {"auth": "psk"},
        "children": {"10.1.1.0/24-10.1.2.0/24": {
            "local_ts": ["10.1.1.0/24"], "remote_ts": ["10.1.2.0/24"],
            "esp_proposals": ["aes128gcm16-sha256-prfsha256-ecp256"], "start_action": "start",
            "close_action": "trap", "dpd_action": "restart", "mode": "tunnel", "rekey_time": "1h",
            "policies": "no", "reqid": "11"}}}}
    policies = sorted(o for o in desired.objects if isinstance(o, XfrmPolicy))
    assert [p.update_command() for p in policies] == [
        "xfrm policy update src 10.1.2.0/24 dst 10.1.1.0/24 dir fwd tmpl src 192.0.2.2 dst 192.0.2.1 "
        "proto esp reqid 11 mode tunnel",
        "xfrm policy update src 10.1.2.0/24 dst 10.1.1.0/24 dir in tmpl src 192.0.2.2 dst 192.0.2.1 "
        "proto esp reqid 11 mode tunnel",
        "xfrm policy update src 10.1.1.0/24 dst 10.1.2.0/24 dir out tmpl src 192.0.2.1 dst 192.0.2.2 "
        "proto esp reqid 11 mode tunnel",
    ]


def test_connection_dict_libipsec_mode():
    opts = parse_options(config({"PSK": PSK, "UDPEncap": True, "ESPProposal": "aes256gcm16"}))
    desired = desired_state(OWN, [lease("10.1.2.0/24", "192.0.2.2")], opts, LIBIPSEC, NETWORK)
    (conn,) = [o for o in desired.objects if isinstance(o, ConnSpec)]
    body = conn.to_vici()[conn.name]
    child = body["children"]["10.1.1.0/24-10.1.2.0/24"]
    assert body["encap"] == "yes" and child["esp_proposals"] == ["aes256gcm16"]
    assert (child["start_action"], child["close_action"], child["policies"]) == ("start", "start", "yes")
    assert "reqid" not in child  # libipsec picks outbound SAs by reqid alone
    assert not any(isinstance(o, XfrmPolicy) for o in desired.objects)


def test_desired_objects_for_a_table_of_leases():
    opts = parse_options(config({"PSK": PSK}))
    peers = [
        lease("10.1.2.0/24", "192.0.2.2"),
        lease("10.1.3.0/24", "192.0.2.3"),
        lease("10.1.4.0/24", "192.0.2.3"),          # a second lease of node .3: a key of its own
        lease("10.1.1.0/24", "192.0.2.9"),          # own subnet
        lease("10.1.5.0/24", "192.0.2.5", "vxlan"),
        lease("192.168.0.0/24", "192.0.2.6"),       # outside the network: would route foreign traffic
        lease("10.1.0.0/16", "192.0.2.7"),          # overlaps our subnet
        lease("10.1.6.0/24", "0.0.0.0"),
        lease("10.1.7.0/24", "192.0.2.1"),          # our own public IP
        lease("10.1.2.0/25", "192.0.2.8"),          # overlaps peer 10.1.2.0/24
        Lease(None, IPv6Network("2001:db8:1::/64"), LeaseAttrs(IPv4Address("192.0.2.10"), backend_type="ipsec")),
    ]
    desired = desired_state(OWN, peers, opts, LIBIPSEC, NETWORK)
    conns = sorted(o.name for o in desired.objects if isinstance(o, ConnSpec))
    assert conns == ["192.0.2.1-10.1.1.0/24-10.1.2.0/24-192.0.2.2", "192.0.2.1-10.1.1.0/24-10.1.3.0/24-192.0.2.3",
                     "192.0.2.1-10.1.1.0/24-10.1.4.0/24-192.0.2.3"]
    assert sorted(o.id for o in desired.objects if isinstance(o, SharedKey)) == [
        "overlay-ipsec:192.0.2.1", "overlay-ipsec:192.0.2.2-10.1.2.0/24", "overlay-ipsec:192.0.2.3-10.1.3.0/24",
        "overlay-ipsec:192.0.2.3-10.1.4.0/24"]
    assert {o.conn for o in desired.objects if isinstance(o, ChildUp)} == set(conns)
    reasons = sorted(d.reason for d in desired.skipped)
    assert reasons == sorted([
        "own subnet", "BackendType is 'vxlan', not 'ipsec'",
        "subnet 192.168.0.0/24 lies outside the network 10.0.0.0/8",
        "subnet 10.1.0.0/16 overlaps our subnet 10.1.1.0/24", "lease has no PublicIP",
        "PublicIP 192.0.2.1 is our own (a stale lease of this node?)",
        "subnet 10.1.2.0/25 overlaps another peer's 10.1.2.0/24",
        "lease has no IPv4 subnet (ipsec carries IPv4 only)",
    ])
    assert len({o.key for o in desired.objects}) == len(desired.objects)


# --- charon ----------------------------------------------------------------------------------

def test_config_files_are_private_and_mode_specific(tmp_path):
    paths = CharonPaths.under(tmp_path / "state")
    write_config(paths, LIBIPSEC)
    assert paths.dir.stat().st_mode & 0o777 == 0o700 and paths.conf.stat().st_mode & 0o777 == 0o600
    text = paths.conf.read_text()
    assert f"socket = unix://{paths.vici}" in text and "include /etc/strongswan.d/charon/*.conf" in text
    assert "load = 1000" in text and "install_routes = yes" in text
    kernel = render_config(paths, KERNEL)
    assert "load = no" in kernel.split("kernel-libipsec")[1][:40] and "install_routes = no" in kernel


def test_argv_runs_charon_under_a_private_run(tmp_path):
    paths = CharonPaths.under(tmp_path)
    argv = charon_argv("/usr/lib/ipsec/charon", paths)
    assert argv[:4] == ["unshare", "--mount", "--propagation", "private"]
    assert "mount -t tmpfs" in argv[6] and argv[-3:] == [str(paths.dir), str(paths.conf), "/usr/lib/ipsec/charon"]


def test_find_charon(tmp_path, monkeypatch):
    fake = tmp_path / "charon"
    fake.write_text("#!/bin/sh\n")
    fake.chmod(0o755)
    assert find_charon(str(tmp_path)) == str(fake)
    monkeypatch.setattr("overlay_ipsec.charon.CHARON_PATHS", (str(tmp_path / "nope"),))
    with pytest.raises(OverlayError, match="install the Debian package strongswan-charon"):
        find_charon(str(tmp_path / "empty"))


# --- kernel policies text --------------------------------------------------------------------

def test_parse_policies_keeps_esp_tunnel_templates():
    text = """src 10.1.2.0/24 dst 10.1.1.0/24
\tdir fwd priority 0 ptype main
\ttmpl src 192.0.2.2 dst 192.0.2.1
\t\tproto esp reqid 11 mode tunnel
src 0.0.0.0/0 dst 0.0.0.0/0
\tsocket in priority 0 ptype main
src 10.1.1.0/24 dst 10.1.2.0/24
\tdir out priority 0 ptype main
\ttmpl src 192.0.2.1 dst 192.0.2.2
\t\tproto esp spi 0x00000000 reqid 7 mode transport
"""
    assert parse_policies(text) == [XfrmPolicy("fwd", IPv4Network("10.1.2.0/24"), IPv4Network("10.1.1.0/24"),
                                               IPv4Address("192.0.2.2"), IPv4Address("192.0.2.1"), 11)]
    stale = XfrmPolicy("in", IPv4Network("10.1.9.0/24"), IPv4Network("10.1.1.0/24"),
                       IPv4Address("192.0.2.9"), IPv4Address("192.0.2.1"))
    assert batch_script([], [stale]) == "xfrm policy delete src 10.1.9.0/24 dst 10.1.1.0/24 dir in\n"


# --- status and target bookkeeping -----------------------------------------------------------

def test_peer_status():
    child = ChildSa("c", "INSTALLED", 100, 200, 1, 2, 3000)
    sas = [IkeSa("conn", "1", "ESTABLISHED", "192.0.2.2", 5, (child, ChildSa("c", "INSTALLED", 1, 2, 1, 1, 10))),
           IkeSa("other", "2", "CONNECTING", "192.0.2.3", None, ())]
    assert peer_status(sas, "conn", "c").detail() == {"sa": "established", "rx_bytes": 101, "tx_bytes": 202,
                                                      "rekey_in_s": 10, "ike_sas": 1}
    assert peer_status(sas, "other", "c").state == "connecting"
    assert peer_status(sas, "gone", "c").state == "down"


def test_charon_target_owns_only_flannel_named_connections():
    target = CharonTarget(client=None)  # type: ignore[arg-type]
    ours = LoadedConn("192.0.2.1-10.1.1.0/24-10.1.2.0/24-192.0.2.2", (), (), (LoadedChild("x", (), ()),))
    assert target.owns(ForeignConn(ours))
    assert not target.owns(ForeignConn(LoadedConn("hand-made", (), (), ())))


# --- VICI client -----------------------------------------------------------------------------

async def test_vici_errors_are_one_line_without_the_psk(tmp_path):
    client = ViciClient(tmp_path / "no-charon.vici")
    key = SharedKey(IPv4Address("192.0.2.1"), Secret(PSK))
    try:
        with pytest.raises(ViciError) as err:
            await client.load_shared(key)
    finally:
        await client.aclose()
    text = str(err.value)
    assert text.startswith("charon load-shared overlay-ipsec:192.0.2.1: VICI socket ")
    assert "\n" not in text and PSK not in text and err.value.__cause__ is None


# --- the Backend -----------------------------------------------------------------------------

def backend(mode: str) -> IpsecBackend:
    iface = ExternalInterface("eth0", 2, 1500, IPv4Address("192.0.2.1"), None, IPv4Address("192.0.2.1"), None,
                              (IPv4Network("192.0.2.0/24"),))
    b = IpsecBackend(Node(config({"PSK": PSK}), iface, SimpleNamespace(), lease=OWN))
    b.mode = mode
    return b


def test_backend_plans_by_mode_and_adds_the_node_key():
    peers = [lease("10.1.2.0/24", "192.0.2.2"), lease("10.1.3.0/24", "192.0.2.3"),
             lease("10.1.1.0/24", "192.0.2.9")]
    lib = backend(LIBIPSEC)
    plan = lib.plan(peers[0])
    assert plan.mode == "ipsec"
    assert [o for o in plan.objects if isinstance(o, Route)] == [
        Route(IPv4Network("10.1.2.0/24"), None, 0, type="unreachable")]  # fail closed while the SA is down
    assert lib.plan(peers[2]) == PeerPlan("skipped", (), "own subnet")
    desired = lib.desired(peers)
    keys = sorted(o.id for o in desired if isinstance(o, SharedKey))
    assert keys == ["overlay-ipsec:192.0.2.1", "overlay-ipsec:192.0.2.2-10.1.2.0/24",
                    "overlay-ipsec:192.0.2.3-10.1.3.0/24"]
    assert len({o.key for o in desired}) == len(desired)  # nothing two targets (or two peers) fight over
    kernel = backend(KERNEL).plan(peers[0])
    assert not any(isinstance(o, Route) for o in kernel.objects)  # Flannel's policies drop without an SA
    assert sum(isinstance(o, XfrmPolicy) for o in kernel.objects) == 3


def test_backend_peer_status_comes_from_charon():
    b = backend(LIBIPSEC)
    peers = [lease("10.1.2.0/24", "192.0.2.2"), lease("10.1.3.0/24", "192.0.2.3")]
    b.desired(peers)
    up = ChildSa("10.1.1.0/24-10.1.2.0/24", "INSTALLED", 10, 20, 1, 2, 3000)
    b.charon.sas = [IkeSa("192.0.2.1-10.1.1.0/24-10.1.2.0/24-192.0.2.2", "1", "ESTABLISHED", "192.0.2.2", 5, (up,))]
    status = b.overlay_peer_status()
    assert status["10.1.2.0-24"] == PeerStatus("established", {"mode": "ipsec", "sa": "established", "rx_bytes": 10,
                                                               "tx_bytes": 20, "rekey_in_s": 3000, "ike_sas": 1})
    assert status["10.1.3.0-24"].state == "down"
    assert b.overlay_report()["ipsec"]["sas"] == {"established": 1, "down": 1}
    assert PSK not in repr(status) + repr(b.overlay_report())


async def test_charon_target_with_charon_down_says_so_once(tmp_path, caplog):
    client = ViciClient(tmp_path / "no-charon.vici")
    objects = desired_state(OWN, [lease("10.1.2.0/24", "192.0.2.2")], parse_options(config({"PSK": PSK})), LIBIPSEC,
                            NETWORK).objects
    try:
        assert await CharonTarget(client).apply(objects, []) == len(objects)
    finally:
        await client.aclose()
    lines = [r.getMessage() for r in caplog.records if r.name == "overlay.ipsec"]
    assert len(lines) == 1 and PSK not in lines[0]
    assert lines[0].startswith(f"ipsec: {len(objects)} changes wait for charon: ")


async def test_charon_target_tells_when_connections_were_loaded():
    calls = []

    class Client:  # records what charon is asked; every request succeeds
        async def load_shared(self, key):
            calls.append("load-shared")

        async def load_conn(self, conn):
            calls.append("load-conn")

        async def initiate(self, conn, child):
            calls.append("initiate")

    loaded = []
    target = CharonTarget(Client(), on_loaded=lambda: loaded.append(len(calls)))  # type: ignore[arg-type]
    objects = desired_state(OWN, [lease("10.1.2.0/24", "192.0.2.2")], parse_options(config({"PSK": PSK})), LIBIPSEC,
                            NETWORK).objects
    assert await target.apply(objects, []) == 0
    assert calls == ["load-shared", "load-shared", "load-conn"] and loaded == [3]  # once, after the loads
    ups = [o for o in objects if isinstance(o, ChildUp)]
    assert await target.apply(ups, []) == 0  # a re-initiate alone is no new negotiation to watch closely
    assert calls[-1] == "initiate" and loaded == [3]


# --- lab extras ------------------------------------------------------------------------------

def test_lab_gets_a_fresh_long_psk_and_a_root_only_directory(tmp_path):
    lab = SimpleNamespace(dir=str(tmp_path / "lab"))
    first, second = ipsec_lab.backend_options(lab)["PSK"], ipsec_lab.backend_options(lab)["PSK"]
    assert len(first) >= 96 and first != second
    assert (tmp_path / "lab").stat().st_mode & 0o777 == 0o700
    assert "IPv4 only" in ipsec_lab.check(lab, 3, 0, "dual") and ipsec_lab.check(lab, 3, 0, "") is None
