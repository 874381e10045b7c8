"""Meta-tests: every hook is documented (When:/Returns:) and has a test of its own."""

import ast
import pathlib

from overlay_core import hookspecs
from overlay_core.plugins import PluginManager

REPO = pathlib.Path(__file__).resolve().parents[2]


def hook_names():
    return sorted(n for n in dir(hookspecs) if n.startswith("overlay_"))


def test_hookspecs_documented():
    pm = PluginManager().pm
    assert set(hook_names()) == {n for n in dir(pm.hook) if n.startswith("overlay_")}
    for name in hook_names():
        doc = getattr(hookspecs, name).__doc__ or ""
        assert "When:" in doc and "Returns:" in doc, name


def _test_function_names() -> set[str]:
    """Names of the test functions in every test file of the repository."""
    names = set()
    for path in REPO.rglob("test_*.py"):
        if ".venv" in path.parts or "tests" not in path.parts:
            continue
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) and node.name.startswith("test_"):
                names.add(node.name)
    return names


def test_hookspecs_have_tests():
    """Each hook ``overlay_x`` needs a test named ``test_hook_overlay_x`` that exercises it (a
    mention in some file proves nothing)."""
    found = _test_function_names()
    missing = [n for n in hook_names() if f"test_hook_{n}" not in found]
    assert missing == []
