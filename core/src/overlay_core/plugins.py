"""Plugin loading and hook calling.

Backends live in the entry point group ``overlay.backends`` (name = ``Backend.Type``); only the
configured one is imported. Observer plugins live in ``overlay.plugins`` and are always
loaded; one that fails to import is logged and skipped, it never stops the node.
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from importlib import metadata
from typing import TYPE_CHECKING, Any

import pluggy

from . import hookspecs
from .backend import Backend, LeaseRequest, PeerStatus
from .errors import BackendNotFoundError, OverlayError, did_you_mean

if TYPE_CHECKING:
    from .backend import Node
    from .config import NetworkConfig
    from .lease import Lease

LOGGER = logging.getLogger("overlay.plugins")

BACKEND_GROUP = "overlay.backends"
PLUGIN_GROUP = "overlay.plugins"
#: Plugins that only add commands (``overlay_register_commands``): loaded by the command line,
#: never by the agent, so a tool such as the lab costs a running node nothing.
COMMAND_GROUP = "overlay.commands"

hookimpl = pluggy.HookimplMarker("overlay")

#: The project's backend distributions by ``Backend.Type`` (DESIGN.md "Distributions"): the only
#: names the "not installed" advice ever tells a user to install.
KNOWN_BACKENDS = {
    "vxlan": "overlay-vxlan",
    "host-gw": "overlay-hostgw",
    "wireguard": "overlay-wireguard",
    "ipsec": "overlay-ipsec",
    "udp": "overlay-udp",
    "ipip": "overlay-ipip",
    "alloc": "overlay-alloc",
    "tencent-vpc": "overlay-tencent-vpc",
    "extension": "overlay-extension",
}


@dataclass(frozen=True)
class InstalledPlugin:
    name: str
    distribution: str
    version: str
    target: str


def _entry_points(group: str) -> list[InstalledPlugin]:
    found = []
    for ep in metadata.entry_points(group=group):
        dist = ep.dist.name if ep.dist else "?"
        version = ep.dist.version if ep.dist else "?"
        found.append(InstalledPlugin(ep.name.lower(), dist, version, ep.value))
    return sorted(found, key=lambda p: p.name)


def installed_backends() -> list[InstalledPlugin]:
    """Backends installed in this environment, read from metadata without importing them."""
    return _entry_points(BACKEND_GROUP)


def installed_observers() -> list[InstalledPlugin]:
    return _entry_points(PLUGIN_GROUP)


def load_backend_class(type_name: str) -> type[Backend]:
    """Import the one backend named ``type_name`` (case-insensitive)."""
    wanted = type_name.lower()
    matches = [ep for ep in metadata.entry_points(group=BACKEND_GROUP) if ep.name.lower() == wanted]
    if not matches:
        raise BackendNotFoundError(missing_backend_advice(type_name))
    ep = matches[0]
    dist = ep.dist.name if ep.dist else ep.value
    try:
        cls = ep.load()
    except Exception as exc:
        raise BackendNotFoundError(
            f"backend {wanted!r} from {dist} failed to import ({type(exc).__name__}: {exc}); "
            f"reinstall it: pip install --force-reinstall {dist}"
        ) from None
    if not (isinstance(cls, type) and issubclass(cls, Backend)):
        raise BackendNotFoundError(
            f"entry point {wanted!r} of {dist} is {ep.value}, not an overlay_core.Backend subclass"
        )
    if cls.type.lower() != wanted:
        raise BackendNotFoundError(
            f"entry point {wanted!r} of {dist} names a backend whose type is {cls.type!r}"
        )
    return cls


def missing_backend_advice(type_name: str) -> str:
    """Why ``type_name`` cannot be loaded and what to do: the real package for a known type;
    for an unknown one, no package name at all (a guessed name invites typosquatting)."""
    wanted = type_name.lower()
    installed = [p.name for p in installed_backends()]
    have = f"installed: {', '.join(installed) or 'none'}"
    if wanted in KNOWN_BACKENDS:
        return (f"backend type {type_name!r} is not installed ({have}); "
                f"install it with: pip install {KNOWN_BACKENDS[wanted]}")
    known = sorted(set(KNOWN_BACKENDS) | set(installed))
    return (f"backend type {type_name!r} is unknown{did_you_mean(wanted, known)}; "
            f"known types: {', '.join(known)} ({have})")


class PluginError(OverlayError):
    """A plugin implements a hook in a way the agent cannot call."""


class PluginManager:
    """pluggy's manager plus awaiting of ``async def`` hook implementations."""

    def __init__(self) -> None:
        self.pm = pluggy.PluginManager("overlay")
        self.pm.add_hookspecs(hookspecs)

    def register(self, plugin: object, name: str | None = None) -> None:
        """Register ``plugin``; refuse hook wrappers and ``async def`` implementations of the
        hooks that must answer synchronously (``hookspecs.SYNC_ONLY``)."""
        self.pm.register(plugin, name=name)
        try:
            self.pm.check_pending()
            for hook in self.pm.get_hookcallers(plugin) or ():
                for impl in hook.get_hookimpls():
                    if impl.plugin is not plugin:
                        continue
                    label = f"{name or type(plugin).__name__}.{hook.name}"
                    if impl.hookwrapper or impl.wrapper:
                        raise PluginError(f"plugin {label} is a hook wrapper; overlay calls hooks "
                                          "itself and does not support wrappers")
                    if hook.name in hookspecs.SYNC_ONLY and inspect.iscoroutinefunction(impl.function):
                        raise PluginError(f"plugin {label} is async, but {hook.name} must answer "
                                          "synchronously: make it a plain def")
        except Exception:
            self.pm.unregister(plugin)
            raise

    def load_observers(self) -> list[str]:
        """Register every plugin of ``overlay.plugins``; failing ones are logged and skipped."""
        return self._load_group(PLUGIN_GROUP)

    def load_commands(self) -> list[str]:
        """Register every plugin of ``overlay.commands`` (the command line only)."""
        return self._load_group(COMMAND_GROUP)

    def _load_group(self, group: str) -> list[str]:
        loaded = []
        for ep in metadata.entry_points(group=group):
            try:
                self.register(ep.load(), name=f"{group}:{ep.name}")
            except Exception as exc:
                LOGGER.warning("skipping plugin %s (%s): %s", ep.name, ep.value, exc)
                continue
            loaded.append(ep.name)
        return loaded

    def _impls(self, name: str):
        hook = getattr(self.pm.hook, name)
        return [i for i in reversed(hook.get_hookimpls()) if not (i.hookwrapper or i.wrapper)]

    async def call(self, name: str, *, firstresult: bool = False, **kwargs: Any) -> list[Any]:
        """Call hook ``name``; await coroutine results; return the non-None results in order.

        Exceptions propagate (the caller decides whether an event hook failure is fatal).
        """
        results = []
        for impl in self._impls(name):
            value = impl.function(*(kwargs[arg] for arg in impl.argnames))
            if inspect.isawaitable(value):
                value = await value
            if value is not None:
                results.append(value)
                if firstresult:
                    break
        return results

    async def call_each(self, name: str, on_error, **kwargs: Any) -> list[Any]:
        """Like ``call`` but an implementation that raises is reported to ``on_error(plugin, exc)``
        and the others still run."""
        results = []
        for impl in self._impls(name):
            try:
                value = impl.function(*(kwargs[arg] for arg in impl.argnames))
                if inspect.isawaitable(value):
                    value = await value
            except Exception as exc:
                on_error(impl.plugin_name, exc)
                continue
            if value is not None:
                results.append(value)
        return results


