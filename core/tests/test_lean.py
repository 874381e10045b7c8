"""``_lean.import_part``: part of a package without its ``__init__``, and the whole package still works after."""

import subprocess
import sys

import pytest


def run_fresh(code: str) -> str:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout


LEAN_AS_THE_AGENT_DOES = (
    "from overlay_core._lean import import_part\n"
    "(_, linux) = import_part('pyroute2', 'config.log', 'iproute.linux')\n"
    "import_part('prometheus_client', 'metrics', 'registry', 'utils')\n"
)


def test_a_lean_package_completes_itself_when_used_whole():
    out = run_fresh(
        LEAN_AS_THE_AGENT_DOES
        + "from pyroute2 import IPRoute, NDB\n"
        "import pyroute2\n"
        "print(IPRoute is linux.IPRoute, NDB.__module__, pyroute2.__version__ != 'unknown')"
    )
    assert out.split() == ["True", "pyroute2.ndb.main", "True"]


@pytest.mark.parametrize("name", ["WireGuard", "IPRoute", "IPSet", "NetNS"])
def test_pyroute2_top_level_names_still_import_after_the_lean_import(name):
    out = run_fresh(
        LEAN_AS_THE_AGENT_DOES
        + f"from pyroute2 import {name}\n"
        f"import pyroute2\n"
        f"print({name}.__name__, getattr(pyroute2, {name!r}) is {name})"
    )
    assert out.split() == [name, "True"]


def test_wireguard_genl_module_imports_alone_after_the_lean_import():
    out = run_fresh(
        LEAN_AS_THE_AGENT_DOES
        + "(wg,) = import_part('pyroute2', 'netlink.generic.wireguard')\n"
        "from pyroute2 import WireGuard\n"
        "print(wg.WireGuard is WireGuard)"
    )
    assert out.strip() == "True"


def test_prometheus_client_whole_after_the_lean_import():
    out = run_fresh(
        LEAN_AS_THE_AGENT_DOES
        + "from prometheus_client import generate_latest, Counter\n"
        "from prometheus_client.metrics import Counter as Lean\n"
        "print(Counter is Lean, callable(generate_latest))"
    )
    assert out.split() == ["True", "True"]


def test_a_missing_package_is_a_clear_error():
    out = run_fresh(
        "from overlay_core._lean import import_part\n"
        "try:\n    import_part('no_such_package_xyz', 'a')\n"
        "except ModuleNotFoundError as exc:\n    print(exc.name, '|', exc)"
    )
    assert out.strip() == "no_such_package_xyz | no_such_package_xyz is not installed: pip install overlay-core again"
