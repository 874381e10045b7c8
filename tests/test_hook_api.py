"""The hook API's stability contract: a hook's name, arguments, return annotation or calling
convention (sync only, first result) cannot change unless docs/hooks.md shows the new signature
and CHANGELOG.md names the hook under *Unreleased*.

``tests/hook_api.json`` is the API of the last release. At a release, refresh it with
``python tests/test_hook_api.py --update VERSION``.
"""

from __future__ import annotations

import inspect
import json
import os
import re
import sys
import types

from overlay_core import hookspecs

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SNAPSHOT = os.path.join(ROOT, "tests", "hook_api.json")
HOOKS_MD = os.path.join(ROOT, "docs", "hooks.md")
CHANGELOG = os.path.join(ROOT, "CHANGELOG.md")


def _annotation(value) -> str:
    return value if isinstance(value, str) else inspect.formatannotation(value)


def render(name: str, fn) -> str:
    """``def name(arg: Type, …) -> Result`` as the spec declares it (annotations as written)."""
    sig = inspect.signature(fn)
    params = ", ".join(p.name if p.annotation is p.empty else f"{p.name}: {_annotation(p.annotation)}"
                       for p in sig.parameters.values())
    result = "" if sig.return_annotation is sig.empty else f" -> {_annotation(sig.return_annotation)}"
    return f"def {name}({params}){result}"


def api_of(module) -> dict[str, dict]:
    """Every hookspec of ``module``: its signature, whether it is sync only and how results count."""
    out = {}
    for name, fn in vars(module).items():
        opts = getattr(fn, "overlay_spec", None)
        if not callable(fn) or opts is None:
            continue
        signature = render(name, fn)
        if opts.get("firstresult"):
            result = "first result"
        else:
            result = "ignored" if signature.endswith("-> None") else "all results"
        out[name] = {"signature": signature, "sync": "sync only" if name in module.SYNC_ONLY else "either",
                     "result": result}
    return out


def sections(markdown: str) -> dict[str, str]:
    """The ``## overlay_…`` sections of the hook reference, by hook name."""
    parts = re.split(r"^## (overlay_\w+)[ \t]*$", markdown, flags=re.M)
    return dict(zip(parts[1::2], parts[2::2]))


def unreleased(changelog: str) -> str:
    match = re.search(r"^## Unreleased[ \t]*$(.*?)(?=^## |\Z)", changelog, flags=re.M | re.S)
    return match.group(1) if match else ""


def doc_problems(api: dict[str, dict], markdown: str) -> list[str]:
    """What docs/hooks.md gets wrong about ``api``."""
    documented = sections(markdown)
    problems = [f"docs/hooks.md documents {name}, which is no longer a hook" for name in documented if name not in api]
    for name, spec in api.items():
        text = documented.get(name)
        if text is None:
            problems.append(f"docs/hooks.md has no section '## {name}'")
            continue
        if f"```python\n{spec['signature']}\n```" not in text:
            problems.append(f"docs/hooks.md, section {name}: show the signature `{spec['signature']}`")
        for label, value in (("Sync or async", spec["sync"]), ("Result", spec["result"])):
            if f"- **{label}:** {value}." not in text:
                problems.append(f"docs/hooks.md, section {name}: say '- **{label}:** {value}.'")
    return problems


def changelog_problems(api: dict[str, dict], released: dict[str, dict], changelog: str) -> list[str]:
    """Hooks added, removed or changed since the release that CHANGELOG.md's Unreleased section
    does not name."""
    notes = unreleased(changelog)
    changed = sorted(name for name in api.keys() | released.keys() if api.get(name) != released.get(name))
    return [f"{name} changed since the last release: name it under '## Unreleased' in CHANGELOG.md"
            for name in changed if not re.search(rf"\b{name}\b", notes)]


def read(path: str) -> str:
    with open(path) as fh:
        return fh.read()


def snapshot() -> dict:
    with open(SNAPSHOT) as fh:
        return json.load(fh)


# -- the repository as it is -------------------------------------------------------------------


def test_every_hook_is_documented_with_its_signature():
    assert doc_problems(api_of(hookspecs), read(HOOKS_MD)) == []


