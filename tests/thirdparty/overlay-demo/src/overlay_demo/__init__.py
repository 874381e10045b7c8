"""Backend ``demo``: records the events it gets; option ``Color`` must be a string."""

import json
import os

from overlay_core import Backend, ConfigError, LeaseRequest, hookimpl


def record(event: str, **data) -> None:
    path = os.environ.get("OVERLAY_DEMO_LOG")
    if path:
        with open(path, "a") as fh:
            fh.write(json.dumps({"event": event, **data}) + "\n")


class DemoBackend(Backend):
    type = "demo"
    option_names = ("Color",)

    @classmethod
    def parse_options(cls, config):
        color = config.backend_option("color", "blue")
        if not isinstance(color, str):
            raise ConfigError(f"demo backend: Color must be a string, got {color!r}")
        return {"color": color}

    @hookimpl
    def overlay_network_config(self, config):
        record("network_config", network=str(config.network), color=self.options["color"])

    @hookimpl
    async def overlay_lease_request(self, node):
        record("lease_request", iface=node.iface.name)
        return LeaseRequest("demo", node.iface.mtu - 10, {"Color": self.options["color"]})

    @hookimpl
    async def overlay_lease_acquired(self, lease):
        record("lease_acquired", subnet=str(lease.subnet))

    @hookimpl
    async def overlay_peers_added(self, peers):
        record("peers_added", subnets=[str(p.subnet) for p in peers],
               data=[p.attrs.backend_data for p in peers])

    @hookimpl
    def overlay_peers_removed(self, peers):
        record("peers_removed", subnets=[str(p.subnet) for p in peers])

    @hookimpl
    def overlay_peers_changed(self, changes):
        record("peers_changed", data=[[o.attrs.backend_data, n.attrs.backend_data] for o, n in changes])

    @hookimpl
    def overlay_lease_renewed(self, lease, remaining):
        record("lease_renewed", subnet=str(lease.subnet), remaining=remaining)

    @hookimpl
    def overlay_lease_lost(self, lease, reason):
        record("lease_lost", subnet=str(lease.subnet), reason=reason)

    @hookimpl
    async def overlay_shutdown(self):
        record("shutdown")

    @hookimpl
    def overlay_store_in_sync(self, peers, initial):
        record("store_in_sync", peers=len(peers), initial=initial)

    @hookimpl
    def overlay_reconcile(self, peers):
        record("reconcile", peers=len(peers))

    @hookimpl
    def overlay_report(self):
        return {"demo_color": self.options["color"]}
