"""Start a real etcd (Debian ``etcd-server``) for the lab and the tests."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from dataclasses import dataclass

from ..errors import OverlayError


def etcd_binary() -> str:
    path = shutil.which("etcd")
    if not path:
        raise OverlayError("etcd is not installed; install it: apt-get install etcd-server")
    return path


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


@dataclass
class EtcdServer:
    """One etcd member. ``netns`` runs it inside a namespace via ``ip netns exec``."""

    data_dir: str
    host: str = "127.0.0.1"
    client_port: int = 2379
    peer_port: int = 2380
    netns: str | None = None
    tls: dict | None = None  # {"cert":..., "key":..., "ca":...}: client TLS with client certs
    process: subprocess.Popen | None = None
    name: str = "overlay"
    initial_cluster: str = ""  # "name=peer-url,...": every member of a cluster; "" for a single member

    @property
    def peer_url(self) -> str:
        return f"http://{self.host}:{self.peer_port}"

    @property
    def url(self) -> str:
        scheme = "https" if self.tls else "http"
        return f"{scheme}://{self.host}:{self.client_port}"

    def command(self) -> list[str]:
        peer = self.peer_url
        cmd = [
            etcd_binary(), "--name", self.name, "--data-dir", self.data_dir,
            "--listen-client-urls", self.url, "--advertise-client-urls", self.url,
            "--listen-peer-urls", peer, "--initial-advertise-peer-urls", peer,
            "--initial-cluster", self.initial_cluster or f"{self.name}={peer}", "--log-level", "warn",
            "--snapshot-count", "100000",
        ]
        if self.tls:
            cmd += ["--cert-file", self.tls["cert"], "--key-file", self.tls["key"],
                    "--client-cert-auth", "--trusted-ca-file", self.tls["ca"]]
        if self.netns:
            cmd = ["ip", "netns", "exec", self.netns, *cmd]
        return cmd

    def start(self, log_path: str | None = None, timeout: float = 20.0, wait: bool = True) -> None:
        """Start the member; ``wait=False`` returns at once (members of a new cluster are all
        started before any of them can serve)."""
        os.makedirs(self.data_dir, exist_ok=True)
        log = open(log_path or f"{self.data_dir.rstrip('/')}.log", "ab")
        self.process = subprocess.Popen(self.command(), stdout=log, stderr=log,
                                        stdin=subprocess.DEVNULL, start_new_session=True)
        log.close()
        if wait:
            self.wait_ready(timeout)

    def wait_ready(self, timeout: float) -> None:
        from .netns import netns_socket

        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process is not None and self.process.poll() is not None:
                raise OverlayError(f"etcd exited with status {self.process.returncode}; see its log")
            try:
                sock = netns_socket(self.netns) if self.netns else socket.socket()
                with sock:
                    sock.settimeout(0.5)
                    sock.connect((self.host, self.client_port))
                return
            except OSError:
                time.sleep(0.1)
        raise OverlayError(f"etcd did not listen on {self.url} within {timeout:.0f} s")

    def stop(self, sig: int = 15) -> None:
        if self.process is None:
            return
        if self.process.poll() is None:
            self.process.send_signal(sig)
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process = None
