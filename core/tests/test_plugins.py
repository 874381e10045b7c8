from types import SimpleNamespace

import pytest
from overlay_core import Backend, hookimpl
from overlay_core.errors import BackendNotFoundError
from overlay_core.plugins import PluginManager, installed_backends, load_backend_class


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


def test_unknown_backend_names_installed_ones_and_the_package():
    with pytest.raises(BackendNotFoundError) as info:
        load_backend_class("Host-GWX")
    text = str(info.value)
    assert "backend type 'Host-GWX' is not installed (installed: alloc" in text
    assert text.endswith("install it with: pip install overlay-host-gwx")


def test_backend_loading_is_case_insensitive_and_imports_only_that_one():
    assert "alloc" in [b.name for b in installed_backends()]
    cls = load_backend_class("ALLOC")
    assert issubclass(cls, Backend) and cls.type == "alloc"


def test_backend_accepts_only_its_lease_type():
    class Mine(Backend):
        type = "mine"

    lease = lambda t: SimpleNamespace(attrs=SimpleNamespace(backend_type=t))  # noqa: E731
    node = SimpleNamespace(config=None)
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
