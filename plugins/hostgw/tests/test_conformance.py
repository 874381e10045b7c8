"""host-gw against the conformance kit (overlay_core.testing.kit)."""

from overlay_core.testing.kit import Conformance


class TestConformance(Conformance):
    backend = "host-gw"
