"""Running commands through ``sh -c``: variables, stdin, combined output, failures, timeouts."""

from ipaddress import IPv4Address, IPv4Network, IPv6Network

import pytest
import trio
from overlay_extension.commands import CommandResult, run_command, startup_env, stdin_of


async def test_shell_syntax_variables_and_stdin():
    # Flannel's docs' vxlan example relies on export, $(...), quotes, && and read: sh gives them all.
    script = 'export IP=$(echo "$SUBNET" | cut -d/ -f1); read VTEP; echo "$IP $VTEP $PUBLIC_IP" && echo done'
    result = await run_command(script, {"SUBNET": "10.5.2.0/24", "PUBLIC_IP": "192.0.2.2"}, "aa:bb")
    assert result == CommandResult(True, "10.5.2.0 aa:bb 192.0.2.2\ndone", "exit 0")


async def test_agent_environment_is_inherited(monkeypatch):
    monkeypatch.setenv("OVE_FROM_AGENT", "inherited")
    result = await run_command('echo "$OVE_FROM_AGENT"', {})
    assert result.output == "inherited"


async def test_stdin_ends_with_a_newline_even_when_empty():
    result = await run_command("od -An -c", {}, "")
    assert result.output == "\\n"


async def test_failure_keeps_stderr_and_exit_status():
    result = await run_command("echo RTNETLINK answers: File exists >&2; exit 2", {})
    assert not result.ok
    assert result.summary() == "exit 2: RTNETLINK answers: File exists"


async def test_killed_by_a_signal():
    result = await run_command("kill -9 $$", {})
    assert (result.ok, result.status) == (False, "killed by signal 9")


async def test_timeout_kills_the_whole_process_group(tmp_path):
    marker = tmp_path / "late"
    started = trio.current_time()
    result = await run_command(f"(sleep 3; touch {marker}) & sleep 30", {}, timeout=0.5)
    assert not result.ok and result.status.startswith("timed out after 0.5 s")
    assert trio.current_time() - started < 20
    await trio.sleep(4)
    assert not marker.exists(), "the script's background child outlived the timeout"


def test_summary_is_one_line_and_bounded():
    long = CommandResult(False, "first\n\n  second  \n" + "x" * 1000, "exit 1")
    summary = long.summary()
    assert "\n" not in summary and summary.startswith("exit 1: first | second | xxx")
    assert len(summary) < 450
    assert CommandResult(False, "", "exit 1").summary() == "exit 1, no output"


def test_startup_env_names_and_absent_values():
    env = startup_env(IPv4Network("10.5.0.0/16"), IPv4Network("10.5.3.0/24"), None, IPv4Address("192.0.2.3"), None)
    assert env == {"NETWORK": "10.5.0.0/16", "SUBNET": "10.5.3.0/24", "IPV6SUBNET": "",
                   "PUBLIC_IP": "192.0.2.3", "PUBLIC_IPV6": ""}
    v6only = startup_env(None, None, IPv6Network("2001:db8:10:3::/64"), IPv4Address("0.0.0.0"), None)
    assert v6only["SUBNET"] == "" and v6only["PUBLIC_IP"] == "" and v6only["IPV6SUBNET"] == "2001:db8:10:3::/64"


def test_stdin_is_the_backend_data_string():
    assert stdin_of("aa:bb:cc") == "aa:bb:cc"
    assert stdin_of(None) == ""
    with pytest.raises(ValueError, match="BackendData is a JSON dict"):
        stdin_of({"VtepMAC": "aa:bb"})
