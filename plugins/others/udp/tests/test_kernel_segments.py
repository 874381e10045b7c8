"""Our TCP segmentation and join against the kernel's own: a veth without checksum offload makes
the kernel segment its TCP super-packets in software, with complete checksums; we capture them,
rebuild each super-packet and check that segment_tcp gives the same bytes (TTL aside)."""

from __future__ import annotations

import os
import signal
import struct
import subprocess
import sys
import textwrap
import time

import pytest
from overlay_core.testing.netns import add_namespace, delete_namespace, ip, nsexec
from overlay_udp.packet import ACK, PSH, checksum, complete_checksum, decrement_ttl, join_tcp, segment_tcp

pytestmark = pytest.mark.netns

CSUM_OFF = textwrap.dedent("""
    import sys
    from pyroute2.ethtool import Ethtool
    e = Ethtool()
    f = e.get_features(sys.argv[1])
    f.features["tx-checksum-ip-generic"].enable = False
    e.set_features(sys.argv[1], f)
    g = e.get_features(sys.argv[1]).features
    print(g["tx-checksum-ip-generic"].enable, g["tx-tcp-segmentation"].enable, g["tx-generic-segmentation"].enable)
""")

SERVER = "import socket; s = socket.create_server(('10.9.0.2', 5555)); c, _ = s.accept()\nwhile c.recv(1 << 20): pass"
CLIENT = ("import socket, time; c = socket.create_connection(('10.9.0.2', 5555))\n"
          "for i in range(40): c.sendall(bytes(range(256)) * 256); time.sleep(0.005)\nc.close()")


def read_pcap(path: str) -> list[bytes]:
    data = open(path, "rb").read()
    l2 = {1: 14, 113: 16, 276: 20}[struct.unpack_from("<I", data, 20)[0]]
    out, off = [], 24
    while off + 16 <= len(data):
        caplen = struct.unpack_from("<I", data, off + 8)[0]
        out.append(data[off + 16 + l2:off + 16 + caplen])
        off += 16 + caplen
    return out


def runs(packets: list[bytes]) -> list[list[bytes]]:
    """Maximal runs of segments one super-packet can have produced: same flow and options, IHL 5,
    consecutive IP ids and sequence numbers, equal size except the last, plain ACK except the last."""
    found: list[list[bytes]] = []
    cur: list[bytes] = []

    def key(p):
        return p[0:2] + p[6:10] + p[12:24] + p[28:33] + p[34:36] + p[38:20 + (p[32] >> 4) * 4]

    for p in packets:
        hl = 20 + (p[32] >> 4) * 4
        if p[0] != 0x45 or p[9] != 6 or len(p) <= hl:
            cur = []
            continue
        if cur:
            prev = cur[-1]
            follows = (key(p) == key(cur[0]) and len(prev) == len(cur[0]) and prev[33] == ACK
                       and struct.unpack_from("!H", p, 4)[0] == (struct.unpack_from("!H", prev, 4)[0] + 1) & 0xFFFF
                       and struct.unpack_from("!I", p, 24)[0]
                       == (struct.unpack_from("!I", prev, 24)[0] + len(prev) - hl) & 0xFFFFFFFF
                       and len(p) <= len(cur[0]) and p[33] in (ACK, ACK | PSH))
            if follows:
                cur.append(p)
                continue
            if len(cur) > 1:
                found.append(cur)
        cur = [p] if p[33] in (ACK, ACK | PSH) else []
    if len(cur) > 1:
        found.append(cur)
    return found


def rebuild(run: list[bytes]) -> tuple[bytearray, int]:
    """The super-packet the run came from (TCP checksum field as the TUN leaves it: anything) and its MSS."""
    first = run[0]
    hl = 20 + (first[32] >> 4) * 4
    payload = b"".join(p[hl:] for p in run)
    sp = bytearray(first[:hl]) + payload
    struct.pack_into("!H", sp, 2, len(sp))
    sp[33] = run[-1][33]
    sp[36:38] = b"\xab\xcd"
    return sp, len(first) - hl


def minus_ttl(p: bytes, n: int = 1) -> bytes:
    b = bytearray(p)
    for _ in range(n):
        assert decrement_ttl(b)
    return bytes(b)


def test_segmentation_matches_the_kernel(tmp_path):
    a, b = f"udt-{os.getpid()}kc-a", f"udt-{os.getpid()}kc-b"
    procs: list[subprocess.Popen] = []
    try:
        for ns in (a, b):
            add_namespace(ns)
        ip("link", "add", "va", "netns", a, "mtu", "1472", "type", "veth", "peer", "name", "vb", "netns", b,
           "mtu", "1472")
        ip("addr", "add", "10.9.0.1/24", "dev", "va", ns=a)
        ip("addr", "add", "10.9.0.2/24", "dev", "vb", ns=b)
        ip("link", "set", "va", "up", ns=a)
        ip("link", "set", "vb", "up", ns=b)
        assert nsexec(a, sys.executable, "-c", CSUM_OFF, "va").stdout.split() == ["False", "False", "True"]
        pcap = str(tmp_path / "kernel.pcap")
        log = open(tmp_path / "tcpdump.log", "wb")
        procs.append(subprocess.Popen(["ip", "netns", "exec", b, "tcpdump", "-Z", "root", "-i", "vb", "-n", "-U",
                                       "-s", "2000", "-c", "3000", "-w", pcap, "tcp and src 10.9.0.1"],
                                      stdout=log, stderr=subprocess.STDOUT))
        procs.append(subprocess.Popen(["ip", "netns", "exec", b, sys.executable, "-c", SERVER]))
        for _ in range(100):
            if b"listening" in (tmp_path / "tcpdump.log").read_bytes() and \
                    ":5555" in nsexec(b, "ss", "-ltn").stdout:
                break
            time.sleep(0.05)
        nsexec(a, sys.executable, "-c", CLIENT, timeout=60)
        time.sleep(0.5)
        procs[0].send_signal(signal.SIGINT)
        procs[0].wait(10)
    finally:
        for proc in procs:
            proc.kill()
            proc.wait(5)
        for ns in (a, b):
            delete_namespace(ns)

    found = [r for r in runs(read_pcap(pcap)) if len(r) >= 3]
    assert len(found) >= 5, f"only {len(found)} multi-segment runs captured"
    for run in found:
        sp, mss = rebuild(run)
        expected = [minus_ttl(p) for p in run]
        for use_numpy in (True, False):
            assert segment_tcp(sp, mss, use_numpy).packets() == expected
        # the kernel's segments joined (one forwarder hop: TTL - 1) and cut again (TTL - 2)
        joined = join_tcp(b"".join(run), len(run[0]))
        assert joined is not None
        vnet, header = joined.vnet_and_header()
        whole = bytearray(header + b"".join(joined.parts))
        assert checksum(whole[:20]) == 0
        complete_checksum(whole, 20, 16)
        assert segment_tcp(whole, mss).packets() == [minus_ttl(p, 2) for p in run]
