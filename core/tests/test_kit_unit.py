"""The conformance kit's pure parts: address matching in state dumps, kernel feature verdicts."""

import pytest
from overlay_core import Capabilities
from overlay_core.testing import kernel_features
from overlay_core.testing.kit import mentions


@pytest.mark.parametrize("text, address, found", [
    ("10.5.4.0/24 via 192.0.2.4 dev eth0", "192.0.2.4", True),
    ("10.5.4.0/24 via 192.0.2.40 dev eth0", "192.0.2.4", False),
    ("10.5.4.0/24 via 192.0.2.54 dev eth0", "192.0.2.4", False),
    ("10.5.4.0/24 via 10.5.4.0 dev flannel.1 onlink", "10.5.4.0", True),
    ("10.5.40.0/24 via 10.5.40.0 dev flannel.1 onlink", "10.5.4.0", False),
    ("2001:db8:10:4::/64 via fe80::1 dev flannel-v6.1", "2001:db8:10:4::", True),
    ("2001:db8:10:4::1 dev cni0", "2001:db8:10:4::", False),
    ('{"10.5.4.0/24": {"endpoint": "192.0.2.4:51820"}}', "192.0.2.4", True),
])
def test_mentions_matches_whole_addresses_only(text, address, found):
    assert mentions(text, address) is found


@pytest.fixture
def kernel(monkeypatch):
    """A kernel with exactly the features in the returned set."""
    have: set[str] = set()
    monkeypatch.setattr(kernel_features, "supported", lambda feature: feature in have)
    return have


def test_a_missing_required_feature_is_named(kernel):
    kernel.update({"tun"})
    assert kernel_features.missing(Capabilities(kernel_features=("vxlan", "tun"))) == \
        "this kernel lacks vxlan (probed in a scratch namespace)"


def test_any_of_needs_only_one(kernel):
    caps = Capabilities(kernel_features_any=("wireguard", "tun"))
    assert kernel_features.missing(caps) == "this kernel has none of wireguard, tun (probed in a scratch namespace)"
    kernel.add("tun")
    assert kernel_features.missing(caps) is None
    assert kernel_features.missing(Capabilities()) is None