def test_every_change_since_the_release_is_in_the_changelog():
    assert changelog_problems(api_of(hookspecs), snapshot()["hooks"], read(CHANGELOG)) == []


def test_the_snapshot_is_of_a_released_version():
    assert re.search(rf"^## {re.escape(snapshot()['version'])}[ \t]*$", read(CHANGELOG), flags=re.M)


# -- the contract catches changes ----------------------------------------------------------------


def modified_specs(old: str, new: str) -> types.ModuleType:
    """``overlay_core.hookspecs`` with its source text ``old`` replaced by ``new``."""
    source = inspect.getsource(hookspecs)
    assert old in source
    module = types.ModuleType("modified_hookspecs")
    exec(compile(source.replace(old, new), "modified_hookspecs", "exec"), module.__dict__)
    return module


def released_api() -> dict[str, dict]:
    return api_of(hookspecs)


def test_a_new_argument_needs_the_docs_and_the_changelog():
    old, new = "def overlay_shutdown(node: Node) -> None", "def overlay_shutdown(node: Node, why: str) -> None"
    module = modified_specs(old + ":", new + ":")
    docs, changelog = read(HOOKS_MD), read(CHANGELOG)
    assert doc_problems(api_of(module), docs) == [
        f"docs/hooks.md, section overlay_shutdown: show the signature `{new}`"]
    assert changelog_problems(api_of(module), released_api(), changelog) == [
        "overlay_shutdown changed since the last release: name it under '## Unreleased' in CHANGELOG.md"]
    docs = docs.replace(old, new)
    assert doc_problems(api_of(module), docs) == []
    older_only = changelog.replace("## 0.1.0\n", "## 0.1.0\n\n- `overlay_shutdown` gained `why`.\n")
    assert changelog_problems(api_of(module), released_api(), older_only) != []  # not under Unreleased
    noted = changelog.replace("## Unreleased\n", "## Unreleased\n\n- `overlay_shutdown` gained `why`.\n")
    assert changelog_problems(api_of(module), released_api(), noted) == []


def test_a_changed_type_or_convention_is_a_change():
    retyped = modified_specs("def overlay_lease_lost(lease: Lease, reason: str)",
                             "def overlay_lease_lost(lease: Lease, reason: int)")
    assert [p.split(":")[0] for p in doc_problems(api_of(retyped), read(HOOKS_MD))] == [
        "docs/hooks.md, section overlay_lease_lost"]
    sync = modified_specs('SYNC_ONLY = frozenset({"overlay_report",',
                          'SYNC_ONLY = frozenset({"overlay_reconcile", "overlay_report",')
    assert doc_problems(api_of(sync), read(HOOKS_MD)) == [
        "docs/hooks.md, section overlay_reconcile: say '- **Sync or async:** sync only.'"]
    assert len(changelog_problems(api_of(sync), released_api(), read(CHANGELOG))) == 1


def test_added_and_removed_hooks_need_the_docs_and_the_changelog():
    hello = '@_spec\ndef overlay_hello(node: Node) -> None:\n    """New."""\n\n\n'
    added = modified_specs("# -- shutdown", hello + "# -- shutdown")
    assert doc_problems(api_of(added), read(HOOKS_MD)) == ["docs/hooks.md has no section '## overlay_hello'"]
    assert changelog_problems(api_of(added), released_api(), read(CHANGELOG))[0].startswith("overlay_hello changed")
    removed = api_of(hookspecs)
    del removed["overlay_lease_renewed"]
    assert doc_problems(removed, read(HOOKS_MD)) == [
        "docs/hooks.md documents overlay_lease_renewed, which is no longer a hook"]
    assert changelog_problems(removed, released_api(), read(CHANGELOG))[0].startswith("overlay_lease_renewed changed")


if __name__ == "__main__":  # python tests/test_hook_api.py --update VERSION
    if sys.argv[1:2] != ["--update"] or len(sys.argv) != 3:
        sys.exit("usage: python tests/test_hook_api.py --update VERSION")
    with open(SNAPSHOT, "w") as fh:
        json.dump({"version": sys.argv[2], "hooks": api_of(hookspecs)}, fh, indent=2)
        fh.write("\n")
