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

import struct
from dataclasses import dataclass

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


@dataclass(frozen=True)
class Segments:
    """The result of segmenting one super-packet.

    ``bulk`` holds ``len(bulk) // size`` segments of exactly ``size`` bytes back to back (possibly
    none); ``last`` is the final, possibly shorter segment, which carries PSH/FIN. On the wire each
    segment is one datagram, so ``bulk`` can go out as one UDP_SEGMENT send of ``size``."""

    bulk: bytes | memoryview
    size: int
    last: bytes

    def packets(self) -> list[bytes]:
        b = bytes(self.bulk)
        return [b[o:o + self.size] for o in range(0, len(b), self.size)] + [self.last]


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
    n_full = (len(payload) - 1) // mss if payload else 0
    middle = flags & ~(FIN | PSH)
    if n_full and use_numpy and np is not None and not mss & 1:
        bulk = _segment_bulk_numpy(template, ihl, payload, mss, n_full, ip_id, seq, middle)
    else:
        bulk = b"".join(_segment_header(template, ihl, mss, ip_id + i, seq + i * mss,
                                        middle if i == 0 else middle & ~CWR,
                                        ones_sum(payload[i * mss:(i + 1) * mss])) + payload[i * mss:(i + 1) * mss]
                        for i in range(n_full))
    tail = payload[n_full * mss:]
    last = _segment_header(template, ihl, len(tail), ip_id + n_full, seq + n_full * mss,
                           flags & ~CWR if n_full else flags, ones_sum(tail)) + tail
    return Segments(bulk, hl + mss, bytes(last))


_STEPS: dict[tuple[int, int], tuple] = {}


def _steps(n: int, mss: int) -> tuple:
    """Cached ``arange(n)`` and ``arange(n) * mss``: in uint64 for building, in uint32 for checking."""
    steps = _STEPS.get((n, mss))
    if steps is None:
        if len(_STEPS) > 256:
            _STEPS.clear()
        i = np.arange(n, dtype=np.uint64)
        steps = _STEPS[(n, mss)] = (i, i * mss, (i * mss).astype(np.uint32))
    return steps