OnError = Callable[[str, str, Exception], None]


class Hooks:
    """Typed calls of every hook: the agent never names a hook by a string.

    Startup hooks (``network_config``, ``lease_request``, ``lease_acquired``) let an exception
    through: it stops the node or the step. Event hooks run every implementation and report a
    failing one to ``on_error(hook, plugin, exc)``.
    """

    def __init__(self, manager: PluginManager, on_error: OnError | None = None) -> None:
        self.manager = manager
        self.on_error = on_error or (lambda hook, plugin, exc: LOGGER.error("%s in %s failed: %s", hook, plugin, exc))

    async def _each(self, hook: str, **kwargs: Any) -> list[Any]:
        return await self.manager.call_each(hook, lambda plugin, exc: self.on_error(hook, plugin, exc), **kwargs)

    # startup
    async def network_config(self, config: NetworkConfig, node: Node) -> None:
        await self.manager.call("overlay_network_config", config=config, node=node)

    async def lease_request(self, config: NetworkConfig, node: Node) -> LeaseRequest | None:
        found = await self.manager.call("overlay_lease_request", firstresult=True, config=config, node=node)
        return found[0] if found else None

    async def lease_acquired(self, lease: Lease, node: Node) -> None:
        await self.manager.call("overlay_lease_acquired", lease=lease, node=node)

    # lease events
    async def lease_renewed(self, lease: Lease, remaining: float | None, node: Node) -> None:
        await self._each("overlay_lease_renewed", lease=lease, remaining=remaining, node=node)

    async def lease_lost(self, lease: Lease, reason: str, node: Node) -> None:
        await self._each("overlay_lease_lost", lease=lease, reason=reason, node=node)

    # peers
    async def peers_added(self, peers: Sequence[Lease], node: Node) -> None:
        await self._each("overlay_peers_added", peers=peers, node=node)

    async def peers_changed(self, changes: Sequence[tuple[Lease, Lease]], node: Node) -> None:
        await self._each("overlay_peers_changed", changes=changes, node=node)

    async def peers_removed(self, peers: Sequence[Lease], node: Node) -> None:
        await self._each("overlay_peers_removed", peers=peers, node=node)

    async def store_in_sync(self, peers: Sequence[Lease], initial: bool, node: Node) -> None:
        await self._each("overlay_store_in_sync", peers=peers, initial=initial, node=node)

    async def reconcile(self, peers: Sequence[Lease], node: Node) -> None:
        await self._each("overlay_reconcile", peers=peers, node=node)

    # reporting (sync)
    def report(self, node: Node) -> dict[str, Any]:
        facts: dict[str, Any] = {}
        for extra in self.manager.pm.hook.overlay_report(node=node):
            if isinstance(extra, Mapping):
                facts.update(extra)
        return facts

    def peer_status(self, node: Node) -> dict[str, PeerStatus]:
        merged: dict[str, PeerStatus] = {}
        for answer in reversed(self.manager.pm.hook.overlay_peer_status(node=node)):
            for key, status in (answer or {}).items():
                known = merged.get(key)
                merged[key] = status if known is None else replace(known, detail={**known.detail, **status.detail})
        return merged

    # shutdown
    async def shutdown(self, node: Node) -> None:
        await self.manager.call("overlay_shutdown", node=node)
