"""Debian's charon as our private helper: its config, its argv, its ready probe, the kernel mode.

Several charons share one filesystem in the lab (one per network namespace), and charon keeps
compile-time paths under ``/run`` (``charon.pid``; a second charon finding a live pid there
refuses to start). The argv therefore runs charon in a private mount namespace with a tmpfs over
``/run``, with our own state directory bound back into it (it may itself live under ``/run``),
and everything we choose (config, VICI socket, log) lives in that 0700 directory.

kernel-libipsec (userspace ESP) adds the rule ``220: from all lookup 220`` and, with
``install_routes = yes``, one route per CHILD_SA's remote selector via ``ipsec0`` into table 220.
We let charon own that rule and table (it adds the rule at start, removes it at a clean stop, and a
restart after kill -9 does not duplicate it; the e2e test checks both) and keep the table to our
traffic by construction: the only remote selectors are peer pod subnets that :mod:`calc` checked to
lie inside the network and not to overlap ours or each other.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
from dataclasses import dataclass
from pathlib import Path

import trio
import vici
from overlay_core import OverlayError

from .calc import KERNEL, LIBIPSEC

CHARON_PATHS = ("/usr/lib/strongswan/charon", "/usr/lib/ipsec/charon", "/usr/libexec/strongswan/charon",
                "/usr/libexec/ipsec/charon")  # after PATH, in Flannel's order
DEBIAN_PLUGIN_CONF = "/etc/strongswan.d/charon/*.conf"
ROUTING_TABLE = 220  # charon's default, named here so the README and tests agree
# runs inside `unshare --mount`: keep fd 3 on our dir, cover /run, bind the dir back, exec charon.
# --no-canonicalize: mount(8) would otherwise resolve /proc/self/fd/3 to its path name, which under
# the new tmpfs names an empty directory when the state dir lies below /run (the default).
_LAUNCH = ('exec 3<"$1" && mount -t tmpfs -o mode=0755 tmpfs /run && mkdir -p "$1" '
           '&& mount --no-canonicalize --bind /proc/self/fd/3 "$1" && exec 3<&- && STRONGSWAN_CONF="$2" exec "$3"')


@dataclass(frozen=True)
class CharonPaths:
    """Where one charon's private files live: ``<state_dir>/ipsec/``, mode 0700."""

    dir: Path

    @classmethod
    def under(cls, state_dir: Path) -> CharonPaths:
        return cls(Path(state_dir) / "ipsec")

    @property
    def conf(self) -> Path:
        return self.dir / "strongswan.conf"

    @property
    def vici(self) -> Path:
        return self.dir / "charon.vici"

    @property
    def log(self) -> Path:
        return self.dir / "charon.log"

    @property
    def uri(self) -> str:
        return f"unix://{self.vici}"


def render_config(paths: CharonPaths, mode: str) -> str:
    """strongswan.conf for our charon: Debian's plugin set, our VICI socket and file log,
    kernel-libipsec only in libipsec mode, stroke off (its socket would be a second door), no syslog."""
    libipsec = mode == LIBIPSEC
    return f"""# written by overlay-ipsec; rewritten at every start
charon {{
    install_routes = {"yes" if libipsec else "no"}
    routing_table = {ROUTING_TABLE}
    routing_table_prio = {ROUTING_TABLE}
    plugins {{
        include {DEBIAN_PLUGIN_CONF}
        kernel-libipsec {{
            load = {"1000" if libipsec else "no"}
        }}
        stroke {{
            load = no
        }}
        vici {{
            socket = {paths.uri}
        }}
    }}
    filelog {{
        overlay {{
            path = {paths.log}
            default = 1
            knl = 1
            flush_line = yes
            time_format = %F %T
        }}
    }}
    syslog {{
        daemon {{
            default = -1
        }}
    }}
}}
"""


def write_config(paths: CharonPaths, mode: str) -> None:
    """Create the 0700 directory and write the config 0600, atomically."""
    paths.dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    os.chmod(paths.dir, 0o700)
    tmp = paths.conf.with_suffix(".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as out:
        out.write(render_config(paths, mode))
    os.chmod(tmp, 0o600)
    os.replace(tmp, paths.conf)


def find_charon(path: str | None = None) -> str:
    """charon's path, searched as Flannel does; a one-line error naming the Debian package."""
    found = shutil.which("charon", path=path)
    if found:
        return found
    for candidate in CHARON_PATHS:
        if os.access(candidate, os.X_OK):
            return candidate
    raise OverlayError("ipsec: strongSwan's charon was not found (looked in PATH and "
                       f"{', '.join(CHARON_PATHS)}): install the Debian package strongswan-charon")


def charon_argv(charon: str, paths: CharonPaths) -> list[str]:
    """The argv the supervisor starts (in a new session, so it outlives the agent).

    unshare execs sh, sh execs charon: the started pid is charon's pid."""
    return ["unshare", "--mount", "--propagation", "private", "sh", "-c", _LAUNCH, "overlay-charon",
            str(paths.dir), str(paths.conf), charon]


def vici_session(path: Path, timeout: float = 5.0) -> vici.Session:
    """A blocking VICI session on our private socket (``OSError`` if nobody listens)."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.settimeout(timeout)
        sock.connect(str(path))
    except OSError:
        sock.close()
        raise
    return vici.Session(sock)


def vici_answers(path: Path) -> bool:
    """Does a charon answer `version` on this socket (blocking)?"""
    try:
        session = vici_session(path, timeout=2.0)
    except OSError:
        return False
    try:
        return bool(session.version().get("daemon"))
    except (OSError, vici.exception.SessionException, vici.exception.DeserializationException):
        return False
    finally:
        session.transport.close()


async def vici_ready(paths: CharonPaths) -> bool:
    """Ready probe for the supervisor: True once charon answers ``version`` on our socket."""
    return await trio.to_thread.run_sync(vici_answers, paths.vici)


# RFC 4106 AES-GCM with a 160-bit key+salt: the ESP transform Flannel's default proposal needs
_ESP_PROBE = ("ip xfrm state add src 192.0.2.1 dst 192.0.2.2 proto esp spi 0x00000100 mode tunnel "
              "aead 'rfc4106(gcm(aes))' 0x0102030405060708090a0b0c0d0e0f1011121314 128")


def kernel_has_esp() -> bool:
    """Can this kernel do ESP? Tried in a throwaway network namespace (``unshare --net``; it
    disappears with the probe process), never in the namespace the agent runs in."""
    probe = subprocess.run(["unshare", "--net", "sh", "-c", _ESP_PROBE], capture_output=True, timeout=10)
    return probe.returncode == 0


def choose_mode() -> str:
    """``kernel`` when the kernel has ESP (Flannel's setup), else charon's userspace ``libipsec``."""
    return KERNEL if kernel_has_esp() else LIBIPSEC
