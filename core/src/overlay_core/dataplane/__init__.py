"""The data plane pieces a backend uses: kernel objects, their ownership scope, the kernel as a
reconcile target, and devices through ``Links`` (no pyroute2 object reaches a backend)."""

from .genl import GenericFamily, GenericNetlinkError
from .kernel import Kernel
from .links import LinkInfo, Links
from .objects import FdbEntry, Neighbour, Route, Scope, intern

__all__ = ["FdbEntry", "GenericFamily", "GenericNetlinkError", "Kernel", "LinkInfo", "Links", "Neighbour", "Route",
           "Scope", "intern"]
