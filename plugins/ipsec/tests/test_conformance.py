"""ipsec against the conformance kit: the lab gives each lab a random PSK (overlay_ipsec.lab), which
the kit's secrets check looks for (the option is named PSK). Without kernel ESP (libipsec mode)
the kit's drift check deletes charon's ipsec0; the backend restarts charon to get it back."""

from overlay_core.testing.kit import Conformance


class TestConformance(Conformance):
    backend = "ipsec"
