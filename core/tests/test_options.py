import base64
import json
from dataclasses import FrozenInstanceError, dataclass, field

import pytest
from overlay_core.config import parse_config
from overlay_core.errors import ConfigError
from overlay_core.options import option, option_names, read_options
from overlay_core.services.secret import Secret


def check_psk(value: Secret) -> None:
    try:
        raw = base64.b64decode(value.reveal(), validate=True)
    except ValueError:
        raw = b""
    if len(raw) != 32:
        raise ValueError("must be a base64 32-byte key as from 'wg genpsk'")


def even(value: int) -> None:
    if value % 2:
        raise ValueError("must be even")


@dataclass(frozen=True)
class Opts:
    listen_port: int = option("ListenPort", 51820, between=(1, 65535))
    psk: Secret | None = option("PSK", None, kind=Secret, check=check_psk)
    mode: str = option("Mode", "separate", choices=("separate", "auto", "ipv4", "ipv6"))
    direct: bool = option("DirectRouting", False)
    keepalive: float = option("PersistentKeepaliveInterval", 0.0, between=(0, 3600))
    proposal: str = option("ESPProposal", "aes128gcm16-sha256-prfsha256-ecp256", min_len=3)
    password: Secret | None = option("Password", None, kind=Secret, min_len=8)
    mtu: int | None = option("MTU", None, kind=int, check=even)
    count: int = option("Count", 3)
    not_an_option: list = field(default_factory=list)


def read(backend: dict) -> Opts:
    cfg = parse_config(json.dumps({"Network": "10.0.0.0/8", "Backend": {"Type": "test", **backend}}))
    return read_options(Opts, cfg, backend="wireguard")


PSK = base64.b64encode(bytes(range(32))).decode()


def test_defaults_when_absent_or_null():
    assert read({}) == read({"ListenPort": None, "MTU": None}) == Opts()
    opts = read({})
    assert (opts.listen_port, opts.psk, opts.mode, opts.direct, opts.mtu) == (51820, None, "separate", False, None)
    with pytest.raises(FrozenInstanceError):
        opts.mode = "auto"  # type: ignore[misc]


@pytest.mark.parametrize("backend, attr, value", [
    ({"ListenPort": 1}, "listen_port", 1),
    ({"listenport": 65535}, "listen_port", 65535),  # keys are case-insensitive
    ({"LISTENPORT": 7000}, "listen_port", 7000),
    ({"PSK": PSK}, "psk", Secret(PSK)),
    ({"Mode": "ipv6"}, "mode", "ipv6"),
    ({"DirectRouting": True}, "direct", True),
    ({"PersistentKeepaliveInterval": 25}, "keepalive", 25.0),
    ({"PersistentKeepaliveInterval": 2.5}, "keepalive", 2.5),
    ({"ESPProposal": "aes"}, "proposal", "aes"),
    ({"Password": "12345678"}, "password", Secret("12345678")),
    ({"MTU": 1400}, "mtu", 1400),
    ({"Count": -5}, "count", -5),
])
def test_good_values(backend, attr, value):
    got = getattr(read(backend), attr)
    assert got == value and type(got) is type(value)


