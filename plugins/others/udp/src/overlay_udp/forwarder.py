"""The forwarder process: ``python -m overlay_udp.forwarder --control PATH --network NET --subnet SUBNET --mtu N``.

It owns the TUN and the UDP socket, runs the packet loop in one OS thread and serves the control
channel (control.py) in its main thread. It is a process of its own so that packets keep
flowing while the agent that feeds it routes is killed or upgraded: the agent starts it as a
supervised helper that survives the agent, and the next agent adopts it and replaces its table.

Restart behaviour:
- agent dies: nothing happens to forwarding; routes stay as they were until the next agent
  sends its table.
- forwarder killed: the TUN is persistent, so its address and route stay; packets to it are
  dropped while no process holds it. The next forwarder (supervisor restart) re-attaches and
  restores the routes it saved in its state file, before any agent speaks to it.
- forwarder upgrade: ``--takeover`` asks the running forwarder for its descriptors over the
  control socket; the old one stops its loop and passes the TUN and the UDP socket (with their
  kernel queues) and its routes and counters, so packets wait in the kernel for the gap instead
  of being dropped.
"""

from __future__ import annotations

import argparse
import array
import errno
import json
import logging
import os
import signal
import socket
import sys
import threading
from ipaddress import IPv4Address, IPv4Network
from pathlib import Path

from . import __version__, control
from . import tun as tunlib
from .datapath import PEER_FIELDS, BatchPath, Counters, Datapath, FastPath
from .errors import ForwarderError
from .packet import np
from .routes import RouteTable

log = logging.getLogger("overlay_udp.forwarder")


def choose_path(want: str, tun: tunlib.Tun) -> tuple[type[Datapath], str]:
    """The path to run and why: fast needs numpy, TSO on the TUN and UDP GSO/GRO in the kernel."""
    if want == "batch":
        tun.set_offload(False)
        return BatchPath, "batch path requested"
    missing = []
    if np is None:
        missing.append("numpy is not installed")
    probe = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        probe.setsockopt(socket.SOL_UDP, 104, 1)  # UDP_GRO
        probe.setsockopt(socket.SOL_UDP, 103, 1400)  # UDP_SEGMENT
    except OSError:
        missing.append("the kernel has no UDP GSO/GRO")
    finally:
        probe.close()
    if not missing and not tun.set_offload(True):
        missing.append("the TUN refuses TSO offload")
    if missing:
        tun.set_offload(False)
        if want == "fast":
            raise ForwarderError(f"fast path requested but {', '.join(missing)}")
        return BatchPath, ", ".join(missing)
    return FastPath, "TSO super-packets, numpy checksums, UDP GSO/GRO"


def open_socket(bind: str, port: int, bufsize: int) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.set_inheritable(False)
    for force, plain in ((33, socket.SO_RCVBUF), (32, socket.SO_SNDBUF)):  # SO_RCVBUFFORCE, SO_SNDBUFFORCE
        try:
            sock.setsockopt(socket.SOL_SOCKET, force, bufsize)
        except PermissionError:
            sock.setsockopt(socket.SOL_SOCKET, plain, bufsize)
    try:
        sock.bind((bind, port))
    except OSError as e:
        sock.close()
        raise ForwarderError(f"cannot bind UDP {bind}:{port}: {e.strerror} (another forwarder running?)") from None
    return sock


def kernel_drops(sock: socket.socket, tun_name: str) -> dict[str, int]:
    """Drops the kernel counted: datagrams our full receive buffer refused (/proc/net/udp, this
    socket) and packets the TUN queue refused while we were busy (/proc/net/dev tx drop)."""
    out = {"udp_rcvbuf_drops": 0, "tun_queue_drops": 0}
    inode = str(os.fstat(sock.fileno()).st_ino)
    with open("/proc/self/net/udp") as fh:
        for line in fh:
            cols = line.split()
            if len(cols) > 12 and cols[9] == inode:
                out["udp_rcvbuf_drops"] = int(cols[-1])
    with open("/proc/self/net/dev") as fh:
        for line in fh:
            name, _, rest = line.partition(":")
            if name.strip() == tun_name:
                out["tun_queue_drops"] = int(rest.split()[11])
    return out


