"""IPv4/TCP packet surgery for the udp data path, pure (no I/O).

- TTL decrement with the RFC 1624 incremental checksum update, dropping at TTL <= 1 as
  Flannel's proxy does (it decrements and drops at zero);
- the ICMP destination-unreachable/net-unreachable reply Flannel's proxy sends for a packet
  it has no route for;
- TCP segmentation of a TSO super-packet read from a TUN with a virtio-net header into
  MTU-sized packets with complete IP and TCP checksums, in bulk with numpy or in pure Python
  (byte-identical results);
- the reverse: joining consecutive segments of one TCP flow into one super-packet that the
  kernel accepts as a GSO write on the TUN.

Checksums are ones'-complement sums computed through big integers: ``int.from_bytes`` of a
whole buffer taken modulo 0xFFFF equals the sum of its 16-bit words with end-around carry,
because 2**16 == 1 (mod 0xFFFF). That makes a 1400-byte payload sum one C-level operation.
"""

from __future__ import annotations

import functools
import struct

try:
    import numpy as np
except ImportError:  # the batched per-packet path runs without it
    np = None

PROTO_ICMP, PROTO_TCP = 1, 6
FIN, PSH, ACK, CWR = 0x01, 0x08, 0x10, 0x80
ICMP_TTL = 8  # as Flannel's proxy

# struct virtio_net_hdr: flags, gso_type, hdr_len, gso_size, csum_start, csum_offset
VNET = struct.Struct("<BBHHHH")
VNET_F_NEEDS_CSUM = 1
VNET_GSO_NONE, VNET_GSO_TCPV4 = 0, 1
NO_VNET = bytes(VNET.size)

_U16 = struct.Struct("!H")
_U32 = struct.Struct("!I")


def ones_sum(data) -> int:
    """Ones'-complement sum of ``data`` as big-endian 16-bit words (odd length: zero-padded).

    Returns 0 only for all-zero data, otherwise 1..0xFFFF, exactly as end-around-carry addition."""
    n = int.from_bytes(data, "big")
    if len(data) & 1:
        n <<= 8
    if not n:
        return 0
    return n % 0xFFFF or 0xFFFF


def fold_add(*values: int) -> int:
    """Ones'-complement addition of 16-bit sums (any number of them)."""
    s = sum(values)
    if not s:
        return 0
    return s % 0xFFFF or 0xFFFF


def checksum(data) -> int:
    """The Internet checksum of ``data`` (RFC 1071)."""
    return ~ones_sum(data) & 0xFFFF


def ip_header_ok(packet) -> bool:
    """Is ``packet`` an IPv4 packet whose header checksum verifies and whose length field matches?"""
    if len(packet) < 20 or packet[0] >> 4 != 4:
        return False
    ihl = (packet[0] & 15) * 4
    return ihl >= 20 and len(packet) >= ihl and _U16.unpack_from(packet, 2)[0] == len(packet) \
        and ones_sum(packet[:ihl]) == 0xFFFF


def tcp_checksum_ok(packet) -> bool:
    """Does the TCP checksum of the IPv4 ``packet`` verify?"""
    ihl = (packet[0] & 15) * 4
    length = len(packet) - ihl
    return fold_add(ones_sum(packet[12:20]), PROTO_TCP, length, ones_sum(packet[ihl:])) == 0xFFFF


def decrement_ttl(packet) -> bool:
    """Decrement the TTL of the IPv4 header at the start of the writable buffer ``packet``.

    Returns False (and leaves the packet alone) when the TTL is <= 1: the packet must be dropped.
    The header checksum is patched with RFC 1624 equation 3, HC' = ~(~HC + ~m + m'), where m is
    the 16-bit word holding TTL and protocol."""
    ttl = packet[8]
    if ttl <= 1:
        return False
    old = ttl << 8 | packet[9]
    packet[8] = ttl - 1
    hc = packet[10] << 8 | packet[11]
    s = (~hc & 0xFFFF) + (~old & 0xFFFF) + (old - 0x100)
    s = (s & 0xFFFF) + (s >> 16)
    s = (s & 0xFFFF) + (s >> 16)
    hc = ~s & 0xFFFF
    packet[10] = hc >> 8
    packet[11] = hc & 0xFF
    return True


