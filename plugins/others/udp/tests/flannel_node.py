"""A Flannel udp node in miniature: one ICMP echo request as the raw payload of a UDP datagram.

Usage: python flannel_node.py ME PEER SRC DST [PORT]. Binds ME:PORT, sends an IPv4 echo request
SRC -> DST (TTL 64) to PEER:PORT exactly as Flannel's proxy frames packets (no header: the
datagram is the packet), and prints the first datagram that comes back as JSON
{"from", "port", "packet" (hex)}. Used by the forwarder's tests and the end-to-end tests.
"""

import json
import socket
import struct
import sys


def csum(data: bytes) -> int:
    total = sum(struct.unpack("!%dH" % (len(data) // 2), data))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def main() -> None:
    me, peer, src, dst = sys.argv[1:5]
    port = int(sys.argv[5]) if len(sys.argv) > 5 else 8285
    icmp = bytearray(struct.pack("!BBHHH", 8, 0, 0, 0x4242, 7) + b"flannel-wire-format!")
    struct.pack_into("!H", icmp, 2, csum(bytes(icmp)))
    ip = bytearray(struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(icmp), 99, 0x4000, 64, 1, 0,
                               socket.inet_aton(src), socket.inet_aton(dst)))
    struct.pack_into("!H", ip, 10, csum(bytes(ip)))
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind((me, port))
    s.settimeout(10)
    s.sendto(bytes(ip + icmp), (peer, port))
    data, addr = s.recvfrom(65535)
    print(json.dumps({"from": addr[0], "port": addr[1], "packet": data.hex()}))


if __name__ == "__main__":
    main()
