"""ipsec against the conformance kit: the lab gives each lab a random PSK (overlay_ipsec.lab), which
the kit's secrets check looks for (the option is named PSK)."""

import pytest
from overlay_core.testing.kit import Conformance


class TestConformance(Conformance):
    backend = "ipsec"

    @pytest.mark.xfail(strict=False, reason="kit finding: without kernel ESP (libipsec mode) the kit deletes "
                       "charon's ipsec0 device and nothing recreates it; the ipsec backend must repair that")
    def test_drift_is_repaired(self, kit):
        super().test_drift_is_repaired(kit)
