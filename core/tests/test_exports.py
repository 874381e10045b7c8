"""The backend author's API is pinned, and no plugin in the repo reaches past it."""

import ast
import pathlib

import overlay_core
import overlay_core.dataplane

REPO = pathlib.Path(__file__).resolve().parents[2]


def test_public_api_is_pinned():
    assert overlay_core.__all__ == [
        "Backend", "BackendNotFoundError", "Capabilities", "ConfigError", "ExternalInterface", "InterfaceError",
        "KernelBackend", "KernelFeatureMissingError", "Lease", "LeaseAttrs", "LeaseRequest", "NetworkConfig", "Node",
        "OverlayError", "PUBLIC_MODULES", "PeerPlan", "PeerStatus", "ReconcilingBackend", "StoreError",
        "SubnetsExhaustedError", "__version__", "direct_plan", "hookimpl", "lease_from_kv", "make_subnet_key",
        "parse_config",
    ]
    assert overlay_core.dataplane.__all__ == ["FdbEntry", "GenericFamily", "GenericNetlinkError", "Kernel", "LinkInfo",
                                              "Links", "Neighbour", "Route", "Scope", "intern"]
    for name in overlay_core.__all__:
        assert hasattr(overlay_core, name)


def imported_modules(path: pathlib.Path):
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            yield node.module
        elif isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)


def test_plugins_import_only_the_public_api():
    offenders = []
    sources = [*(REPO / "plugins").rglob("src/**/*.py"), *(REPO / "tools").rglob("src/**/*.py"),
               *(REPO / "tests/thirdparty").rglob("*.py")]
    for path in sorted(sources):
        for module in imported_modules(path):
            if module.startswith("overlay_core.") and not module.startswith(overlay_core.PUBLIC_MODULES):
                offenders.append(f"{path.relative_to(REPO)}: {module}")
    assert offenders == []


def test_no_pyroute2_object_is_handed_to_plugin_code():
    """Backends reach devices through ``Links``: no netlink call with a raw IPRoute in plugins."""
    found = [str(p.relative_to(REPO)) for p in (REPO / "plugins").rglob("src/**/*.py")
             if "lambda ipr" in p.read_text() or "def run(ipr" in p.read_text()]
    assert found == []
