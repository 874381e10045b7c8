"""The forwarding loops: TUN <-> UDP, in one dedicated OS thread, never on a trio loop.

Two paths, same behaviour on the wire (every datagram = one inner IPv4 packet <= TUN MTU):

- ``FastPath``: the TUN hands over TCP super-packets of up to 64 KB (TSO offload through the
  virtio-net header); we cut them into MTU-sized packets, checksums computed in bulk with
  numpy, and send them with UDP_SEGMENT (one system call per 64 KB). The socket receives with
  UDP_GRO (one call for many datagrams); consecutive segments of one TCP flow are joined back
  into one GSO write to the TUN. Everything else goes packet by packet.
- ``BatchPath``: no offloads, no numpy: epoll, non-blocking descriptors, recvmmsg/sendmmsg
  batches of 64 on the UDP side, large socket buffers.

Both: TTL decremented (drop at <= 1), ICMP net-unreachable for a destination without route
(Flannel's rule), per-peer and global counters. ``routes`` is replaced by other threads at any
time; a loop reads the reference once per batch.
"""

from __future__ import annotations

import ctypes
import errno
import logging
import os
import select
import socket
import struct
from ipaddress import IPv4Address

from . import packet
from .mmsg import Ring, sockaddr
from .packet import NO_VNET, VNET, VNET_F_NEEDS_CSUM, VNET_GSO_NONE, VNET_GSO_TCPV4, decrement_ttl, join_tcp
from .routes import RouteTable
from .tun import Tun

log = logging.getLogger("overlay_udp.datapath")

UDP_SEGMENT, UDP_GRO = 103, 104
_U16_NATIVE = struct.Struct("H")
BATCH = 64
MAX_GSO_SEGMENTS = 64
MAX_UDP_PAYLOAD = 65507
MAX_PEERS = 4096
JOIN_MIN_SEGMENTS = 8  # below this a numpy join costs more than writing the packets one by one

# per-peer counter slots
TX_PACKETS, TX_BYTES, RX_PACKETS, RX_BYTES, DROPS = range(5)
PEER_FIELDS = ("tx_packets", "tx_bytes", "rx_packets", "rx_bytes", "drops")
_GLOBAL_FIELDS = ("icmp_unreachable_sent", "unroutable_dropped", "ttl_expired", "sndbuf_full", "send_errors",
                  "malformed", "tun_write_errors")


class Counters:
    """Counters written by the one packet thread, read by the control thread (ints: no lock needed)."""

    def __init__(self) -> None:
        self.peers: dict[str, list[int]] = {}
        for name in _GLOBAL_FIELDS:
            setattr(self, name, 0)

    def peer(self, ip: str) -> list[int]:
        """The counters of ``ip``; past MAX_PEERS addresses, new ones share the row "other" (anyone
        can send us datagrams from any address: the table must not grow without bound)."""
        c = self.peers.get(ip)
        if c is None:
            if len(self.peers) >= MAX_PEERS:
                ip = "other"
                c = self.peers.get(ip)
            if c is None:
                c = self.peers[ip] = [0, 0, 0, 0, 0]
        return c

    def snapshot(self) -> dict:
        return {"peers": {ip: dict(zip(PEER_FIELDS, c)) for ip, c in list(self.peers.items())},
                **{name: getattr(self, name) for name in _GLOBAL_FIELDS}}


class Datapath:
    """What both paths share: descriptors, routes, counters, the stop eventfd and the epoll loop."""

    name = "?"

    def __init__(self, tun: Tun, sock: socket.socket, source: IPv4Address, mtu: int, routes: RouteTable,
                 counters: Counters | None = None) -> None:
        self.tun, self.sock, self.mtu = tun, sock, mtu
        self.source = source.packed
        self.routes = routes
        self.counters = counters or Counters()
        self._wake = os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC)
        os.set_blocking(tun.fd, False)
        sock.setblocking(False)

    def stop(self) -> None:
        """Make ``run`` return (from any thread; again is harmless). The eventfd stays open for the
        life of the process, so a late call never writes into a reused descriptor number."""
        os.eventfd_write(self._wake, 1)

    def run(self) -> None:
        """Forward until ``stop``; the descriptors stay open (a handover passes them on)."""
        ep = select.epoll()
        tun, udp = self.tun.fd, self.sock.fileno()
        ep.register(tun, select.EPOLLIN)
        ep.register(udp, select.EPOLLIN)
        ep.register(self._wake, select.EPOLLIN)
        try:
            while True:
                for fd, _ in ep.poll():
                    if fd == self._wake:
                        os.eventfd_read(self._wake)
                        return
                    try:
                        self.from_tun() if fd == tun else self.from_udp()
                    except BlockingIOError:  # drained
                        pass
        finally:
            ep.close()

    def from_tun(self) -> None:
        raise NotImplementedError

    def from_udp(self) -> None:
        raise NotImplementedError

    # -- shared per-packet steps

    def unroutable(self, p) -> None:
        """No route for a packet from the TUN: ICMP net-unreachable back into the TUN, as Flannel."""
        reply = packet.net_unreachable(p, self.source)
        if reply is None:
            self.counters.unroutable_dropped += 1
            return
        try:
            os.writev(self.tun.fd, [NO_VNET, reply])
            self.counters.icmp_unreachable_sent += 1
        except OSError:
            self.counters.tun_write_errors += 1

    def to_tun(self, p, c: list[int]) -> None:
        """Write one received inner packet to the TUN, TTL decremented."""
        if len(p) < 20 or p[0] >> 4 != 4:
            self.counters.malformed += 1
            c[DROPS] += 1
        elif not decrement_ttl(p):
            self.counters.ttl_expired += 1
            c[DROPS] += 1
        else:
            try:
                os.writev(self.tun.fd, [NO_VNET, p])
            except OSError:
                self.counters.tun_write_errors += 1
                c[DROPS] += 1

    def send_error(self, e: OSError, c: list[int], count: int) -> None:
        if e.errno in (errno.EAGAIN, errno.ENOBUFS):
            self.counters.sndbuf_full += count
        else:
            self.counters.send_errors += count
        c[DROPS] += count


