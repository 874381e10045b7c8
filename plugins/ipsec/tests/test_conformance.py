"""ipsec against the conformance kit: the lab gives each lab a random PSK (overlay_ipsec.lab), which
the kit's secrets check looks for (the option is named PSK)."""

from overlay_core.testing.kit import Conformance


class TestConformance(Conformance):
    backend = "ipsec"
