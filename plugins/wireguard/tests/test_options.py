"""Options: Flannel's names, defaults and meanings; one-line errors that never echo a PSK."""

import base64

import pytest
from overlay_core import ConfigError, parse_config
from overlay_core.backend import check_backend_config
from overlay_core.services import Secret
from overlay_wireguard.backend import WireguardBackend
from overlay_wireguard.options import OPTION_NAMES, WgOptions, device_mtu, parse_options

PSK = base64.b64encode(bytes(range(32))).decode()


def cfg(backend: str):
    return parse_config('{"Network":"10.5.0.0/16","Backend":%s}' % backend)


def test_defaults_are_flannels():
    o = parse_options(cfg('{"Type":"wireguard"}'))
    assert o == WgOptions(51820, 51821, None, None, 0, "separate")
    assert not o.single_device


def test_all_options_case_insensitive():
    o = parse_options(cfg('{"Type":"wireguard","listenport":4000,"LISTENPORTV6":4001,"MTU":1400,"psk":"%s",'
                          '"PersistentKeepaliveInterval":25,"Mode":"auto"}' % PSK))
    assert (o.listen_port, o.listen_port_v6, o.mtu, o.keepalive, o.mode) == (4000, 4001, 1400, 25, "auto")
    assert o.psk == Secret(bytes(range(32))) and o.single_device
    assert parse_options(cfg('{"Type":"wireguard","PSK":""}')).psk is None  # Flannel: "" = no PSK


@pytest.mark.parametrize("backend, message", [
    ('{"Type":"wireguard","ListenPort":0}', "wireguard: ListenPort must be a whole number from 1 to 65535, got 0"),
    ('{"Type":"wireguard","ListenPortV6":"51821"}', "ListenPortV6 must be a whole number from 1 to 65535, got '51821'"),
    ('{"Type":"wireguard","MTU":100}', "MTU must be a whole number from 148 to 65535, got 100"),
    ('{"Type":"wireguard","MTU":true}', "MTU must be a whole number"),
    ('{"Type":"wireguard","PersistentKeepaliveInterval":-1}', "PersistentKeepaliveInterval must be a whole number"),
    ('{"Type":"wireguard","PersistentKeepaliveInterval":"25s"}', "PersistentKeepaliveInterval must be a whole"),
    ('{"Type":"wireguard","Mode":"Auto"}', "Mode must be one of 'separate', 'auto', 'ipv4', 'ipv6', got 'Auto'"),
    ('{"Type":"wireguard","Mode":"both"}', "wireguard: Mode must be one of"),
    ('{"Type":"wireguard","ListenPrt":1}', "unknown Backend key 'ListenPrt' \\(did you mean 'ListenPort'\\?\\)"),
])
def test_bad_options_one_line(backend, message):
    with pytest.raises(ConfigError, match=message) as err:
        check_backend_config(WireguardBackend, cfg(backend))
    assert "\n" not in str(err.value)


@pytest.mark.parametrize("psk", [
    "not base64 at all!!",
    base64.b64encode(b"x" * 31).decode(),
    base64.b64encode(b"y" * 33).decode(),
    "c2VjcmV0LXNoYXJlZC1rZXktdGhhdC1pcy13cm9uZw==",
])
def test_bad_psk_never_echoed(psk):
    with pytest.raises(ConfigError) as err:
        parse_options(cfg('{"Type":"wireguard","PSK":"%s"}' % psk))
    text = str(err.value)
    assert text.startswith("wireguard: PSK must be the base64 text of a 32-byte key") and psk not in text
    with pytest.raises(ConfigError) as err:
        parse_options(cfg('{"Type":"wireguard","PSK":123456}'))
    assert "123456" not in str(err.value)


def test_secret_never_prints():
    o = parse_options(cfg('{"Type":"wireguard","PSK":"%s"}' % PSK))
    for text in (str(o), repr(o), f"{o.psk}", str(o.psk), repr(o.psk)):
        assert PSK not in text and "\\x00\\x01" not in text
    assert "***" in repr(o)


def test_every_field_is_a_declared_key():
    assert OPTION_NAMES == ("ListenPort", "ListenPortV6", "MTU", "PSK", "PersistentKeepaliveInterval", "Mode")
    assert len(OPTION_NAMES) == len(WgOptions.__dataclass_fields__)


def test_mtu_is_underlay_minus_80():
    o = parse_options(cfg('{"Type":"wireguard"}'))
    assert device_mtu(o, 1500, ipv6=False) == 1420
    assert device_mtu(parse_options(cfg('{"Type":"wireguard","MTU":9000}')), 1500, ipv6=True) == 8920
    with pytest.raises(ConfigError, match="IPv6 needs 1280; set MTU to 1360 or more"):
        device_mtu(parse_options(cfg('{"Type":"wireguard","MTU":1300}')), 1500, ipv6=True)
    assert device_mtu(parse_options(cfg('{"Type":"wireguard","MTU":1300}')), 1500, ipv6=False) == 1220