def net_unreachable(offender, source: bytes) -> bytes | None:
    """The ICMP destination-unreachable/net-unreachable (type 3, code 0) for ``offender``.

    As Flannel's proxy: from ``source`` (the TUN address, 4 bytes) to the offender's source, TTL 8,
    quoting the offender's IP header and the first 8 bytes after it. None for an offender that is
    ICMP itself, a non-first fragment, or not a whole IPv4 header."""
    if len(offender) < 20 or offender[0] >> 4 != 4:
        return None
    ihl = (offender[0] & 15) * 4
    if ihl < 20 or len(offender) < ihl or offender[9] == PROTO_ICMP or _U16.unpack_from(offender, 6)[0] & 0x1FFF:
        return None
    quote = bytes(offender[:ihl + 8])
    icmp = bytearray(b"\x03\x00\x00\x00\x00\x00\x00\x00" + quote)
    _U16.pack_into(icmp, 2, checksum(icmp))
    header = bytearray(struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(icmp), 0, 0, ICMP_TTL, PROTO_ICMP, 0,
                                   source, bytes(offender[12:16])))
    _U16.pack_into(header, 10, checksum(header))
    return bytes(header + icmp)


def complete_checksum(packet, start: int, offset: int) -> None:
    """Finish a CHECKSUM_PARTIAL packet from a TUN with offloads: the field at ``start + offset``
    holds the pseudo-header sum, the checksum covers ``packet[start:]``."""
    _U16.pack_into(packet, start + offset, checksum(packet[start:]))


# ---------------------------------------------------------------------------------------------- segmentation

def _segment_header(template: bytearray, ihl: int, payload_len: int, ip_id: int, seq: int, flags: int,
                    payload_sum: int) -> bytearray:
    """One segment's headers: ``template`` (TTL already decremented, checksums zero) with the
    per-segment fields and both checksums filled in."""
    h = bytearray(template)
    hl = len(h)
    _U16.pack_into(h, 2, hl + payload_len)
    _U16.pack_into(h, 4, ip_id & 0xFFFF)
    _U32.pack_into(h, ihl + 4, seq & 0xFFFFFFFF)
    h[ihl + 13] = flags
    _U16.pack_into(h, 10, checksum(h[:ihl]))
    tcp = fold_add(ones_sum(h[12:20]), PROTO_TCP, hl - ihl + payload_len, ones_sum(h[ihl:]), payload_sum)
    _U16.pack_into(h, ihl + 16, ~tcp & 0xFFFF)
    return h


