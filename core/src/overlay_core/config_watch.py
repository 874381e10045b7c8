"""The network config while the node runs: it keeps the last good one.

An unusable config in the store (garbage, deleted) is warned about once per change and shown in
``/readyz`` (``config_error``); a change of the backend type or the network is refused (the data
plane stays; ``/readyz`` 503 with ``conflict``) until the config is restored.
"""

from __future__ import annotations

import logging

import trio

from .config import NetworkConfig
from .errors import ConfigError
from .etcd import StoreUnavailable

LOGGER = logging.getLogger("overlay.agent")

CONFIG_RETRY = 1.0


class ConfigWatch:
    def __init__(self, read, metrics) -> None:
        self.read = read  # async () -> NetworkConfig
        self.metrics = metrics
        self.conflict = ""
        self.error = ""
        metrics.config_valid.set(1)

    async def first(self, retry) -> NetworkConfig:
        """The config at startup: retried while etcd is away (``retry``) and every second while
        it is missing or invalid (each distinct error logged once)."""
        last_error = ""
        while True:
            try:
                return await retry("reading the network config", self.read)
            except ConfigError as exc:
                if str(exc) != last_error:
                    LOGGER.error("%s (retrying every %.0f s)", exc, CONFIG_RETRY)
                    last_error = str(exc)
                await trio.sleep(CONFIG_RETRY)

    async def check(self, running: NetworkConfig) -> None:
        try:
            fresh = await self.read()
        except StoreUnavailable as exc:
            LOGGER.debug("config check skipped: %s", exc)
            return
        except ConfigError as exc:
            error = f"the network config in the store is unusable ({exc}); running on the last good one"
            if error != self.error:
                LOGGER.warning("%s", error)
            self.error = error
            self.metrics.config_valid.set(0)
            return
        if self.error:
            LOGGER.info("the network config in the store is valid again")
            self.error = ""
        if fresh.same_network(running):
            if self.conflict:
                LOGGER.info("network config matches the running one again")
            self.conflict = ""
            if fresh.raw != running.raw and fresh.backend != running.backend:
                LOGGER.info("backend options changed; restart the agent to apply them")
        else:
            conflict = (
                f"the network config now asks for backend {fresh.backend_type!r} on "
                f"{fresh.network or fresh.ipv6_network}, but this agent runs {running.backend_type!r} "
                f"on {running.network or running.ipv6_network}; the change is refused and the "
                "data plane is kept: restore the config, or drain and restart the nodes"
            )
            if conflict != self.conflict:
                LOGGER.error("%s", conflict)
            self.conflict = conflict
        self.metrics.config_valid.set(0 if self.conflict else 1)

    def report(self) -> dict[str, str]:
        facts = {}
        if self.conflict:
            facts["conflict"] = self.conflict
        if self.error:
            facts["config_error"] = self.error
        return facts
