"""packet.py: checksums, TTL patching, ICMP unreachable, segmentation and joining (pure)."""

import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from overlay_udp import packet
from overlay_udp.packet import (
    ACK,
    CWR,
    FIN,
    PSH,
    VNET,
    checksum,
    decrement_ttl,
    ip_header_ok,
    join_tcp,
    net_unreachable,
    ones_sum,
    segment_tcp,
    tcp_checksum_ok,
)


def reference_checksum(data: bytes) -> int:
    """RFC 1071 the slow, obvious way: 16-bit words, end-around carry, complement."""
    if len(data) & 1:
        data += b"\0"
    s = 0
    for (w,) in struct.iter_unpack("!H", data):
        s += w
        s = (s & 0xFFFF) + (s >> 16)
    return ~s & 0xFFFF


def ip_header(ttl=64, proto=6, total=20, ident=0x1234, frag=0x4000, src=b"\x0a\x05\x01\x02", dst=b"\x0a\x05\x02\x02",
              tos=0):
    h = bytearray(struct.pack("!BBHHHBBH4s4s", 0x45, tos, total, ident, frag, ttl, proto, 0, src, dst))
    struct.pack_into("!H", h, 10, reference_checksum(bytes(h)))
    return h


def tcp_packet(payload: bytes, seq=1000, flags=ACK, options=b"", ttl=64, ident=7):
    tcp = bytearray(struct.pack("!HHIIBBHHH", 40000, 5201, seq, 555, (20 + len(options)) // 4 << 4, flags, 502, 0, 0))
    tcp += options
    p = ip_header(ttl=ttl, total=20 + len(tcp) + len(payload), ident=ident) + tcp + payload
    pseudo = bytes(p[12:20]) + struct.pack("!BBH", 0, 6, len(tcp) + len(payload))
    struct.pack_into("!H", p, 36, reference_checksum(pseudo + bytes(p[20:])))
    return p


def test_checksum_matches_reference_on_known_header():
    # RFC 1071 / Wikipedia example header: checksum 0xb861
    h = bytes.fromhex("450000730000400040110000c0a80001c0a800c7")
    assert checksum(h) == 0xB861 == reference_checksum(h)


@given(st.binary(max_size=300))
def test_checksum_equals_reference(data):
    assert checksum(data) == reference_checksum(data)


@given(st.integers(0, 255), st.integers(0, 255), st.integers(0, 0xFFFF), st.integers(0, 0xFFFF), st.integers(0, 255),
       st.binary(min_size=8, max_size=8))
def test_ttl_patch_equals_full_recomputation(ttl, proto, ident, frag, tos, addrs):
    h = ip_header(ttl=ttl, proto=proto, ident=ident, frag=frag, tos=tos, src=addrs[:4], dst=addrs[4:])
    before = bytes(h)
    if ttl <= 1:
        assert not decrement_ttl(h) and bytes(h) == before
        return
    assert decrement_ttl(h)
    expected = bytearray(before)
    expected[8] = ttl - 1
    expected[10:12] = b"\0\0"
    struct.pack_into("!H", expected, 10, reference_checksum(bytes(expected)))
    assert h == expected
    assert ip_header_ok(h)


def test_ttl_patch_edge_checksums():
    # headers whose checksum field sits at the wrap-around points of the incremental update
    for ident in range(0, 0x10000, 97):
        h = ip_header(ttl=2, ident=ident)
        assert decrement_ttl(h) and h[8] == 1 and ones_sum(h) == 0xFFFF
        assert not decrement_ttl(h)


def test_net_unreachable_as_flannel():
    offender = tcp_packet(b"x" * 100)
    reply = net_unreachable(offender, bytes([10, 5, 1, 0]))
    assert ip_header_ok(reply)
    assert reply[8] == 8 and reply[9] == 1  # TTL 8, ICMP
    assert reply[12:16] == bytes([10, 5, 1, 0]) and reply[16:20] == offender[12:16]
    icmp = reply[20:]
    assert icmp[0] == 3 and icmp[1] == 0 and icmp[4:8] == b"\0\0\0\0"
    assert icmp[8:] == offender[:28]  # the IP header and 8 bytes
    assert reference_checksum(icmp) == 0


@given(st.sampled_from([6, 17, 47, 132]), st.integers(0, 40).map(lambda n: n & ~3), st.binary(max_size=40),
       st.integers(1, 255), st.binary(min_size=8, max_size=8))
def test_net_unreachable_quotes_header_and_eight_bytes(proto, options_len, body, ttl, addrs):
    h = bytearray(struct.pack("!BBHHHBBH4s4s", 0x45 + options_len // 4, 0, 0, 1, 0x4000, ttl, proto, 0,
                              addrs[:4], addrs[4:])) + bytes(options_len)
    offender = h + body
    struct.pack_into("!H", offender, 2, len(offender))
    struct.pack_into("!H", offender, 10, reference_checksum(bytes(offender[:len(h)])))
    reply = net_unreachable(offender, bytes([10, 5, 1, 0]))
    assert ip_header_ok(reply) and reply[8] == 8 and reply[16:20] == addrs[:4]
    assert reply[28:] == offender[:len(h) + 8]
    assert reference_checksum(reply[20:]) == 0


def test_net_unreachable_not_for_icmp_nor_later_fragments():
    src = bytes(4)
    assert net_unreachable(ip_header(proto=1, total=28) + bytes(8), src) is None
    assert net_unreachable(ip_header(frag=0x2000 | 185, total=28) + bytes(8), src) is None  # offset 185
    assert net_unreachable(ip_header(frag=0x2000, total=28) + bytes(8), src) is not None  # first fragment
    assert net_unreachable(b"\x60" + bytes(39), src) is None  # IPv6
    assert net_unreachable(bytes(10), src) is None


def super_packet(payload: bytes, flags=ACK | PSH, options=b"", seq=1000, ident=7):
    """A TSO super-packet as the TUN hands it over: total length of the whole, TCP checksum partial."""
    p = tcp_packet(payload, seq=seq, flags=flags, options=options, ident=ident)
    p[36:38] = b"\x12\x34"  # whatever the kernel left there must not matter
    return p


TS_OPTION = b"\x01\x01\x08\x0a" + bytes.fromhex("0011223344556677")


@pytest.mark.parametrize("use_numpy", [True, False])
@pytest.mark.parametrize("mss,length", [(1420, 65000), (1420, 1420 * 3), (1408, 5000), (1422, 9000), (1421, 9000),
                                        (1420, 100)])
def test_segments_are_valid_and_consecutive(use_numpy, mss, length):
    payload = bytes(range(256)) * (length // 256) + bytes(length % 256)
    p = super_packet(payload, flags=ACK | PSH | CWR, options=TS_OPTION, seq=0xFFFFF000)
    segs = segment_tcp(p, mss, use_numpy).packets()
    hl = 20 + 20 + len(TS_OPTION)
    assert len(segs) == -(-length // mss)
    assert b"".join(s[hl:] for s in segs) == payload
    for i, s in enumerate(segs):
        assert ip_header_ok(s) and tcp_checksum_ok(s) and len(s) <= hl + mss
        assert s[8] == 63
        assert struct.unpack_from("!H", s, 4)[0] == 7 + i
        assert struct.unpack_from("!I", s, 24)[0] == (0xFFFFF000 + i * mss) & 0xFFFFFFFF
        last = i == len(segs) - 1
        assert s[33] == (ACK | (PSH if last else 0) | (CWR if i == 0 else 0))


@settings(max_examples=60, deadline=None)
@given(st.binary(min_size=1, max_size=20000), st.integers(200, 1460).map(lambda m: m & ~1), st.integers(0, 0xFFFFFFFF),
       st.integers(0, 0xFFFF), st.sampled_from([ACK, ACK | PSH, ACK | FIN, ACK | CWR | PSH]),
       st.sampled_from([b"", TS_OPTION]))
def test_numpy_and_pure_segmentation_are_identical(payload, mss, seq, ident, flags, options):
    p = super_packet(payload, flags=flags, options=options, seq=seq, ident=ident)
    fast, pure = segment_tcp(p, mss, True), segment_tcp(p, mss, False)
    assert fast.packets() == pure.packets()
    for s in pure.packets():
        assert ip_header_ok(s) and tcp_checksum_ok(s)


@pytest.mark.parametrize("ident", [0, 1, 0xFFFE - 20, 0xFFFF - 3, 0xFFFF])
@pytest.mark.parametrize("seq", [0, 0xFFFFFFFF - 3000, 0xFFFFFFFF])
@pytest.mark.parametrize("options", [b"", TS_OPTION])
def test_numpy_segmentation_across_id_and_sequence_wraps(ident, seq, options):
    """IP ids wrap at 2**16 and sequence numbers at 2**32 in the middle of a super-packet; the
    header sums of every src/dst pair (0xFFFF - ... covers the largest) stay right."""
    for src in (b"\x0a\x05\x01\x02", b"\xff\xff\xff\xfe"):
        payload = bytes(range(256)) * 40
        p = super_packet(payload, flags=ACK | PSH | CWR, options=options, seq=seq, ident=ident)
        p[12:16] = src
        assert segment_tcp(p, 1000, True).packets() == segment_tcp(p, 1000, False).packets()


def finish_joined(joined) -> bytes:
    """What the kernel does with our GSO write: complete the partial TCP checksum."""
    vnet, header = joined.vnet_and_header()
    flags, gso_type, hdr_len, gso_size, start, offset = VNET.unpack(vnet)
    assert (flags, gso_type, hdr_len, gso_size, start, offset) == (1, 1, len(header), joined.mss, 20, 16)
    whole = bytearray(header + b"".join(joined.parts))
    packet.complete_checksum(whole, start, offset)
    return bytes(whole)


@settings(max_examples=60, deadline=None)
@given(st.binary(min_size=1, max_size=30000), st.integers(300, 1460).map(lambda m: m & ~1), st.integers(0, 0xFFFFFFFF),
       st.sampled_from([ACK, ACK | PSH]), st.sampled_from([b"", TS_OPTION]), st.integers(1, 7))
def test_segment_then_join_round_trip(payload, mss, seq, flags, options, split_at):
    """Segments as they cross the wire (TTL 63) join back into the super-packet, TTL 62, checksum
    complete; a join across two receive batches gives the same packet."""
    p = super_packet(payload, flags=flags, options=options, seq=seq)
    segs = segment_tcp(p, mss)
    wire = bytes(segs.data)
    expected = bytearray(p)
    expected[8] = 62
    struct.pack_into("!H", expected, 10, 0)
    struct.pack_into("!H", expected, 10, checksum(expected[:20]))
    packet.complete_checksum(expected, 20, 16)
    joined = join_tcp(wire, segs.size)
    if segs.count == 1:
        assert joined is None or finish_joined(joined) == expected
        return
    assert joined is not None and finish_joined(joined) == expected
    # the same stream arriving as two UDP_GRO batches
    cut = min(split_at, segs.count - 1) * segs.size
    first = join_tcp(wire[:cut], segs.size)
    assert first is not None and first.extend(wire[cut:], segs.size)
    assert finish_joined(first) == expected


def test_join_refuses_mixed_flows_and_gaps():
    segs = segment_tcp(super_packet(bytes(5000)), 1000)
    wire = bytearray(segs.data)
    assert join_tcp(wire, segs.size) is not None
    other_port = bytearray(wire)
    other_port[segs.size + 21] ^= 1  # second segment: another source port
    assert join_tcp(other_port, segs.size) is None
    gap = bytearray(wire)
    gap[segs.size + 27] ^= 1  # second segment: sequence number off by one
    assert join_tcp(gap, segs.size) is None
    fin = bytearray(wire)
    fin[33] |= FIN
    assert join_tcp(fin, segs.size) is None
    udp = bytearray(wire)
    udp[9] = 17
    assert join_tcp(udp, segs.size) is None
