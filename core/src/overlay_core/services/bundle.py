"""``Services``: what core hands a backend besides the node's facts.

A backend receives it as ``Backend.__init__(node, services)`` and keeps only policy: anything
with a lifetime (tasks, helper processes, threads, files) comes from here.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from .supervise import Helper, ProcessSpec, Supervisor
from .tasks import TaskGroup


@dataclass(frozen=True)
class Services:
    """``tasks``: long-lived work on a core-owned nursery, open before the first hook.
    ``supervisor``: helper processes that outlive the agent (use ``supervise``).
    ``state_dir``: this agent's directory for sockets, logs and keys (``--state-dir``).
    ``netlink``: the agent's netlink worker (core's own use; backends use ``links``).
    ``links``: the backend's devices (``overlay_core.dataplane.Links``). ``registry``:
    Prometheus registry for backend metrics. ``reconcile_soon()``: ask for a full reconcile of
    every target (debounced)."""

    tasks: TaskGroup
    supervisor: Supervisor
    state_dir: Path
    netlink: Any
    links: Any
    registry: Any
    reconcile_soon: Callable[[], None]

    async def supervise(self, spec: ProcessSpec) -> Helper:
        """Start or adopt a helper; returns once it is ready. After a restart (the helper forgot
        its configuration) a reconcile follows, unless ``spec.on_restart`` says otherwise."""
        if spec.on_restart is None:
            spec = replace(spec, on_restart=self._after_restart)
        return await self.supervisor.supervise(spec)

    async def _after_restart(self, helper: Helper) -> None:
        self.reconcile_soon()

    def path(self, *parts: str) -> Path:
        """A path inside ``state_dir`` (its parents are not created)."""
        return self.state_dir.joinpath(*parts)
