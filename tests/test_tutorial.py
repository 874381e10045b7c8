"""docs/writing-a-backend.md, block by block: its files make a package that installs, passes its
own tests (the conformance kit included) and runs in a lab; its snippets run; its commands are
run here, or checked where running them needs the outside world (an upload to a package index)."""

import json
import os
import re
import subprocess
import sys
import zipfile

import pytest
from overlay_core import hookspecs

from .doc_blocks import (
    blocks,
    commands,
    env_with,
    kit_passes,
    outputs,
    pip_install_target,
    unit_tests_pass,
    write_files,
)

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PAGE = blocks(open(os.path.join(ROOT, "docs", "writing-a-backend.md")).read())
PACKAGE = "overlay-hostroutes"
LAB = f"d{os.getpid() % 10000}tut"


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """The package the page's file blocks make, installed into a directory of its own."""
    pkg = tmp_path_factory.mktemp("tutorial") / PACKAGE
    pkg.mkdir()
    write_files(PAGE, str(pkg))
    target = str(tmp_path_factory.mktemp("tutorial-site"))
    pip_install_target(str(pkg), target)
    return str(pkg), target


def overlay_core(target, *args, timeout=120):
    return subprocess.run([sys.executable, "-m", "overlay_core", *args], env=env_with(target),
                          capture_output=True, text=True, timeout=timeout)


def lab_command(command: str) -> list[str]:
    """A documented ``sudo overlay-core lab …`` line as this test runs it: as root already, and
    under a lab name of this test's own."""
    args = command.removeprefix("sudo overlay-core ").split()
    return [LAB if previous == "--name" else arg for previous, arg in zip([""] + args, args)]


CONFIG_CHECK = ("""echo '{"Network": "10.5.0.0/16", "Backend": {"Type": "hostroutes", "MTU": 20}}' """
                "| overlay-core config check -")

# Every command of the page, with how this module exercises it; a command added to the page
# without an entry here fails test_every_block_is_exercised.
COMMANDS = {
    f"mkdir {PACKAGE} && cd {PACKAGE}": "the built fixture makes this directory",
    CONFIG_CHECK: "test_config_check_prints_the_documented_line",
    "pip install -e .": "the built fixture installs the package (into a directory of its own)",
    "pytest tests/test_unit.py": "test_its_unit_tests_pass",
    "sudo pytest": "test_it_passes_the_conformance_kit",
    "sudo overlay-core lab up --name dev --backend hostroutes --nodes 3": "test_the_lab_commands",
    "sudo overlay-core lab status --name dev": "test_the_lab_commands",
    "sudo overlay-core lab down --name dev": "test_the_lab_commands",
    "pip wheel --no-deps -w dist .": "test_publishing",
    "twine upload dist/*": "checked by test_publishing (uploading needs an account on an index)",
}


def test_every_block_is_exercised():
    assert [b.info for b in PAGE if b.kind == "unknown"] == []
    assert len(outputs(PAGE)) == len([b for b in PAGE if b.kind == "output"]) > 0
    assert set(commands(PAGE)) == set(COMMANDS)
    files = [b.path for b in PAGE if b.kind == "file"]
    assert len(files) == len(set(files)) and "pyproject.toml" in files
    assert [b for b in PAGE if b.kind == "run"]


def test_the_lifecycle_section_names_every_hook():
    page = open(os.path.join(ROOT, "docs", "writing-a-backend.md")).read()
    section = page[page.index("## 3. Hooks"):page.index("## 4.")]
    hooks = [name for name, fn in vars(hookspecs).items() if hasattr(fn, "overlay_spec")]
    assert len(hooks) > 10 and [h for h in hooks if f"`{h}" not in section] == []


def test_the_installed_package_is_found_by_its_entry_point(built):
    _, target = built
    listed = json.loads(overlay_core(target, "backends", "--json").stdout)["backends"]
    found = next(b for b in listed if b["name"] == "hostroutes")
    assert (found["distribution"], found["version"]) == (PACKAGE, "0.1.0")


def test_config_check_prints_the_documented_line(built):
    _, target = built
    env = {**env_with(target), "PATH": f"{os.path.dirname(sys.executable)}:{os.environ['PATH']}"}
    proc = subprocess.run(["bash", "-o", "pipefail", "-c", CONFIG_CHECK], env=env, capture_output=True, text=True,
                          timeout=60)
    assert proc.returncode == 1
    assert proc.stdout + proc.stderr == outputs(PAGE)[CONFIG_CHECK]


@pytest.mark.parametrize("snippet", [b.text for b in PAGE if b.kind == "run"])
def test_the_snippets_run(built, snippet):
    _, target = built
    proc = subprocess.run([sys.executable, "-c", snippet], env=env_with(target), capture_output=True, text=True,
                          timeout=60)
    assert proc.returncode == 0, proc.stderr


def test_its_unit_tests_pass(built):
    out = unit_tests_pass(*built)
    assert re.search(r"\b4 passed\b", out), out


@pytest.mark.netns
@pytest.mark.etcd
def test_it_passes_the_conformance_kit(built):
    assert "passed" in kit_passes(*built)


@pytest.mark.netns
@pytest.mark.etcd
def test_the_lab_commands(built):
    _, target = built
    up, status, down = (lab_command(c) for c in COMMANDS if c.startswith("sudo overlay-core lab"))
    try:
        started = overlay_core(target, *up, timeout=600)
        assert started.returncode == 0, started.stdout + started.stderr
        assert "hostroutes" in started.stdout and "3/3" in started.stdout  # rows, and a ping matrix cell
        shown = overlay_core(target, *status)
        assert shown.returncode == 0 and shown.stdout.count(" yes") == 3, shown.stdout
    finally:
        stopped = overlay_core(target, *down)
    assert stopped.returncode == 0 and f"lab {LAB!r} down" in stopped.stdout
    assert not [n for n in subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout.split()
                if n.startswith(f"ovl-{LAB}-")]


def test_publishing(built, tmp_path):
    pkg, _ = built
    wheel_cmd = "pip wheel --no-deps -w dist ."
    assert wheel_cmd in COMMANDS and "twine upload dist/*" in COMMANDS  # uploads what the wheel step wrote
    dist = tmp_path / "dist"
    proc = subprocess.run([sys.executable, "-m", *wheel_cmd.replace("-w dist", f"-w {dist}").split(),
                           "--no-build-isolation", "-q"], cwd=pkg, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    (wheel,) = dist.glob("overlay_hostroutes-0.1.0-*.whl")
    with zipfile.ZipFile(wheel) as zf:
        entry_points = zf.read("overlay_hostroutes-0.1.0.dist-info/entry_points.txt").decode()
    assert "[overlay.backends]\nhostroutes = overlay_hostroutes:HostroutesBackend" in entry_points
