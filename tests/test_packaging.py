"""Every distribution's declared dependencies: each third-party module its code imports is
declared by that distribution with a lower bound, and nothing is declared that it never imports
(except the few listed with their reason)."""

import ast
import importlib.metadata
import re
import sys
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PROJECTS = sorted(p.parent for p in [ROOT / "core" / "pyproject.toml", *(ROOT / "plugins").rglob("pyproject.toml"),
                                     *(ROOT / "tools").rglob("pyproject.toml")]
                  if p.exists() and "tests" not in p.relative_to(ROOT).parts)  # test-only packages ship nowhere
# declared without a direct import, on purpose
INDIRECT = {
    "protobuf": "pyetcd (etcd-sdk-python) imports it without declaring it",
    "tencentcloud-sdk-python-common": "the VPC SDK's own base package, imported through it",
}


def canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def declared(project: Path, extras: bool = False) -> dict[str, str]:
    """Runtime dependencies by canonical name (with ``extras``: those of the optional groups)."""
    meta = tomllib.loads((project / "pyproject.toml").read_text())["project"]
    deps = ([d for group in meta.get("optional-dependencies", {}).values() for d in group] if extras
            else meta.get("dependencies", []))
    return {canonical(re.split(r"[ ;<>=!~\[(]", d, maxsplit=1)[0]): d for d in deps}


def imported_distributions(project: Path, testing: bool = False) -> set[str]:
    """Distributions (canonical names) of the top-level modules the project's source imports,
    leaving out the standard library and the project's own packages; ``testing``: only in its
    test and lab helpers (``testing`` modules, used under pytest, and ``lab`` modules, loaded only by
    overlay-lab), else only outside them."""
    own = {p.name for p in (project / "src").iterdir() if p.is_dir()}
    modules = set()
    for path in (project / "src").rglob("*.py"):
        parts = path.relative_to(project).with_suffix("").parts
        if ("testing" in parts or parts[-1] == "lab") != testing:
            continue
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                modules |= {a.name.split(".")[0] for a in node.names}
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                modules.add(node.module.split(".")[0])
            elif isinstance(node, ast.Call) and getattr(node.func, "id", "") == "import_part" and node.args:
                modules.add(node.args[0].value)  # core's lean imports: import_part("pyroute2", ...)
    owners = importlib.metadata.packages_distributions()
    third = modules - own - set(sys.stdlib_module_names) - {"__future__"}
    return {canonical(d) for m in third for d in owners.get(m, [m])}


@pytest.mark.parametrize("project", PROJECTS, ids=lambda p: str(p.relative_to(ROOT)))
def test_dependencies_are_declared_with_lower_bounds_and_used(project):
    deps = declared(project)
    used = imported_distributions(project)
    assert used <= deps.keys(), f"imported but not declared: {sorted(used - deps.keys())}"
    unused = deps.keys() - used - INDIRECT.keys()
    assert not unused, f"declared but never imported: {sorted(unused)}"
    no_floor = [spec for spec in deps.values() if ">=" not in spec]
    assert not no_floor, f"no lower bound: {no_floor}"
    for_tests = imported_distributions(project, testing=True) - deps.keys()
    assert for_tests <= declared(project, extras=True).keys(), f"test helpers import undeclared {for_tests}"
