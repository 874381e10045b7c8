"""An observer plugin: always loaded, sees the same peer events as the backend."""

from overlay_core import hookimpl

from . import record


@hookimpl
def overlay_peers_added(peers):
    record("audit_peers_added", count=len(peers))