class Forwarder:
    """The forwarding thread plus the state the control channel reads and changes."""

    def __init__(self, args: argparse.Namespace, tun: tunlib.Tun, sock: socket.socket, routes: RouteTable,
                 counters: Counters | None) -> None:
        self.args, self.tun, self.sock = args, tun, sock
        self.state_file = Path(args.state)
        self.lock = threading.Lock()
        self.done = threading.Event()
        cls, why = choose_path(args.path, tun)
        subnet = IPv4Network(args.subnet)
        self.datapath = cls(tun, sock, subnet.network_address, args.mtu, routes, counters)
        log.info("%s path: %s", self.datapath.name, why)
        self._replace(routes)  # saved from the start: a restart after kill -9 resumes with it
        self.thread = threading.Thread(target=self._run, name=f"udp-{self.datapath.name}", daemon=True)

    def _run(self) -> None:
        try:
            self.datapath.run()
        except OSError as e:
            if e.errno != errno.EBADFD:
                log.exception("packet loop failed")
            else:  # someone deleted the device under us (ip link del flannel0)
                log.error("%s was deleted; exiting so that the next forwarder creates it again", self.tun.name)
            os._exit(1)  # the supervisor restarts us; a forwarder that does not forward must not look alive
        except BaseException:
            log.exception("packet loop failed")
            os._exit(1)

    def start(self) -> None:
        self.thread.start()

    def stop_forwarding(self) -> None:
        self.datapath.stop()
        self.thread.join()

    # -- routes

    def _replace(self, routes: RouteTable) -> None:
        """Use ``routes`` from the next packet on, then save them for a restart (best effort)."""
        self.datapath.routes = routes
        tmp = self.state_file.with_suffix(".tmp")
        try:
            tmp.write_text(json.dumps(routes.as_json()))
            os.replace(tmp, self.state_file)
        except OSError as e:
            log.warning("routes not saved to %s (%s): a restart would start without them", self.state_file, e)

    def handle(self, req: dict) -> dict:
        op = req.get("op")
        if op == "ping":
            return {"pid": os.getpid(), "version": __version__, "path": self.datapath.name,
                    "routes": len(self.datapath.routes)}
        if op == "routes":
            return {"routes": self.datapath.routes.as_json()}
        if op == "counters":
            return {"path": self.datapath.name, **self.datapath.counters.snapshot(),
                    **kernel_drops(self.sock, self.tun.name)}
        with self.lock:
            routes = self.datapath.routes
            if op == "set":
                self._replace(routes.with_route(IPv4Network(req["subnet"]), IPv4Address(req["peer"])))
            elif op == "delete":
                self._replace(routes.without_route(IPv4Network(req["subnet"])))
            elif op == "update":  # several changes at once, atomically: one new table
                self._replace(routes.with_changes(req.get("set", {}), req.get("delete", [])))
            elif op == "replace":
                self._replace(RouteTable.from_json(req["routes"], self.args.port))
            else:
                raise ValueError(f"unknown op {op!r}")
        return {}

    def state(self) -> dict:
        return {"routes": self.datapath.routes.as_json(), "counters": self.datapath.counters.snapshot()}


def serve(fwd: Forwarder, listener: socket.socket) -> None:
    """Accept control connections until stop or handover; one thread per connection."""
    def connection(conn: socket.socket) -> None:
        with conn:
            reader = conn.makefile("rb")
            for line in reader:
                try:
                    req = json.loads(line)
                    if req.get("op") == "handover":
                        handover(fwd, listener, conn)
                        return
                    if req.get("op") == "stop":
                        conn.sendall(b'{"ok": true}\n')
                        stop(fwd, listener)
                        return
                    reply = {"ok": True, **fwd.handle(req)}
                except (ValueError, KeyError, TypeError) as e:
                    reply = {"ok": False, "error": f"bad request: {e}"}
                conn.sendall(json.dumps(reply).encode() + b"\n")

    while not fwd.done.is_set():
        try:
            conn, _ = listener.accept()
        except OSError:
            break
        threading.Thread(target=connection, args=(conn,), daemon=True).start()
    fwd.done.wait()


def _close_listener(fwd: Forwarder, listener: socket.socket) -> None:
    try:
        os.unlink(fwd.args.control)
    except FileNotFoundError:
        pass
    listener.shutdown(socket.SHUT_RDWR)
    listener.close()


def handover(fwd: Forwarder, listener: socket.socket, conn: socket.socket) -> None:
    """Pass the descriptors to the forwarder on ``conn`` and end this one (TUN persists)."""
    with fwd.lock:
        fwd.stop_forwarding()
        _close_listener(fwd, listener)
        reply = json.dumps({"ok": True, **fwd.state()}).encode() + b"\n"
        fds = array.array("i", [fwd.tun.fd, fwd.sock.fileno()])
        conn.sendmsg([reply], [(socket.SOL_SOCKET, socket.SCM_RIGHTS, fds.tobytes())])
    log.info("handed over to the next forwarder")
    fwd.done.set()


def stop(fwd: Forwarder, listener: socket.socket) -> None:
    """Cleanup: stop, delete the TUN (it is persistent) and the saved routes."""
    with fwd.lock:
        fwd.stop_forwarding()
        _close_listener(fwd, listener)
        fwd.tun.set_persist(False)
        os.close(fwd.tun.fd)  # a non-persistent TUN vanishes with its last descriptor
        fwd.state_file.unlink(missing_ok=True)
    log.info("stopped, %s removed", fwd.tun.name)
    fwd.done.set()