class Segments:
    """The result of segmenting one super-packet: every segment back to back in ``data``, each
    ``size`` bytes except the last, which may be shorter (it carries PSH/FIN). On the wire each
    segment is one datagram, so ``data`` goes out as UDP_SEGMENT sends of ``size``."""

    __slots__ = ("data", "size", "count")

    def __init__(self, data: bytes | memoryview, size: int) -> None:
        self.data, self.size = data, size
        self.count = -(-len(data) // size)

    def packets(self) -> list[bytes]:
        b = bytes(self.data)
        return [b[o:o + self.size] for o in range(0, len(b), self.size)]


def segment_tcp(packet, mss: int, use_numpy: bool = True) -> Segments:
    """Cut the TCPv4 super-packet ``packet`` (TTL > 1, TCP checksum field holding anything) into
    segments of at most ``mss`` payload bytes, decrementing the TTL as the forwarder must.

    IP ids and sequence numbers advance per segment, CWR stays on the first segment only, FIN
    and PSH on the last only: what the kernel's own TCP segmentation produces."""
    ihl = (packet[0] & 15) * 4
    hl = ihl + (packet[ihl + 12] >> 4) * 4
    payload = packet[hl:]
    template = bytearray(packet[:hl])
    template[8] -= 1
    template[10:12] = template[ihl + 16:ihl + 18] = b"\0\0"
    ip_id = template[4] << 8 | template[5]
    seq = _U32.unpack_from(template, ihl + 4)[0]
    flags = template[ihl + 13]
    if mss < len(payload) <= MAX_NUMPY_SEGMENTS * mss and use_numpy and np is not None and not mss & 1:
        return Segments(_segment_numpy(template, ihl, payload, mss, ip_id, seq, flags), hl + mss)
    n = max(-(-len(payload) // mss), 1)
    segments = []
    for i in range(n):
        chunk = bytes(payload[i * mss:(i + 1) * mss])
        f = flags if i == n - 1 else flags & ~(FIN | PSH)
        f = f if i == 0 else f & ~CWR
        segments += (_segment_header(template, ihl, len(chunk), ip_id + i, seq + i * mss, f, ones_sum(chunk)), chunk)
    return Segments(b"".join(segments), hl + mss)


MAX_NUMPY_SEGMENTS = 4096  # more segments than this (an MSS below 16) go the pure way
_SEQ_STEPS: dict[tuple[int, int], object] = {}


def _seq_steps(n: int, mss: int):
    """Cached ``arange(n) * mss`` as uint32 (sequence numbers wrap at 2**32)."""
    steps = _SEQ_STEPS.get((n, mss))
    if steps is None:
        if len(_SEQ_STEPS) > 256:
            _SEQ_STEPS.clear()
        steps = _SEQ_STEPS[(n, mss)] = np.arange(n, dtype=np.uint32) * np.uint32(mss)
    return steps


@functools.cache
def _tables() -> tuple:
    """Two ramps, built once: ``i & 0xFFFF`` (consecutive IP ids, wrapping, are a slice of it) and
    ``0xFFFE - i % 0xFFFF`` (the checksum of a header whose word sum minus one is i: a slice
    gives the IP checksums of consecutive ids)."""
    i = np.arange(0x10000 + MAX_NUMPY_SEGMENTS, dtype=np.uint32)
    return i.astype(np.uint16), (0xFFFE - i % 0xFFFF).astype(np.uint16)


def _segment_numpy(template: bytearray, ihl: int, payload, mss: int, ip_id: int, seq: int,
                   flags: int) -> memoryview:
    """All segments built in one (n, hl + mss) array, the last row zero-padded (zeros add nothing
    to a checksum) and cut off in the returned view; same bytes as the pure path.

    Every numpy call costs about a microsecond whatever its size, so the work is arranged for few
    calls: the header bytes common to all rows are summed once in Python, IP ids and IP checksums
    are slices of precomputed ramps, the rows differ only in sequence number and payload sum, and
    the first and last rows (CWR, PSH/FIN, the last row's length) get scalar corrections."""
    hl = len(template)
    size = hl + mss
    n, tail = divmod(len(payload), mss)
    if tail:
        n += 1
    else:
        tail = mss
    middle = flags & ~(FIN | PSH | CWR)  # the flags of rows 1 .. n-2
    last_flags = flags & ~CWR
    row = bytearray(template)
    _U16.pack_into(row, 2, size)
    row[ihl + 13] = middle
    # ~fold(s) of a sum s >= 1 is 0xFFFE - (s - 1) % 0xFFFF; the "- 1" goes into the constants.
    # The row's id and sequence number are still the first segment's: subtract them from the base.
    ip_base = (ones_sum(row[:ihl]) - ip_id - 1) % 0xFFFF
    tcp_base = ones_sum(row[12:20]) + PROTO_TCP + size - ihl + ones_sum(row[ihl:]) - (seq >> 16) - (seq & 0xFFFF) \
        - 1 + 2 * 0xFFFF
    out = np.empty((n, size), np.uint8)
    pay = np.frombuffer(payload, np.uint8)
    full = (n - 1) * mss
    out[:n - 1, hl:] = pay[:full].reshape(n - 1, mss)
    out[n - 1, hl:hl + tail] = pay[full:]
    out[n - 1, hl + tail:] = 0
    out[:, :hl] = np.frombuffer(row, np.uint8)
    out[0, ihl + 13] = flags & ~(FIN | PSH)
    out[n - 1, ihl + 13] = last_flags
    ramp, ip_checksums = _tables()
    be16 = out.view(">u2")
    be16[:, 2] = ramp[ip_id:ip_id + n]
    be16[n - 1, 1] = hl + tail
    # IP checksums: the word sum grows by one per row, except where the 16-bit id wraps to 0
    k = (ip_base + ip_id) % 0xFFFF
    wrap = min(0x10000 - ip_id, n)
    be16[:wrap, 5] = ip_checksums[k:k + wrap]
    if wrap < n:
        be16[wrap:, 5] = ip_checksums[k + wrap - 1:k + n - 1]
    last_id = (ip_id + n - 1) & 0xFFFF
    be16[n - 1, 5] = 0xFFFE - (ip_base + last_id + tail - mss + 0xFFFF) % 0xFFFF
    seqs = _seq_steps(n, mss) + np.uint32(seq)  # uint32: wraps as sequence numbers do
    if size % 4 == 0:
        out.view(">u4")[:, ihl // 4 + 1] = seqs
    else:
        be16[:, ihl // 2 + 2] = seqs >> 16
        be16[:, ihl // 2 + 3] = seqs
    # payload sums over native little-endian words: x * 256 (mod 0xFFFF) swaps the bytes of a
    # 16-bit sum, which turns it into the big-endian sum; 32-bit words sum like two 16-bit words.
    words = out.view("<u4")[:, hl // 4:] if mss % 4 == 0 else out.view("<u2")[:, hl // 2:]
    tcp = np.add.reduce(words, axis=1, dtype=np.uint64)
    tcp *= 256
    tcp += seqs  # a 32-bit word sums like its two halves, modulo 0xFFFF
    tcp += tcp_base
    tcp[0] += (flags & ~(FIN | PSH)) - middle  # CWR stays on the first segment
    tcp[n - 1] += last_flags - middle + tail - mss + 0xFFFF
    tcp %= 0xFFFF
    be16[:, ihl // 2 + 8] = 0xFFFE - tcp
    return memoryview(out).cast("B")[:full + n * hl + tail]


# ---------------------------------------------------------------------------------------------- joining

# A join compares the headers of all segments with the first segment's as 32-bit words (IHL 5, so
# the TCP header starts at word 5): XOR, with the IP id, both checksums and the sequence number
# masked off, must leave nothing but PSH on the last segment (the total length is compared too:
# full-size segments); the sequence numbers, subtracted, must advance by the MSS per segment.
# XOR and AND do not care about byte order, so the header words are compared in native order with
# the big-endian masks reinterpreted: no byte swapping.
_WORD_MASK = (0xFFFFFFFF, 0x0000FFFF, 0xFFFF0000, 0xFFFFFFFF, 0xFFFFFFFF, 0xFFFFFFFF, 0, 0xFFFFFFFF,
              0xFFFFFFFF, 0x0000FFFF)
_FLAGS_WORD, _PSH_IN_WORD = 8, PSH << 16
_JOIN_CHECKS: dict[tuple[int, int, int, bool], tuple] = {}


def _join_checks(k: int, mss: int, hl: int, last_psh: bool) -> tuple:
    """Cached (mask, expected XOR, sequence steps) for ``k`` segments with ``hl`` header bytes."""
    key = (k, mss, hl, last_psh)
    checks = _JOIN_CHECKS.get(key)
    if checks is None:
        if len(_JOIN_CHECKS) > 256:
            _JOIN_CHECKS.clear()
        mask = np.full(hl // 4, 0xFFFFFFFF, ">u4")
        mask[:len(_WORD_MASK)] = _WORD_MASK
        expected = np.zeros((k, hl // 4), ">u4")
        if last_psh:
            expected[k - 1, _FLAGS_WORD] = _PSH_IN_WORD
        steps = np.arange(k, dtype=np.uint32) * np.uint32(mss)
        checks = _JOIN_CHECKS[key] = (mask.view(np.uint32), expected.view(np.uint32), steps)
    return checks


def _flow_key(p, hl: int) -> bytes:
    """The header bytes that must be equal in all segments of a join, for its pure-Python extension."""
    return bytes(p[0:2]) + bytes(p[6:10]) + bytes(p[12:24]) + bytes(p[28:33]) + bytes(p[34:36]) + bytes(p[38:hl])


class Joined:
    """Consecutive segments of one TCP flow, to be written to the TUN as one TCPv4 GSO packet."""

    __slots__ = ("header", "hl", "mss", "flags", "key", "parts", "total", "next_seq", "open")

    def __init__(self, header: bytearray, mss: int, flags: int, parts: list, total: int, first_seq: int,
                 open_: bool) -> None:
        self.header, self.hl, self.mss, self.flags = header, len(header), mss, flags
        self.key = b""  # computed by the first extend
        self.parts, self.total = parts, total
        self.next_seq = (first_seq + total) & 0xFFFFFFFF
        self.open = open_  # the last segment was full-size and plain ACK: more may follow

    def extend(self, buf, size: int) -> bool:
        """Append the segments in ``buf`` (``size`` bytes each, the last maybe shorter) when they
        continue this flow; False (nothing appended) otherwise."""
        if not self.open:
            return False
        hl, seq = self.hl, self.next_seq
        if not self.key:
            self.key = _flow_key(self.header, hl)
        segs = [buf[o:o + size] for o in range(0, len(buf), size)]
        for j, p in enumerate(segs):
            last = j == len(segs) - 1
            n = len(p)
            if (n <= hl or (n - hl != self.mss and not last) or (p[2] << 8 | p[3]) != n or p[8] <= 1
                    or _U32.unpack_from(p, 24)[0] != seq or _flow_key(p, hl) != self.key
                    or p[33] not in ((ACK, ACK | PSH) if last else (ACK,))):
                return False
            seq = (seq + n - hl) & 0xFFFFFFFF
        added = (seq - self.next_seq) & 0xFFFFFFFF
        if hl + self.total + added > 65535:
            return False
        self.parts.extend(bytes(p[hl:]) for p in segs)
        self.total += added
        self.next_seq = seq
        self.flags = segs[-1][33]
        self.open = self.flags == ACK and len(segs[-1]) - hl == self.mss
        return True

    def vnet_and_header(self) -> tuple[bytes, bytearray]:
        """The virtio-net header (GSO TCPv4, checksum partial) and the IP+TCP header of the joined
        packet, TTL decremented: what precedes ``parts`` in the TUN write."""
        h, hl = bytearray(self.header), self.hl
        h[8] -= 1
        h[33] = self.flags
        _U16.pack_into(h, 2, hl + self.total)
        h[10:12] = b"\0\0"
        _U16.pack_into(h, 10, checksum(h[:20]))
        # CHECKSUM_PARTIAL: the TCP checksum field holds the pseudo-header sum (not complemented)
        _U16.pack_into(h, 36, fold_add(ones_sum(h[12:20]), PROTO_TCP, hl - 20 + self.total))
        vnet = VNET.pack(VNET_F_NEEDS_CSUM, VNET_GSO_TCPV4, hl, self.mss, 20, 16)
        return vnet, h


def join_tcp(buf, size: int) -> Joined | None:
    """Join the segments in ``buf`` (as UDP_GRO delivers them: ``size`` bytes each, the last maybe
    shorter) when they are consecutive full-size segments of one TCP flow with IHL 5, plain ACKs
    except a final ACK|PSH, TTL > 1; None when they are not (the caller then writes them one by one).

    Needs numpy: all full-size headers are checked in a handful of vector operations."""
    k, n = divmod(len(buf), size)
    if k < 1 or size < 41 or buf[0] != 0x45 or buf[9] != PROTO_TCP or buf[8] <= 1 or (buf[2] << 8 | buf[3]) != size:
        return None
    hl = 20 + (buf[32] >> 4) * 4
    if hl < 40 or hl >= size or 0 < n <= hl:
        return None
    mss = size - hl
    last_flags = buf[(k - 1) * size + 33]
    if (buf[33] != ACK and k > 1) or last_flags not in ((ACK,) if n else (ACK, ACK | PSH)):
        return None
    rows = np.frombuffer(buf, np.uint8, k * size).reshape(k, size)
    if k > 1:
        mask, expected, steps = _join_checks(k, mss, hl, last_flags != ACK)
        words = rows[:, :hl].view(np.uint32)
        diff = words ^ words[0]
        diff &= mask
        seqs = rows[:, 24:28].view(">u4")[:, 0]
        if (diff != expected).any() or (seqs - seqs[0] != steps).any():
            return None
    parts = [rows[:, hl:].tobytes()]
    seq0 = _U32.unpack_from(buf, 24)[0]
    if n:
        tail = buf[k * size:]
        if (_U16.unpack_from(tail, 2)[0] != n or tail[33] not in (ACK, ACK | PSH)
                or _flow_key(tail, hl) != _flow_key(buf, hl)
                or _U32.unpack_from(tail, 24)[0] != (seq0 + k * mss) & 0xFFFFFFFF):
            return None
        parts.append(bytes(tail[hl:]))
        last_flags = tail[33]
    total = k * mss + max(n - hl, 0)
    return Joined(bytearray(buf[:hl]), mss, last_flags, parts, total, seq0, last_flags == ACK and not n)
