"""``--ip-blackhole-route`` as a plugin: the route keeper (``blackhole_routes``) starts on a
core task once the node holds its first lease and follows the lease from then on."""

from __future__ import annotations

from ..plugins import hookimpl
from .blackhole_routes import keep_blackhole_routes


class BlackholeRoutes:
    def __init__(self, netlink, period: float, tasks) -> None:
        self.netlink = netlink
        self.period = period
        self.tasks = tasks
        self.node = None
        self.ready = True

    @hookimpl
    def overlay_lease_acquired(self, node) -> None:
        if self.node is None:
            self.node = node
            self.tasks.start_soon(keep_blackhole_routes, self.netlink, lambda: node.lease, self.period,
                                  name="blackhole routes")
