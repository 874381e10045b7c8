"""alloc against the conformance kit: it moves no packets, so the kit checks leases, options,
peer churn, restart and cleanup but no pings (Capabilities.moves_packets=False)."""

from overlay_core.testing.kit import Conformance


class TestConformance(Conformance):
    backend = "alloc"
