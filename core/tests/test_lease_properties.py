"""Property tests of the lease codec: keys round-trip, and no input makes decoding raise
anything but ``ValueError`` (or, for a whole KV, anything at all)."""

from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network

from hypothesis import given
from hypothesis import strategies as st
from overlay_core.etcd import KV
from overlay_core.lease import LeaseAttrs, make_subnet_key, parse_subnet_key
from overlay_core.subnets import parse_kv

v4_nets = st.builds(lambda addr, plen: IPv4Network((addr, plen), strict=False),
                    st.integers(0, 2**32 - 1), st.integers(1, 32))
v6_nets = st.builds(lambda addr, plen: IPv6Network((addr, plen), strict=False),
                    st.integers(0, 2**128 - 1), st.integers(1, 128))
maybe_v4 = st.one_of(st.none(), st.builds(IPv4Address, st.integers(0, 2**32 - 1)))
maybe_v6 = st.one_of(st.none(), st.builds(IPv6Address, st.integers(0, 2**128 - 1)))
json_data = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(), st.text(max_size=10)),
    lambda inner: st.one_of(st.lists(inner, max_size=3), st.dictionaries(st.text(max_size=5), inner, max_size=3)),
    max_leaves=8,
)


@given(st.one_of(v4_nets.map(lambda n: (n, None)), st.tuples(v4_nets, v6_nets), v6_nets.map(lambda n: (None, n))))
def test_subnet_keys_round_trip(nets):
    v4, v6 = nets
    assert parse_subnet_key(make_subnet_key(v4, v6)) == (v4, v6)


@given(st.text(max_size=60))
def test_parsing_any_key_raises_only_value_error(text):
    try:
        v4, v6 = parse_subnet_key(text)
    except ValueError:
        return
    assert v4 is not None or v6 is not None


@given(maybe_v4, maybe_v6, st.text(max_size=12), json_data, json_data)
def test_lease_values_round_trip(ip, ip6, btype, data, data6):
    attrs = LeaseAttrs(ip or IPv4Address("0.0.0.0"), ip6, btype, data, data6)
    assert LeaseAttrs.from_json(attrs.to_json()) == attrs


@given(st.binary(max_size=120))
def test_decoding_any_value_raises_only_value_error(raw):
    try:
        LeaseAttrs.from_json(raw)
    except ValueError:
        pass


@given(st.text(max_size=40), st.binary(max_size=80), st.integers(0, 2**63), st.integers(0, 2**63))
def test_parse_kv_never_raises(key, raw, revision, lease_id):
    lease = parse_kv(KV("/coreos.com/network/subnets/" + key, raw, revision, lease_id))
    assert lease is None or lease.revision == revision
