"""The conformance kit, run against staticroutes in a three-node lab (needs root and etcd)."""

from overlay_core.testing.kit import Conformance


class TestConformance(Conformance):
    backend = "staticroutes"
    options = {"NextHopFrom": "interface"}
