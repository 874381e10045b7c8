"""Network namespace plumbing for the lab and the tests (iproute2 through subprocess)."""

from __future__ import annotations

import ctypes
import json
import os
import signal
import socket
import subprocess
import sys
import time

CLONE_NEWNET = 0x40000000
NETNS_DIR = "/var/run/netns"


class NetnsError(RuntimeError):
    pass


def ip(*args: str, ns: str | None = None, check: bool = True, input: str | None = None) -> str:
    cmd = ["ip"] + (["-n", ns] if ns else []) + list(args)
    proc = subprocess.run(cmd, capture_output=True, text=True, input=input, timeout=60)
    if check and proc.returncode != 0:
        raise NetnsError(f"{' '.join(cmd)}: {proc.stderr.strip()}")
    return proc.stdout


def nsexec(ns: str, *cmd: str, check: bool = True, timeout: float = 60,
           input: str | None = None) -> subprocess.CompletedProcess:
    proc = subprocess.run(["ip", "netns", "exec", ns, *cmd], capture_output=True, text=True,
                          timeout=timeout, input=input)
    if check and proc.returncode != 0:
        raise NetnsError(f"{ns}: {' '.join(cmd)}: {(proc.stderr or proc.stdout).strip()}")
    return proc


def list_namespaces(prefix: str = "") -> list[str]:
    try:
        names = os.listdir(NETNS_DIR)
    except FileNotFoundError:
        return []
    return sorted(n for n in names if n.startswith(prefix))


def add_namespace(ns: str) -> None:
    ip("netns", "add", ns)
    ip("link", "set", "lo", "up", ns=ns)
    for knob in ("net.ipv6.conf.all.accept_dad=0", "net.ipv6.conf.default.accept_dad=0",
                 "net.ipv4.ip_forward=1", "net.ipv6.conf.all.forwarding=1"):
        nsexec(ns, "sysctl", "-qw", knob)


def pids_in(ns: str) -> list[int]:
    out = ip("netns", "pids", ns, check=False)
    return [int(p) for p in out.split()]


def kill_all(ns: str, grace: float = 2.0) -> None:
    """SIGTERM every process in ``ns``, then SIGKILL what is left after ``grace`` seconds."""
    for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, 2.0)):
        pids = pids_in(ns)
        if not pids:
            return
        for pid in pids:
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline and pids_in(ns):
            time.sleep(0.05)


#: What ``ip link add … type KIND`` needs besides the kind to create a device at all.
PROBE_ARGS = {"vxlan": ("id", "1", "dstport", "4789"), "gretap": ("remote", "192.0.2.1")}


def kernel_supports(kind: str) -> bool:
    """Can this kernel create a ``kind`` device (``ipip``, ``vxlan``, ``wireguard``, ``tun``)?
    Probed in a throwaway namespace, so the answer never depends on (or changes) the root namespace."""
    ns = f"ovl-probe{os.getpid()}"
    add_namespace(ns)
    try:
        args = ("tuntap", "add", "probe0", "mode", "tun") if kind == "tun" else (
            "link", "add", "probe0", "type", kind, *PROBE_ARGS.get(kind, ()))
        probe = subprocess.run(["ip", "-n", ns, *args], capture_output=True)
        return probe.returncode == 0
    finally:
        delete_namespace(ns)


def delete_namespace(ns: str) -> None:
    kill_all(ns)
    ip("netns", "del", ns, check=False)


def python_in_fresh_namespace(ns: str, script: str, timeout: float = 60) -> object:
    """Run ``python -c script`` in a namespace made for it (deleted afterwards, also on failure)
    and return the JSON value the script printed last: for a test that needs a whole process in
    a namespace (netlink sockets belong to the namespace they were opened in)."""
    add_namespace(ns)
    try:
        done = nsexec(ns, sys.executable, "-c", script, timeout=timeout)
    finally:
        delete_namespace(ns)
    return json.loads(done.stdout.strip().splitlines()[-1])


def connect(ns_a: str, if_a: str, ns_b: str, if_b: str, mtu: int = 1500) -> None:
    """A veth pair created directly inside both namespaces (never in the root namespace)."""
    ip("link", "add", if_a, "netns", ns_a, "mtu", str(mtu), "type", "veth",
       "peer", "name", if_b, "netns", ns_b, "mtu", str(mtu))
    ip("link", "set", if_a, "up", ns=ns_a)
    ip("link", "set", if_b, "up", ns=ns_b)


_libc = ctypes.CDLL(None, use_errno=True)


def netns_socket(ns: str, family: int = socket.AF_INET, kind: int = socket.SOCK_STREAM) -> socket.socket:
    """A socket created inside namespace ``ns``; call it from a thread of its own."""
    target = os.open(os.path.join(NETNS_DIR, ns), os.O_RDONLY)
    home = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
    try:
        if _libc.setns(target, CLONE_NEWNET) != 0:
            raise NetnsError(f"setns({ns}) failed: {os.strerror(ctypes.get_errno())}")
        try:
            return socket.socket(family, kind)
        finally:
            if _libc.setns(home, CLONE_NEWNET) != 0:
                raise NetnsError("could not return to the original namespace")
    finally:
        os.close(target)
        os.close(home)


def http_get(ns: str, host: str, port: int, path: str, timeout: float = 2.0) -> tuple[int, bytes]:
    """A tiny HTTP GET from inside ``ns`` (for /readyz); raises OSError when unreachable."""
    sock = netns_socket(ns, socket.AF_INET6 if ":" in host else socket.AF_INET)
    with sock:
        sock.settimeout(timeout)
        sock.connect((host, port))
        sock.sendall(f"GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n".encode())
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    status = int(head.split()[1]) if head else 0
    return status, body
