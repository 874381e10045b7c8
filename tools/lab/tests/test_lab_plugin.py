"""The lab is a command plugin: found by the command line, never loaded by the agent."""

import io
from contextlib import redirect_stdout

from overlay_core.cli import build_parser
from overlay_core.plugins import COMMAND_GROUP, PluginManager
from overlay_lab import cli


def test_the_command_line_finds_lab_through_its_entry_point():
    parser = build_parser()
    ns = parser.parse_args(["lab", "up", "--nodes", "2"])
    assert ns.func is cli.cmd_lab and ns.nodes == 2


def test_the_agent_does_not_load_the_lab():
    manager = PluginManager()
    assert "lab" not in manager.load_observers()
    assert "lab" in manager.load_commands()
    assert COMMAND_GROUP == "overlay.commands"


def test_status_table_counts_peer_states_and_rejected_leases():
    row = {"node": "n1", "public_ip": "192.0.2.1", "subnet": "10.5.1.0/24", "backend": "vxlan", "peers": 2,
           "ready": True, "agent": 42, "store": {"connected": True},
           "peer_states": {"programmed": 2, "drifted": 1},
           "rejected_leases": {"k": "outside the network"}}
    out = io.StringIO()
    with redirect_stdout(out):
        cli.print_table([row])
    header, line = out.getvalue().splitlines()
    assert header.split()[:3] == ["NODE", "PUBLIC", "IP"]
    assert "drifted:1 programmed:2 rejected:1" in line and line.split()[-2:] == ["yes", "42"]
