"""ipip against the conformance kit (overlay_core.testing.kit); skipped where the kernel has no ipip."""

from overlay_core.testing.kit import Conformance


class TestConformance(Conformance):
    backend = "ipip"
