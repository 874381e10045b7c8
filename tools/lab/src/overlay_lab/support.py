"""What a backend adds to the lab, through the entry point group ``overlay.lab``.

A backend package may register, under its ``Backend.Type``, a module (or object) with any of:

- ``backend_options(lab) -> dict``: ``Backend`` options the lab's network config needs by
  default (an IPsec PSK); options given with ``--option`` win.
- ``prepare(lab) -> None``: runs once the underlay switch and etcd exist, before any node: start
  stand-ins the backend needs (a fake cloud API), always inside the lab's namespaces, so that
  ``lab down`` removes them with the namespaces.
- ``node_env(lab, node) -> dict``: environment of that node's agent (a key file of its own).
- ``node_added(lab, node) -> None``: runs when a node's namespace is wired, before its agent starts.
- ``check(lab, nodes, remote_nodes, ipv6) -> str | None``: why this lab layout cannot work
  with the backend (shown before anything is built), or None.
"""

from __future__ import annotations

from importlib import metadata
from typing import Any

GROUP = "overlay.lab"


class NoSupport:
    """A backend without lab extras."""


def lab_support(backend: str) -> Any:
    """The lab extras registered for ``backend`` (case-insensitive), or an empty stand-in."""
    for ep in metadata.entry_points(group=GROUP):
        if ep.name.lower() == backend.lower():
            return ep.load()
    return NoSupport()


def call(support: Any, name: str, *args: Any, default: Any = None) -> Any:
    fn = getattr(support, name, None)
    return default if fn is None else fn(*args)
