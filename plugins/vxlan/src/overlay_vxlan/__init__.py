"""overlay-vxlan: the recommended backend (``"Backend": {"Type": "vxlan"}``)."""

from .backend import VxlanBackend
from .options import VxlanOptions

__version__ = "0.1.0"
__all__ = ["VxlanBackend", "VxlanOptions"]