def _segment_bulk_numpy(template: bytearray, ihl: int, payload, mss: int, n: int, ip_id: int, seq: int,
                        flags: int) -> memoryview:
    """The ``n`` full-size segments built as one (n, hl + mss) array; same bytes as the pure path.

    Every numpy call costs a microsecond or two whatever its size, so the constant parts of both
    checksums are summed once in Python and only ids, sequence numbers and payloads per row."""
    hl = len(template)
    size = hl + mss
    i, offsets, _ = _steps(n, mss)
    ids = (ip_id + i) & 0xFFFF
    seqs = (seq + offsets) & 0xFFFFFFFF
    row = bytearray(template)  # the header every row starts from: its length, the flags of rows 1..n-1
    _U16.pack_into(row, 2, size)
    row[ihl + 13] = flags & ~CWR
    const = bytearray(row)
    const[4:6] = b"\0\0"
    const[ihl + 4:ihl + 8] = bytes(4)
    # ~fold(s) of a sum s >= 1 is 0xFFFE - (s - 1) % 0xFFFF; the "- 1" goes into the constants
    ip_base = ones_sum(const[:ihl]) - 1
    tcp_base = ones_sum(const[12:20]) + PROTO_TCP + size - ihl + ones_sum(const[ihl:]) - 1
    # Payload sums over native little-endian words: x * 256 (mod 0xFFFF) swaps the bytes of a
    # 16-bit sum, which turns it into the big-endian sum; 32-bit words sum like two 16-bit words.
    width = 4 if mss % 4 == 0 else 2
    tcp = np.frombuffer(payload, "<u%d" % width, n * mss // width).reshape(n, -1).sum(axis=1, dtype=np.uint64)
    tcp *= 256
    tcp += seqs  # a 32-bit word sums like its two halves, modulo 0xFFFF
    tcp += tcp_base
    tcp[0] += flags - (flags & ~CWR)  # CWR stays on the first segment
    out = np.empty((n, size), np.uint8)
    out[:, :hl] = np.frombuffer(row, np.uint8)
    out[:, hl:] = np.frombuffer(payload, np.uint8, n * mss).reshape(n, mss)
    out[0, ihl + 13] = flags
    be16 = out.view(">u2")
    be16[:, 2] = ids
    if size % 4 == 0:
        out.view(">u4")[:, ihl // 4 + 1] = seqs
    else:
        be16[:, ihl // 2 + 2] = seqs >> 16
        be16[:, ihl // 2 + 3] = seqs & 0xFFFF
    ids += ip_base
    ids %= 0xFFFF
    be16[:, 5] = 0xFFFE - ids
    tcp %= 0xFFFF
    be16[:, ihl // 2 + 8] = 0xFFFE - tcp
    return memoryview(out).cast("B")


# ---------------------------------------------------------------------------------------------- joining

# Header bytes that may differ between segments of one flow (IHL 5): total length, IP id, IP checksum,
# sequence number, TCP flags and TCP checksum. Everything else must be equal for a join.
_VARIABLE = (2, 3, 4, 5, 10, 11, 24, 25, 26, 27, 33, 36, 37)
_MASKS: dict[int, object] = {}


def _fixed_mask(hl: int):
    mask = _MASKS.get(hl)
    if mask is None:
        mask = np.full(hl, 0xFF, np.uint8)
        mask[list(_VARIABLE)] = 0
        _MASKS[hl] = mask
    return mask


def _flow_key(p, hl: int) -> bytes:
    """The header bytes ``_fixed_mask`` compares, for the pure-Python extension of a join."""
    return bytes(p[0:2]) + bytes(p[6:10]) + bytes(p[12:24]) + bytes(p[28:33]) + bytes(p[34:36]) + bytes(p[38:hl])


class Joined:
    """Consecutive segments of one TCP flow, to be written to the TUN as one TCPv4 GSO packet."""

    __slots__ = ("header", "hl", "mss", "flags", "key", "parts", "total", "next_seq", "open")

    def __init__(self, header: bytearray, mss: int, flags: int, parts: list, total: int, first_seq: int,
                 open_: bool) -> None:
        self.header, self.hl, self.mss, self.flags = header, len(header), mss, flags
        self.key = _flow_key(header, self.hl)
        self.parts, self.total = parts, total
        self.next_seq = (first_seq + total) & 0xFFFFFFFF
        self.open = open_  # the last segment was full-size and plain ACK: more may follow

    def extend(self, buf, size: int) -> bool:
        """Append the segments in ``buf`` (``size`` bytes each, the last maybe shorter) when they
        continue this flow; False (nothing appended) otherwise."""
        if not self.open:
            return False
        hl, seq = self.hl, self.next_seq
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

    Needs numpy: the per-segment comparisons are one vector operation per field."""
    k, n = divmod(len(buf), size)
    if k < 1 or size < 41 or buf[0] != 0x45 or buf[9] != PROTO_TCP or buf[8] <= 1:
        return None
    hl = 20 + (buf[32] >> 4) * 4
    if hl < 40 or hl >= size or 0 < n <= hl:
        return None
    mss = size - hl
    rows = np.frombuffer(buf, np.uint8, k * size).reshape(k, size)
    heads = rows[:, :hl]
    flags = heads[:, 33]
    last_flags = int(flags[-1])
    seq0 = _U32.unpack_from(buf, 24)[0]
    if (((heads ^ heads[0]) & _fixed_mask(hl)).any() or (flags[:-1] != ACK).any()
            or last_flags not in ((ACK,) if n else (ACK, ACK | PSH))
            or (heads.view(">u2")[:, 1] != size).any()
            or ((heads.view(">u4")[:, 6].astype(np.uint32) - np.uint32(seq0)) != _steps(k, mss)[2]).any()):
        return None
    parts = [rows[:, hl:].tobytes()]
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
