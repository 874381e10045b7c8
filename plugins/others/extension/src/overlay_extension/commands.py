"""Running one extension command: ``sh -c`` with Flannel's variables and stdin, off the trio loop.

What Flannel's docs promise (and what is done here): every command is run by ``sh``, so ``;``,
``&&``, ``$(...)``, quotes and ``read`` work; the per-call variables are added to the agent's
environment; stdin receives the given text and a newline; stdout and stderr are read together
and trimmed; a non-zero exit is a failure. Flannel's code instead splits the string on
whitespace and executes the first word itself (see the README).

A command gets ``COMMAND_TIMEOUT`` seconds; then its whole process group is killed, so a
hanging script cannot stall the agent's peer handling forever.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
from collections.abc import Mapping
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network

import trio

LOGGER = logging.getLogger("overlay.extension")
COMMAND_TIMEOUT = 120.0
OUTPUT_SHOWN = 400  # characters of a command's output quoted in one log line


@dataclass(frozen=True)
class CommandResult:
    """How one run ended: ``ok`` (exit 0), the trimmed combined output, and a word on the exit."""

    ok: bool
    output: str
    status: str

    def summary(self) -> str:
        """One line: the exit status and the output with its line breaks folded."""
        text = " | ".join(line.strip() for line in self.output.splitlines() if line.strip())
        if len(text) > OUTPUT_SHOWN:
            text = text[:OUTPUT_SHOWN] + "…"
        return f"{self.status}: {text}" if text else f"{self.status}, no output"


def text(value: IPv4Address | IPv6Address | IPv4Network | IPv6Network | str | None) -> str:
    """A variable's value: the address or network as text, empty when absent or unset (0.0.0.0)."""
    if value is None or str(value) == "0.0.0.0":
        return ""
    return str(value)


def startup_env(network: IPv4Network | None, subnet: IPv4Network | None, ipv6_subnet: IPv6Network | None,
                public_ip: IPv4Address | None, public_ipv6: IPv6Address | None) -> dict[str, str]:
    """PostStartupCommand's variables (this node): Flannel's NETWORK, SUBNET, IPV6SUBNET, PUBLIC_IP, PUBLIC_IPV6."""
    return {"NETWORK": text(network), "SUBNET": text(subnet), "IPV6SUBNET": text(ipv6_subnet),
            "PUBLIC_IP": text(public_ip), "PUBLIC_IPV6": text(public_ipv6)}


def stdin_of(backend_data: object) -> str:
    """SubnetAdd/RemoveCommand's stdin: the peer's BackendData, which the extension backend
    writes as a JSON string (PreStartupCommand's output). ``ValueError`` for any other JSON."""
    if backend_data is None:
        return ""
    if not isinstance(backend_data, str):
        raise ValueError(f"its BackendData is a JSON {type(backend_data).__name__}, not the string an "
                         "extension node writes")
    return backend_data


async def run_command(command: str, env: Mapping[str, str], stdin: str = "",
                      timeout: float = COMMAND_TIMEOUT) -> CommandResult:
    """Run ``sh -c command`` with ``env`` added to the agent's environment and ``stdin`` plus a newline."""
    result = None
    with trio.move_on_after(timeout):
        result = await trio.run_process(
            ["sh", "-c", command], stdin=(stdin + "\n").encode(), capture_stdout=True,
            stderr=subprocess.STDOUT, check=False, start_new_session=True,
            env={**os.environ, **env}, deliver_cancel=_kill_group,
        )
    if result is None:
        return CommandResult(False, "", f"timed out after {timeout:g} s (process group killed)")
    output = result.stdout.decode(errors="replace").strip()
    code = result.returncode
    if code == 0:
        return CommandResult(True, output, "exit 0")
    status = f"killed by signal {-code}" if code < 0 else f"exit {code}"
    return CommandResult(False, output, status)


async def _kill_group(process: trio.Process) -> None:
    """On timeout or agent stop: kill the script and everything it started (its own session)."""
    try:
        os.killpg(process.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    await process.wait()
