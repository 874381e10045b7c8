import subprocess
import sys
from types import SimpleNamespace

import pytest
from overlay_core import Backend, hookimpl, parse_config
from overlay_core.backend import check_option_names
from overlay_core.errors import BackendNotFoundError, ConfigError
from overlay_core.plugins import PluginManager, load_backend_class, missing_backend_advice


class Sync:
    def __init__(self, log):
        self.log = log

    @hookimpl
    def overlay_lease_request(self, config):
        self.log.append("sync")

    @hookimpl
    def overlay_peers_added(self, peers):
        raise RuntimeError("boom")


class Async:
    def __init__(self, log):
        self.log = log

    @hookimpl(tryfirst=True)
    async def overlay_lease_request(self, node):
        self.log.append("async")
        return "from-async"

    @hookimpl
    async def overlay_peers_added(self, peers):
        self.log.append(("peers", list(peers)))


async def test_async_impls_are_awaited_in_order_and_firstresult_stops():
    log = []
    pm = PluginManager()
    pm.register(Sync(log), "sync")
    pm.register(Async(log), "async")
    assert await pm.call("overlay_lease_request", firstresult=True, config=None, node=None) == ["from-async"]
    assert log == ["async"]
    assert await pm.call("overlay_lease_request", config=None, node=None) == ["from-async"]
    assert log == ["async", "async", "sync"]


async def test_call_each_reports_failures_and_runs_the_rest():
    log, errors = [], []
    pm = PluginManager()
    pm.register(Sync(log), "sync")
    pm.register(Async(log), "async")
    await pm.call_each("overlay_peers_added", lambda plugin, exc: errors.append((plugin, str(exc))),
                       peers=[1], node=None)
    assert errors == [("sync", "boom")] and ("peers", [1]) in log


def test_unknown_backend_type_is_called_unknown_and_no_package_is_invented():
    with pytest.raises(BackendNotFoundError) as info:
        load_backend_class("Host-GWX")
    text = str(info.value)
    assert text.startswith("backend type 'Host-GWX' is unknown (did you mean 'host-gw'?); known types: alloc, ")
    assert "(installed: alloc" in text and "pip install" not in text


@pytest.mark.parametrize("kind, package", [("host-gw", "overlay-hostgw"), ("tencent-vpc", "overlay-tencent-vpc"),
                                           ("udp", "overlay-udp"), ("WireGuard", "overlay-wireguard")])
def test_known_but_missing_backend_names_its_real_distribution(kind, package):
    text = missing_backend_advice(kind)
    assert text.startswith(f"backend type {kind!r} is not installed (installed: ")
    assert text.endswith(f"install it with: pip install {package}")


IMPORTS_ONLY_ONE = """
import sys
from overlay_core.plugins import installed_backends, load_backend_class
others = {b.target.split(":")[0].split(".")[0] for b in installed_backends() if b.name != "alloc"}
cls = load_backend_class("ALLOC")
print(cls.type, sorted(others), sorted(m for m in others if m in sys.modules))
"""


def test_backend_loading_is_case_insensitive_and_imports_only_that_one():
    out = subprocess.run([sys.executable, "-c", IMPORTS_ONLY_ONE], capture_output=True, text=True, timeout=60,
                         check=True).stdout.split(" ", 1)
    assert out[0] == "alloc"
    others, imported = out[1].rsplit("] ", 1)
    assert "overlay_vxlan" in others  # there were others to (not) import
    assert imported.strip() == "[]"


def test_backend_keys_are_checked_against_the_declared_names():
    class Mine(Backend):
        type = "mine"
        option_names = ("Color", "DirectRouting")

    check_option_names(Mine, parse_config('{"Network":"10.0.0.0/16","Backend":{"TYPE":"mine","color":1}}'))
    with pytest.raises(ConfigError, match="mine: unknown Backend key 'DirectRoute' \\(did you mean 'DirectRouting'"):
        check_option_names(Mine, parse_config('{"Network":"10.0.0.0/16","Backend":{"Type":"mine","DirectRoute":1}}'))
    Mine.option_names = None  # undeclared (a third party's older backend): keys are not checked
    check_option_names(Mine, parse_config('{"Network":"10.0.0.0/16","Backend":{"Type":"mine","Anything":1}}'))


def test_a_config_without_backend_warns_once_that_flannel_would_run_udp(caplog):
    class Vx(Backend):
        type = "vxlan"

    Vx(SimpleNamespace(config=parse_config('{"Network":"10.0.0.0/16"}')))
    warnings = [r for r in caplog.records if r.levelname == "WARNING"]
    assert len(warnings) == 1 and "Flannel nodes sharing this store would run udp" in warnings[0].getMessage()


def test_backend_accepts_only_its_lease_type():
    class Mine(Backend):
        type = "mine"

    lease = lambda t: SimpleNamespace(attrs=SimpleNamespace(backend_type=t))  # noqa: E731
    node = SimpleNamespace(config=parse_config('{"Network":"10.0.0.0/16","Backend":{"Type":"mine"}}'))
    backend = Mine(node)
    assert backend.accepts(lease("mine")) and not backend.accepts(lease("vxlan"))


class Wrapper:
    @hookimpl(wrapper=True)
    def overlay_lease_request(self):
        return (yield)


class AsyncReport:
    @hookimpl
    async def overlay_report(self):
        return {"never": "seen"}


@pytest.mark.parametrize("plugin, words", [(Wrapper(), "hook wrapper"), (AsyncReport(), "must answer synchronously")])
def test_register_refuses_what_the_agent_cannot_call(plugin, words):
    from overlay_core.plugins import PluginError

    pm = PluginManager()
    with pytest.raises(PluginError, match=words):
        pm.register(plugin, "bad")
    assert pm.pm.get_plugin("bad") is None  # nothing half-registered


def test_hook_overlay_peer_status():
    from overlay_core.backend import PeerStatus
    from overlay_core.plugins import Hooks

    class Backendish:
        @hookimpl
        def overlay_peer_status(self):
            return {"10.5.2.0-24": PeerStatus("connecting", {"handshake_age": 200})}

    class Observer:
        @hookimpl
        def overlay_peer_status(self, node):
            return {"10.5.2.0-24": PeerStatus("ignored", {"audited": True}),
                    "10.5.3.0-24": PeerStatus("programmed")}

    pm = PluginManager()
    pm.register(Backendish(), "backend")
    pm.register(Observer(), "observer")
    merged = Hooks(pm).peer_status(node=None)
    assert merged["10.5.2.0-24"] == PeerStatus("connecting", {"handshake_age": 200, "audited": True})
    assert merged["10.5.3.0-24"].state == "programmed"


def test_hook_overlay_register_commands(capsys):
    from overlay_core.cli import build_parser

    class Hello:
        @hookimpl
        def overlay_register_commands(self, subparsers):
            hello = subparsers.add_parser("hello", help="say hello")
            hello.set_defaults(func=lambda ns: print("hello from a plugin") or 0)

    pm = PluginManager()
    pm.register(Hello(), "hello")
    ns = build_parser(pm).parse_args(["hello"])
    assert ns.func(ns) == 0 and capsys.readouterr().out == "hello from a plugin\n"
    assert "lab" in build_parser().format_help()  # the built-in lab registers itself the same way