class FastPath(Datapath):
    """TSO super-packets from the TUN -> UDP_SEGMENT sends; UDP_GRO receives -> GSO writes."""

    name = "fast"

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.sock.setsockopt(socket.SOL_UDP, UDP_GRO, 1)
        self._tbuf = bytearray(VNET.size + 65535)
        self._ubuf = bytearray(65535)
        self._cmsg_space = socket.CMSG_SPACE(4)
        self._gso: dict[int, tuple[list, int]] = {}
        self.udp_gso = True

    def from_tun(self) -> None:
        tb = self._tbuf
        tmv = memoryview(tb)
        routes = self.routes
        counters = self.counters
        for _ in range(BATCH):
            n = os.readv(self.tun.fd, [tb])
            flags, gso_type, _, gso_size, cstart, coff = VNET.unpack_from(tb)
            p = tmv[VNET.size:n]
            if len(p) < 20 or p[0] >> 4 != 4:
                counters.malformed += 1
                continue
            peer = routes.lookup(p)
            if peer is None:
                self.unroutable(p)
                continue
            c = counters.peer(peer[0])
            if p[8] <= 1:
                counters.ttl_expired += 1
                c[DROPS] += 1
                continue
            gso = gso_type & 0x7F
            if gso == VNET_GSO_TCPV4 and p[9] == packet.PROTO_TCP and gso_size:
                ihl = (p[0] & 15) * 4
                if ihl + (p[ihl + 12] >> 4) * 4 + gso_size > self.mtu:  # a datagram must fit the TUN MTU
                    counters.malformed += 1
                    c[DROPS] += 1
                    continue
                self._send_segments(packet.segment_tcp(p, gso_size), peer, c)
            elif gso == VNET_GSO_NONE:
                if flags & VNET_F_NEEDS_CSUM:
                    packet.complete_checksum(p, cstart, coff)
                decrement_ttl(p)
                try:
                    self.sock.sendto(p, peer)
                    c[TX_PACKETS] += 1
                    c[TX_BYTES] += len(p)
                except OSError as e:
                    self.send_error(e, c, 1)
            else:
                counters.malformed += 1
                c[DROPS] += 1

    def _send_segments(self, segs: packet.Segments, peer: tuple[str, int], c: list[int]) -> None:
        data, size = segs.data, segs.size
        if not self.udp_gso:
            for p in segs.packets():
                try:
                    self.sock.sendto(p, peer)
                    c[TX_PACKETS] += 1
                    c[TX_BYTES] += len(p)
                except OSError as e:
                    self.send_error(e, c, 1)
            return
        gso = self._gso.get(size)
        if gso is None:  # one entry per segment size: the MSS of the flows through this node
            if len(self._gso) > 64:
                self._gso.clear()
            gso = self._gso[size] = ([(socket.SOL_UDP, UDP_SEGMENT, _U16_NATIVE.pack(size))],
                                     min(MAX_GSO_SEGMENTS, MAX_UDP_PAYLOAD // size) * size)
        cmsg, chunk = gso
        for off in range(0, len(data), chunk):
            part = data[off:off + chunk]
            nbytes = len(part)
            count = -(-nbytes // size)
            try:
                self.sock.sendmsg((part,), cmsg if count > 1 else (), 0, peer)
                c[TX_PACKETS] += count
                c[TX_BYTES] += nbytes
            except OSError as e:
                if e.errno in (errno.EIO, errno.EINVAL) and count > 1:
                    log.warning("UDP segmentation offload refused (%s): sending segments one by one", e.strerror)
                    self.udp_gso = False
                    self._send_segments(packet.Segments(data[off:], size), peer, c)
                    return
                self.send_error(e, c, count)

    def from_udp(self) -> None:
        ub = self._ubuf
        umv = memoryview(ub)
        counters = self.counters
        joined = joined_c = None  # a join in progress and the counters of its sender
        try:
            for _ in range(BATCH):
                n, anc, _, addr = self.sock.recvmsg_into([ub], self._cmsg_space)
                size = n
                for level, kind, data in anc:
                    if level == socket.SOL_UDP and kind == UDP_GRO:
                        size = struct.unpack("i", data[:4])[0]
                if not n:
                    continue
                c = counters.peer(addr[0])
                c[RX_PACKETS] += -(-n // size)
                c[RX_BYTES] += n
                data = umv[:n]
                if joined is not None:
                    if joined_c is c and joined.extend(data, size):
                        continue
                    self._write_joined(joined, joined_c)
                    joined = None
                if n >= JOIN_MIN_SEGMENTS * size:
                    joined, joined_c = join_tcp(data, size), c
                    if joined is not None:
                        continue
                for off in range(0, n, size):
                    self.to_tun(data[off:off + size], c)
        finally:
            if joined is not None:
                self._write_joined(joined, joined_c)

    def _write_joined(self, joined: packet.Joined, c: list[int]) -> None:
        vnet, header = joined.vnet_and_header()
        try:
            os.writev(self.tun.fd, [vnet, header, *joined.parts])
        except OSError:
            self.counters.tun_write_errors += 1
            c[DROPS] += 1


class BatchPath(Datapath):
    """Per-packet forwarding, UDP side batched with recvmmsg/sendmmsg; no offloads, no numpy."""

    name = "batch"

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        try:  # a socket handed over by a fast path has it on
            self.sock.setsockopt(socket.SOL_UDP, UDP_GRO, 0)
        except OSError:  # a kernel without UDP_GRO
            pass
        slot = VNET.size + self.mtu
        self._tx = Ring(BATCH, slot)
        self._rx = Ring(BATCH, self.mtu)
        self._names: dict[tuple[str, int], object] = {}
        self._names_for: RouteTable | None = None
        self._sources: dict[bytes, str] = {}

    def _sockaddr(self, peer: tuple[str, int]):
        if self._names_for is not self.routes:  # drop addresses of removed peers with the table they came from
            self._names, self._names_for = {}, self.routes
        name = self._names.get(peer)
        if name is None:
            name = self._names[peer] = sockaddr(*peer)
        return name

    def from_tun(self) -> None:
        tx, routes, counters = self._tx, self.routes, self.counters
        fd = self.tun.fd
        pending: list[list[int]] = []
        try:
            while len(pending) < BATCH:
                k = len(pending)
                view = tx.views[k]
                n = os.readv(fd, [view])
                flags, gso_type, _, _, cstart, coff = VNET.unpack_from(view)
                p = view[VNET.size:n]
                if gso_type or len(p) < 20 or p[0] >> 4 != 4:
                    counters.malformed += 1  # a super-packet left over from a fast-path forwarder
                    continue
                peer = routes.lookup(p)
                if peer is None:
                    self.unroutable(p)
                    continue
                c = counters.peer(peer[0])
                if not decrement_ttl(p):
                    counters.ttl_expired += 1
                    c[DROPS] += 1
                    continue
                if flags & VNET_F_NEEDS_CSUM:
                    packet.complete_checksum(p, cstart, coff)
                msg = tx.msgs[k].hdr
                msg.name = ctypes.addressof(self._sockaddr(peer))
                msg.namelen = 16
                tx.iov[k].base = tx.base + k * tx.slot + VNET.size
                tx.iov[k].len = len(p)
                pending.append(c)
                c[TX_PACKETS] += 1
                c[TX_BYTES] += len(p)
        finally:
            if pending:
                self._flush(pending)

    def _flush(self, pending: list[list[int]]) -> None:
        """Send the batch; a datagram the kernel refuses (no route to that peer, say) is counted and
        skipped so the rest still go; a full socket buffer drops the rest of the batch."""
        fd, count, i = self.sock.fileno(), len(pending), 0
        while i < count:
            sent, err = self._tx.send(fd, i, count)
            i += sent
            if i == count:
                return
            if not sent and err in (errno.EAGAIN, errno.ENOBUFS):
                for j in range(i, count):
                    self._unsent(pending[j], j)
                    self.counters.sndbuf_full += 1
                return
            if not sent:
                self._unsent(pending[i], i)
                self.counters.send_errors += 1
                i += 1

    def _unsent(self, c: list[int], slot: int) -> None:
        c[TX_PACKETS] -= 1
        c[TX_BYTES] -= self._tx.iov[slot].len
        c[DROPS] += 1

    def from_udp(self) -> None:
        rx, counters, sources = self._rx, self.counters, self._sources
        fd = self.sock.fileno()
        for _ in range(BATCH):
            rx.arm_receive(rx.size)
            r = rx.recv(fd)
            if not r:
                return
            for i in range(r):
                raw = rx.source(i)
                ip = sources.get(raw)
                if ip is None:
                    if len(sources) > 4096:
                        sources.clear()
                    ip = sources[raw] = socket.inet_ntoa(raw)
                n = rx.msgs[i].len
                c = counters.peer(ip)
                c[RX_PACKETS] += 1
                c[RX_BYTES] += n
                self.to_tun(rx.views[i][:n], c)
            if r < rx.size:
                return

