from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network

import pytest
from overlay_core.lease import Lease, LeaseAttrs, lease_from_kv, make_subnet_key, parse_subnet_key


def test_v4_key_round_trip():
    v4, v6 = parse_subnet_key("10.12.13.0-24")
    assert v4 == IPv4Network("10.12.13.0/24") and v6 is None
    assert make_subnet_key(v4, v6) == "10.12.13.0-24"


def test_dual_key_round_trip_and_full_path():
    key = "/coreos.com/network/subnets/10.12.13.0-24&fd00:12:13::-56"
    v4, v6 = parse_subnet_key(key)
    assert v6 == IPv6Network("fd00:12:13::/56")
    assert make_subnet_key(v4, v6) == key.rsplit("/", 1)[1]


def test_ipv6_only_key_uses_flannel_zero_v4_part():
    assert make_subnet_key(None, IPv6Network("fd00:1::/64")) == "0.0.0.0-0&fd00:1::-64"
    assert parse_subnet_key("0.0.0.0-0&fd00:1::-64") == (None, IPv6Network("fd00:1::/64"))


@pytest.mark.parametrize("key", [
    "10", "10.12.13.0", "10.12.13-24", "10.12.13.300-24", "10.12.13.0-24hi", "&2001::-56",
    "10.12.13.0-24&:12:13:-56", "10.12.13.0-24&20011::-56", "10.12.13.0-24&2001-56",
    "10.12.13.0-24&2001::", "10.12.13.0-24&2001::-56hi", "config", "x10.1.2.0-24", "10.1.2.0-33",
    "0.0.0.0-0",
])
def test_invalid_keys(key):
    with pytest.raises(ValueError):
        parse_subnet_key(key)


def test_value_encoding_is_byte_identical_to_flannel():
    assert LeaseAttrs(IPv4Address("1.2.3.4")).to_json() == '{"PublicIP":"1.2.3.4","PublicIPv6":null}'
    attrs = LeaseAttrs(IPv4Address("192.168.64.3"), None, "vxlan", {"VNI": 1, "VtepMAC": "c6:d2:32:6f:8f:44"})
    assert attrs.to_json() == ('{"PublicIP":"192.168.64.3","PublicIPv6":null,"BackendType":"vxlan",'
                               '"BackendData":{"VNI":1,"VtepMAC":"c6:d2:32:6f:8f:44"}}')
    dual = LeaseAttrs(IPv4Address("192.0.2.1"), IPv6Address("2001:db8::1"), "host-gw", None, {"x": 1})
    assert dual.to_json() == ('{"PublicIP":"192.0.2.1","PublicIPv6":"2001:db8::1",'
                              '"BackendType":"host-gw","BackendV6Data":{"x":1}}')


def test_value_decoding_round_trips_and_is_case_insensitive():
    attrs = LeaseAttrs.from_json('{"publicip":"192.0.2.9","PUBLICIPV6":"2001:db8::9","backendType":"vxlan",'
                                 '"BackendData":{"VNI":1}}')
    assert attrs == LeaseAttrs(IPv4Address("192.0.2.9"), IPv6Address("2001:db8::9"), "vxlan", {"VNI": 1})
    assert LeaseAttrs.from_json(attrs.to_json()) == attrs


@pytest.mark.parametrize("value", [b"", b"{", b"[]", b'{"PublicIP":"2001:db8::1"}', b'{"PublicIP":7}',
                                   b'{"PublicIP":"1.2.3.4","BackendType":5}', b"\xff"])
def test_malformed_values(value):
    with pytest.raises(ValueError):
        LeaseAttrs.from_json(value)


def test_lease_from_kv_and_reservation_flag():
    lease = lease_from_kv("/p/subnets/10.5.1.0-24", b'{"PublicIP":"192.0.2.1"}', 7, 0)
    assert lease.is_reservation and lease.revision == 7 and lease.key == "10.5.1.0-24"
    assert not Lease(lease.subnet, None, lease.attrs, 8, 99).is_reservation
