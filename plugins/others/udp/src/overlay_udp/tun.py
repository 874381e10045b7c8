"""The TUN device ``flannel0``: open (or re-attach), offloads, and Flannel's address/MTU/route.

Unlike Flannel's proxy we make the device persistent (TUNSETPERSIST): when the forwarder
process restarts, the device, its address and its route stay, and the next forwarder attaches to
the same device. ``remove`` deletes it (cleanup). The device is always opened with
IFF_VNET_HDR: every read and write starts with a virtio-net header, which the fast path needs
for TSO/GSO and the batch path ignores (it leaves offloads off, so the header stays zero).
"""

from __future__ import annotations

import errno
import fcntl
import os
import struct
import subprocess
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv4Network

from .errors import ForwarderError

TUNSETIFF, TUNSETPERSIST, TUNSETOFFLOAD, TUNGETIFF = 0x400454CA, 0x400454CB, 0x400454D0, 0x800454D2
IFF_TUN, IFF_NO_PI, IFF_VNET_HDR = 0x0001, 0x1000, 0x4000
TUN_F_CSUM, TUN_F_TSO4 = 0x01, 0x02
_IFREQ = struct.Struct("16sH")


@dataclass(frozen=True)
class Tun:
    """An open TUN queue: its file descriptor and device name."""

    fd: int
    name: str

    def set_offload(self, tso: bool) -> bool:
        """Ask for checksum + TCPv4 segmentation offload (super-packets up to 64 KB) or none.
        Returns False when the kernel refuses."""
        try:
            fcntl.ioctl(self.fd, TUNSETOFFLOAD, TUN_F_CSUM | TUN_F_TSO4 if tso else 0)
        except OSError:
            return False
        return True

    def set_persist(self, persist: bool) -> None:
        fcntl.ioctl(self.fd, TUNSETPERSIST, int(persist))

    def check(self) -> None:
        """Refuse an fd that is not a TUN with the flags we rely on (one handed over, for instance)."""
        name, flags = _IFREQ.unpack(fcntl.ioctl(self.fd, TUNGETIFF, bytes(_IFREQ.size))[:_IFREQ.size])
        want = IFF_TUN | IFF_NO_PI | IFF_VNET_HDR
        if flags & want != want:
            raise ForwarderError(f"{self.name}: handed-over TUN has flags {flags:#x}, need {want:#x}")


def open_tun(name: str) -> Tun:
    """Create or attach to the TUN ``name`` in the current network namespace, persistent."""
    try:
        fd = os.open("/dev/net/tun", os.O_RDWR | os.O_CLOEXEC)
    except FileNotFoundError:
        raise ForwarderError("/dev/net/tun is missing: load the tun module (modprobe tun)") from None
    try:
        fcntl.ioctl(fd, TUNSETIFF, _IFREQ.pack(name.encode(), IFF_TUN | IFF_NO_PI | IFF_VNET_HDR))
    except OSError as e:
        os.close(fd)
        if e.errno == errno.EBUSY:
            raise ForwarderError(f"TUN {name} is in use by another process: stop the other forwarder") from None
        if e.errno == errno.EINVAL:
            raise ForwarderError(f"{name} exists but is not a single-queue TUN: delete it (ip link del {name})") \
                from None
        raise ForwarderError(f"cannot open TUN {name}: {e.strerror}") from None
    tun = Tun(fd, name)
    tun.set_persist(True)
    return tun


def _ip(*args: str) -> None:
    proc = subprocess.run(["ip", *args], capture_output=True, text=True, timeout=30)
    if proc.returncode != 0:
        raise ForwarderError(f"ip {' '.join(args)}: {proc.stderr.strip()}")


def configure(name: str, address: IPv4Address, mtu: int, network: IPv4Network) -> None:
    """As Flannel: ``address``/32 on the device, MTU, up, and ``network dev name`` (idempotent).

    Two sysctls of the device: IPv6 off (the network is IPv4; the forwarder would only drop the
    router solicitations the kernel sends there), and ``accept_local`` on, because the ICMP
    net-unreachable the forwarder writes back has the TUN's own address as source, which the
    kernel otherwise drops as a martian (measured: Flannel's replies never reach the sender)."""
    for knob, value in ((f"ipv6/conf/{name}/disable_ipv6", "1"), (f"ipv4/conf/{name}/accept_local", "1")):
        try:
            with open(f"/proc/sys/net/{knob}", "w") as fh:
                fh.write(value)
        except FileNotFoundError:  # a kernel without IPv6
            pass
    _ip("addr", "replace", f"{address}/32", "dev", name)
    _ip("link", "set", "dev", name, "mtu", str(mtu), "up")
    _ip("route", "replace", str(network), "dev", name, "scope", "global")  # Flannel's scope (universe)


def remove(name: str) -> None:
    """Delete the device (cleanup): it is persistent, closing it is not enough."""
    _ip("link", "del", "dev", name)
