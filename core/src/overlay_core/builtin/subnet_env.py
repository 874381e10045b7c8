"""The subnet file (``--subnet-file``, read by the CNI plugin) as a plugin: written for every
lease the node takes, atomically, with the backend's MTU."""

from __future__ import annotations

import logging

import trio

from .. import subnetfile
from ..plugins import hookimpl

LOGGER = logging.getLogger("overlay.agent")


class SubnetFile:
    def __init__(self, path: str, ip_masq: bool) -> None:
        self.path = path
        self.ip_masq = ip_masq
        self.ready = False

    def previous(self):
        """The subnets of the file a previous run wrote (tried first when acquiring)."""
        return subnetfile.previous_subnets(self.path)

    @hookimpl(trylast=True)
    async def overlay_lease_acquired(self, lease, node) -> None:
        text = subnetfile.render(node.config, lease, node.mtu, self.ip_masq)
        await trio.to_thread.run_sync(subnetfile.write, self.path, text)
        self.ready = True
        LOGGER.info("wrote %s", self.path)
