import os
import stat
from ipaddress import IPv4Address, IPv4Network, IPv6Network

from overlay_core import subnetfile
from overlay_core.config import parse_config
from overlay_core.lease import Lease, LeaseAttrs


def test_render_write_and_read_back(tmp_path):
    cfg = parse_config('{"Network":"10.5.0.0/16","EnableIPv6":true,"IPv6Network":"2001:cafe:42::/56"}')
    lease = Lease(IPv4Network("10.5.72.0/24"), IPv6Network("2001:cafe:42::/64"), LeaseAttrs(IPv4Address("192.0.2.1")))
    text = subnetfile.render(cfg, lease, 1450, False)
    assert text == ("FLANNEL_NETWORK=10.5.0.0/16\nFLANNEL_SUBNET=10.5.72.1/24\n"
                    "FLANNEL_IPV6_NETWORK=2001:cafe:42::/56\nFLANNEL_IPV6_SUBNET=2001:cafe:42::1/64\n"
                    "FLANNEL_MTU=1450\nFLANNEL_IPMASQ=false\n")
    path = tmp_path / "run" / "flannel" / "subnet.env"
    os.umask(0o077)
    try:
        subnetfile.write(str(path), text)
    finally:
        os.umask(0o022)
    assert stat.S_IMODE(path.stat().st_mode) == 0o644 and path.read_text() == text
    assert os.listdir(path.parent) == ["subnet.env"]  # no temp file left behind
    assert subnetfile.previous_subnets(str(path)) == (IPv4Network("10.5.72.0/24"), IPv6Network("2001:cafe:42::/64"))
    assert subnetfile.previous_networks(str(path))[0] == IPv4Network("10.5.0.0/16")


def test_invalid_or_multiple_items_are_ignored(tmp_path):
    path = tmp_path / "subnet.env"
    path.write_text("FLANNEL_SUBNET=10.244.1.0/24,not-a-cidr\nFLANNEL_IPV6_SUBNET=a,b\n")
    assert subnetfile.previous_subnets(str(path)) == (IPv4Network("10.244.1.0/24"), None)
    path.write_text("FLANNEL_SUBNET=10.244.1.0/24,10.244.2.0/24\n")
    assert subnetfile.previous_subnets(str(path)) == (None, None)
    assert subnetfile.previous_subnets(str(tmp_path / "missing")) == (None, None)