def take_over(path: str, tun_name: str) -> tuple[tunlib.Tun, socket.socket, RouteTable, Counters] | None:
    """Receive the running forwarder's descriptors, or None when none answers on ``path``."""
    try:
        client = control.ControlClient(path)
    except control.ControlError:
        return None
    with client:
        state, (tun_fd, sock_fd) = client.handover()
    sock = socket.socket(fileno=sock_fd)
    tun = tunlib.Tun(tun_fd, tun_name)
    tun.check()
    counters = Counters()
    snap = state["counters"]
    for ip, c in snap.pop("peers").items():
        counters.peers[ip] = [c[k] for k in PEER_FIELDS]
    for k, v in snap.items():
        setattr(counters, k, v)
    return tun, sock, RouteTable.from_json(state["routes"], sock.getsockname()[1]), counters


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(prog="python -m overlay_udp.forwarder", description=__doc__.split("\n")[0])
    ap.add_argument("--control", required=True, help="Unix socket path of the control channel")
    ap.add_argument("--network", required=True, type=IPv4Network, help="the flannel Network (routed to the TUN)")
    ap.add_argument("--subnet", required=True, type=IPv4Network, help="this node's lease subnet")
    ap.add_argument("--mtu", required=True, type=int, help="TUN MTU (external MTU - 28)")
    ap.add_argument("--tun", default="flannel0")
    ap.add_argument("--port", type=int, default=8285)
    ap.add_argument("--bind", default="0.0.0.0", help="address of the UDP socket (the node's public IP)")
    ap.add_argument("--state", help="routes saved here for a restart (default: CONTROL.routes.json)")
    ap.add_argument("--path", choices=("auto", "fast", "batch"), default="auto")
    ap.add_argument("--bufsize", type=int, default=4 << 20, help="UDP socket buffer sizes in bytes")
    ap.add_argument("--route", action="append", default=[], metavar="SUBNET=PEER", help="initial route, repeatable")
    ap.add_argument("--takeover", action="store_true", help="take the TUN and socket from the running forwarder")
    args = ap.parse_args(argv)
    args.state = args.state or args.control + ".routes.json"
    return args


def initial_routes(args: argparse.Namespace) -> RouteTable:
    """The saved table (a restart) updated with ``--route`` arguments; a one-line error when invalid."""
    routes: dict[str, str] = {}
    try:
        routes.update(json.loads(Path(args.state).read_text()))
    except FileNotFoundError:
        pass
    except ValueError:
        log.warning("%s is not a route table; starting empty", args.state)
    for spec in args.route:
        subnet, sep, peer = spec.partition("=")
        if not sep:
            raise ForwarderError(f"--route {spec!r}: expected SUBNET=PEER_IP, e.g. 10.5.2.0/24=192.0.2.2")
        routes[subnet] = peer
    try:
        return RouteTable.from_json(routes, args.port)
    except ValueError as e:
        raise ForwarderError(f"invalid route table: {e}") from None


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    args = parse_args(argv)
    try:
        if not args.subnet.subnet_of(args.network):
            raise ForwarderError(f"--subnet {args.subnet} is not inside --network {args.network}")
        for path in (args.control, args.state):
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        taken = take_over(args.control, args.tun) if args.takeover else None
        if taken:
            tun, sock, routes, counters = taken
            log.info("took over %s and UDP port %d (%d routes)", args.tun, args.port, len(routes))
        else:
            if os.path.exists(args.control):
                try:
                    control.call(args.control, "ping", timeout=1.0)
                    raise ForwarderError(f"a forwarder already answers on {args.control}: use --takeover")
                except control.ControlError:
                    os.unlink(args.control)  # left by a killed forwarder
            routes, counters = initial_routes(args), None
            sock = open_socket(args.bind, args.port, args.bufsize)  # first: a taken port leaves no TUN behind
            tun = tunlib.open_tun(args.tun)
        fwd = Forwarder(args, tun, sock, routes, counters)
        if taken:  # the device is configured already: forward first, the gap is what the peers notice
            fwd.start()
        tunlib.configure(args.tun, args.subnet.network_address, args.mtu, args.network)
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        old_umask = os.umask(0o077)
        try:
            listener.bind(args.control)
        finally:
            os.umask(old_umask)
        listener.listen(16)
    except (ForwarderError, control.ControlError) as e:
        print(f"overlay-udp forwarder: {e}", file=sys.stderr)
        return 1
    if not taken:
        fwd.start()

    def terminate(signum, frame):  # TUN, routes and saved table stay for the next forwarder
        log.info("signal %d: stopping (TUN %s kept)", signum, args.tun)
        fwd.stop_forwarding()
        _close_listener(fwd, listener)
        fwd.done.set()

    signal.signal(signal.SIGTERM, terminate)
    signal.signal(signal.SIGINT, terminate)
    log.info("ready: %s, UDP %s:%d, control %s", args.tun, args.bind, args.port, args.control)
    serve(fwd, listener)
    return 0


if __name__ == "__main__":
    sys.exit(main())