@pytest.mark.parametrize("backend, message", [
    ({"ListenPort": "x"}, "wireguard: ListenPort must be a whole number from 1 to 65535, got 'x'"),
    ({"ListenPort": 0}, "wireguard: ListenPort must be a whole number from 1 to 65535, got 0"),
    ({"ListenPort": 65536}, "wireguard: ListenPort must be a whole number from 1 to 65535, got 65536"),
    ({"ListenPort": True}, "wireguard: ListenPort must be a whole number from 1 to 65535, got True"),
    ({"ListenPort": 51820.0}, "wireguard: ListenPort must be a whole number from 1 to 65535, got 51820.0"),
    ({"Count": "3"}, "wireguard: Count must be a whole number, got '3'"),
    ({"Mode": "Auto"}, "wireguard: Mode must be one of 'separate', 'auto', 'ipv4', 'ipv6', got 'Auto'"),
    ({"Mode": 4}, "wireguard: Mode must be a string, got 4"),
    ({"DirectRouting": "true"}, "wireguard: DirectRouting must be true or false, got 'true'"),
    ({"DirectRouting": 1}, "wireguard: DirectRouting must be true or false, got 1"),
    ({"PersistentKeepaliveInterval": -1},
     "wireguard: PersistentKeepaliveInterval must be a number from 0 to 3600, got -1"),
    ({"PersistentKeepaliveInterval": False},
     "wireguard: PersistentKeepaliveInterval must be a number from 0 to 3600, got False"),
    ({"ESPProposal": "ae"}, "wireguard: ESPProposal must be at least 3 characters long, got 'ae'"),
    ({"ESPProposal": ["aes"]}, "wireguard: ESPProposal must be a string, got ['aes']"),
    ({"PSK": "c2hvcnQ="}, "wireguard: PSK must be a base64 32-byte key as from 'wg genpsk'"),
    ({"PSK": 12345}, "wireguard: PSK must be a string, got a JSON number"),
    ({"Password": "seven77"}, "wireguard: Password must be at least 8 characters long, got 7"),
    ({"Password": {"v": "hidden-secret"}}, "wireguard: Password must be a string, got a JSON object"),
    ({"MTU": 1401}, "wireguard: MTU must be even, got 1401"),
])
def test_bad_values_are_one_line_config_errors(backend, message):
    with pytest.raises(ConfigError) as err:
        read(backend)
    assert str(err.value) == message
    assert err.value.__cause__ is None


@pytest.mark.parametrize("value", ["short-but-secret", "c2VjcmV0"])
def test_secret_values_never_reach_the_message(value):
    for backend in ({"PSK": value}, {"Password": value[:5]}):
        with pytest.raises(ConfigError) as err:
            read(backend)
        assert value[:5] not in str(err.value)


def test_first_invalid_field_in_declaration_order_wins():
    with pytest.raises(ConfigError, match="ListenPort"):
        read({"MTU": 3, "ListenPort": 0})


@pytest.mark.parametrize("kwargs, match", [
    ({"default": [1]}, "kind must be one of"),
    ({"default": "a", "between": (1, 2)}, "between= applies"),
    ({"default": 1, "min_len": 2}, "min_len= applies"),
    ({"default": None}, "kind must be one of"),
])
def test_declaration_mistakes_are_caught_at_import(kwargs, match):
    with pytest.raises(TypeError, match=match):
        option("X", **kwargs)


@dataclass(frozen=True)
class Parsed:
    endpoint: str = option("ApiEndpoint", "https://api.example", parse=lambda v: v.rstrip("/"))
    token: str | None = option("Token", None, kind=str, secret=True, parse=lambda v: Secret(v) if v else None)
    table: str | None = option("Table", None, kind=str, parse=lambda v: v or None)


def test_parse_turns_the_checked_value_into_the_kept_one():
    got = read_options(Parsed, {"apiendpoint": "http://192.0.2.9/", "TOKEN": "tok-123", "Table": ""}, backend="x")
    assert got == Parsed("http://192.0.2.9", Secret("tok-123"), None)
    assert read_options(Parsed, {}, backend="x") == Parsed()  # defaults are not parsed


def test_parse_errors_are_one_line_and_a_secret_option_is_never_shown():
    def refuse(value):
        raise ValueError("must name a table")

    @dataclass(frozen=True)
    class Strict:
        token: str = option("Token", "", secret=True, parse=refuse)

    with pytest.raises(ConfigError) as err:
        read_options(Strict, {"Token": "tok-123"}, backend="x")
    assert str(err.value) == "x: Token must name a table"
    with pytest.raises(ConfigError) as err:
        read_options(Strict, {"Token": 12345}, backend="x")
    assert str(err.value) == "x: Token must be a string, got a JSON number"


def test_option_names_lists_the_declared_keys_in_order():
    assert option_names(Parsed) == ("ApiEndpoint", "Token", "Table")
    assert option_names(Opts)[:3] == ("ListenPort", "PSK", "Mode")
