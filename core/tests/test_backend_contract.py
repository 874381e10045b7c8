"""The backend contract (``overlay_core.testing.contract``) for every in-repo kernel backend."""

import pytest
from overlay_alloc import AllocBackend
from overlay_core.testing.contract import check_contract
from overlay_hostgw import HostGwBackend
from overlay_ipip import IpipBackend
from overlay_vxlan import VxlanBackend


def vxlan_data(n):
    return {"VNI": 1, "VtepMAC": f"02:00:00:00:00:{n:02x}"}


@pytest.mark.parametrize("backend_cls, config, data", [
    (VxlanBackend, '{"Network":"10.5.0.0/16","Backend":{"Type":"vxlan"}}', vxlan_data),
    (VxlanBackend, '{"Network":"10.5.0.0/16","EnableIPv6":true,"IPv6Network":"2001:db8:10::/48",'
                   '"Backend":{"Type":"vxlan"}}', vxlan_data),
    (VxlanBackend, '{"Network":"10.5.0.0/16","Backend":{"Type":"vxlan","DirectRouting":true}}', vxlan_data),
    (HostGwBackend, '{"Network":"10.5.0.0/16","Backend":{"Type":"host-gw"}}', None),
    (IpipBackend, '{"Network":"10.5.0.0/16","Backend":{"Type":"ipip"}}', None),
    (AllocBackend, '{"Network":"10.5.0.0/16","Backend":{"Type":"alloc"}}', None),
], ids=["vxlan", "vxlan-dual", "vxlan-direct", "host-gw", "ipip", "alloc"])
async def test_backend_meets_the_contract(backend_cls, config, data, tmp_path):
    targets = await check_contract(backend_cls, config, tmp_path, data)
    assert bool(targets) == (backend_cls is not AllocBackend)


async def test_the_contract_catches_a_backend_that_forgets_removals(tmp_path):
    class Forgetful(HostGwBackend):
        async def overlay_peers_removed(self, peers):
            return None

    with pytest.raises(AssertionError, match="removed peer leaves no object"):
        await check_contract(Forgetful, '{"Network":"10.5.0.0/16","Backend":{"Type":"host-gw"}}', tmp_path)


async def test_the_contract_catches_an_impure_plan(tmp_path):
    class Impure(HostGwBackend):
        calls = 0

        def plan(self, peer):
            Impure.calls += 1
            plan = super().plan(peer)
            return plan if Impure.calls <= 3 else type(plan)("direct", (), "changed its mind")

    with pytest.raises(AssertionError, match="same twice"):
        await check_contract(Impure, '{"Network":"10.5.0.0/16","Backend":{"Type":"host-gw"}}', tmp_path)
