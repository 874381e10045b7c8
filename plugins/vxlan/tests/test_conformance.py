"""vxlan against the conformance kit (overlay_core.testing.kit)."""

from overlay_core.testing.kit import Conformance


class TestConformance(Conformance):
    backend = "vxlan"
    ignored_options = ("MacPrefix", "Name")  # Flannel's Windows-only keys: accepted and ignored on Linux
