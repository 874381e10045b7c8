"""wireguard against the conformance kit, with a preshared key: the kit's secrets check looks for
it and for every node's private key (the lab's WIREGUARD_KEY_FILE) in logs, /readyz and /metrics."""

import base64
import os

from overlay_core.testing.kit import Conformance


class TestConformance(Conformance):
    backend = "wireguard"
    options = {"PSK": base64.b64encode(os.urandom(32)).decode()}
