"""The Backend keys: read case-insensitively, one-line errors, unknown keys refused, Flannel's dist configs load."""

import pytest
from overlay_core import parse_config
from overlay_core.backend import check_backend_config
from overlay_core.errors import ConfigError
from overlay_extension import ExtensionBackend, ExtensionOptions, parse_options


def config(**backend):
    import json

    return parse_config(json.dumps({"Network": "10.5.0.0/16", "Backend": {"Type": "extension", **backend}}))


def test_all_four_commands_read():
    opts = parse_options(config(PreStartupCommand="a", postStartupCommand="b", SubnetAddCommand="c",
                                subnetremovecommand="d"))
    assert opts == ExtensionOptions("a", "b", "c", "d", "")


def test_no_options_run_nothing():
    assert parse_options(config()) == ExtensionOptions("", "", "", "", "")


def test_flannels_dist_configs_load_with_their_shutdown_command():
    # dist/extension-vxlan carries a ShutdownCommand that Flannel never runs: the config must still load.
    opts = check_backend_config(ExtensionBackend, config(SubnetAddCommand="true",
                                                         ShutdownCommand="ip link del flannel-vxlan"))
    assert opts.shutdown == "ip link del flannel-vxlan"


def test_a_command_that_is_not_a_string():
    with pytest.raises(ConfigError) as err:
        parse_options(config(SubnetAddCommand=["ip", "route", "add"]))
    assert str(err.value) == "extension: SubnetAddCommand must be a string, got ['ip', 'route', 'add']"


def test_a_blank_command():
    with pytest.raises(ConfigError, match="extension: PostStartupCommand is blank; give a command, or leave the key"):
        parse_options(config(PostStartupCommand="   "))


def test_misspelt_key_refused_with_a_suggestion():
    with pytest.raises(ConfigError) as err:
        check_backend_config(ExtensionBackend, config(SubnetAddComand="true"))
    assert "unknown Backend key 'SubnetAddComand' (did you mean 'SubnetAddCommand'?)" in str(err.value)
    assert "\n" not in str(err.value)
