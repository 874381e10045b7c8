"""recvmmsg/sendmmsg through ctypes: one system call for up to ``size`` datagrams.

The standard library has no binding for them; ctypes calls release the GIL, so the other
threads of the forwarder keep running during the call.
"""

from __future__ import annotations

import ctypes
import os
import socket
import struct

_libc = ctypes.CDLL(None, use_errno=True)
SOCKADDR_IN = struct.Struct("=HH4s8x")


class IOVec(ctypes.Structure):
    _fields_ = [("base", ctypes.c_void_p), ("len", ctypes.c_size_t)]


class MsgHdr(ctypes.Structure):
    _fields_ = [("name", ctypes.c_void_p), ("namelen", ctypes.c_uint32), ("iov", ctypes.POINTER(IOVec)),
                ("iovlen", ctypes.c_size_t), ("control", ctypes.c_void_p), ("controllen", ctypes.c_size_t),
                ("flags", ctypes.c_int)]


class MMsgHdr(ctypes.Structure):
    _fields_ = [("hdr", MsgHdr), ("len", ctypes.c_uint)]


class Ring:
    """``size`` message slots of ``slot`` bytes each, with a 16-byte sockaddr_in per slot.

    ``views[i]`` is slot i's buffer; ``iov[i].len`` and ``msgs[i].hdr.name`` are set by the caller
    before a send; after a receive ``msgs[i].len`` is the datagram length and ``source(i)`` its sender."""

    def __init__(self, size: int, slot: int) -> None:
        self.size, self.slot = size, slot
        self.pool = bytearray(size * slot)
        self.names = bytearray(size * SOCKADDR_IN.size)
        base = ctypes.addressof(ctypes.c_char.from_buffer(self.pool))
        self.names_base = ctypes.addressof(ctypes.c_char.from_buffer(self.names))
        self.base = base
        self.iov = (IOVec * size)()
        self.msgs = (MMsgHdr * size)()
        for i in range(size):
            self.iov[i].base, self.iov[i].len = base + i * slot, slot
            self.msgs[i].hdr.iov, self.msgs[i].hdr.iovlen = ctypes.pointer(self.iov[i]), 1
        mv = memoryview(self.pool)
        self.views = [mv[i * slot:(i + 1) * slot] for i in range(size)]
        self._nmv = memoryview(self.names)

    def arm_receive(self, count: int) -> None:
        """Reset the first ``count`` slots for recvmmsg (the kernel shortens lengths it fills in)."""
        for i in range(count):
            msg = self.msgs[i]
            msg.hdr.name = self.names_base + i * SOCKADDR_IN.size
            msg.hdr.namelen = SOCKADDR_IN.size
            self.iov[i].len = self.slot

    def source(self, i: int) -> bytes:
        """The sender's IPv4 address (4 bytes) of received slot ``i``."""
        o = i * SOCKADDR_IN.size + 4
        return bytes(self._nmv[o:o + 4])

    def recv(self, fd: int) -> int:
        """recvmmsg without blocking: the number of datagrams received, 0 when none is waiting."""
        r = _libc.recvmmsg(fd, self.msgs, self.size, socket.MSG_DONTWAIT, None)
        if r < 0:
            err = ctypes.get_errno()
            if err in (11, 4):  # EAGAIN, EINTR
                return 0
            raise OSError(err, os.strerror(err))
        return r

    def send(self, fd: int, start: int, count: int) -> tuple[int, int]:
        """sendmmsg of slots ``start .. count - 1`` without blocking: (how many went out, errno of the
        first that did not, 0 when all did)."""
        r = _libc.sendmmsg(fd, ctypes.byref(self.msgs, start * ctypes.sizeof(MMsgHdr)), count - start,
                           socket.MSG_DONTWAIT)
        if r < 0:
            return 0, ctypes.get_errno()
        return r, 0


def sockaddr(ip: str, port: int) -> ctypes.Array:
    """A struct sockaddr_in kept alive by the caller while messages point to it."""
    return ctypes.create_string_buffer(SOCKADDR_IN.pack(socket.AF_INET, socket.htons(port), socket.inet_aton(ip)),
                                       SOCKADDR_IN.size)
