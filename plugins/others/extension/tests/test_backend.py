"""The backend's hooks with real ``sh``: BackendData from PreStartupCommand, PostStartupCommand's
variables, Flannel-compatible leases, and core's backend contract."""

import json

import pytest
from overlay_core import LeaseAttrs, lease_from_kv
from overlay_core.errors import OverlayError
from overlay_core.testing.contract import check_contract, fake_node, peer
from overlay_extension import ExtensionBackend, PeerCommand


def network(**backend) -> str:
    return json.dumps({"Network": "10.5.0.0/16", "Backend": {"Type": "extension", **backend}})


def backend(tmp_path, **options) -> ExtensionBackend:
    node, services = fake_node(network(**options), tmp_path)
    return ExtensionBackend(node, services)


async def test_pre_startup_output_is_the_backend_data_string(tmp_path):
    be = backend(tmp_path, PreStartupCommand="printf '  aa:bb:cc:dd:ee:ff\\n'; echo noise >&2")
    request = await be.overlay_lease_request(be.node)
    assert (request.backend_type, request.mtu) == ("extension", 1500)
    assert request.backend_data == "aa:bb:cc:dd:ee:ff\nnoise"  # combined, trimmed: as Flannel
    attrs = LeaseAttrs(be.node.iface.public_ip, None, request.backend_type, request.backend_data)
    assert attrs.to_json() == ('{"PublicIP":"192.0.2.1","PublicIPv6":null,"BackendType":"extension",'
                               '"BackendData":"aa:bb:cc:dd:ee:ff\\nnoise"}')


async def test_without_pre_startup_no_backend_data(tmp_path):
    be = backend(tmp_path, SubnetAddCommand="true")
    request = await be.overlay_lease_request(be.node)
    assert request.backend_data is None
    assert "BackendData" not in LeaseAttrs(be.node.iface.public_ip, None, "extension", None).to_json()


async def test_failing_pre_startup_stops_with_one_line(tmp_path):
    be = backend(tmp_path, PreStartupCommand="echo no vxlan module >&2; exit 7")
    with pytest.raises(OverlayError) as err:
        await be.overlay_lease_request(be.node)
    assert str(err.value) == ("extension: PreStartupCommand failed (exit 7: no vxlan module); fix the command "
                              "in the network config (it runs before the lease is taken)")


async def test_post_startup_gets_this_nodes_variables(tmp_path):
    out = tmp_path / "post.env"
    script = f'echo "$NETWORK $SUBNET [$IPV6SUBNET] $PUBLIC_IP [$PUBLIC_IPV6]" > {out}'
    be = backend(tmp_path, PostStartupCommand=script)
    lease = peer(1, "extension")
    await be.overlay_lease_acquired(lease, be.node)
    assert out.read_text() == "10.5.0.0/16 10.5.1.0/24 [] 192.0.2.1 []\n"


async def test_failing_post_startup_stops_with_one_line(tmp_path):
    be = backend(tmp_path, PostStartupCommand="exit 3")
    with pytest.raises(OverlayError, match=r"^extension: PostStartupCommand failed for subnet 10.5.1.0/24 at "
                                           r"192.0.2.1 \(exit 3, no output\); fix the command"):
        await be.overlay_lease_acquired(peer(1, "extension"), be.node)


def test_a_flannel_nodes_lease_is_understood(tmp_path):
    # A lease value as Flannel's extension backend writes it (Go escapes '&' in JSON strings).
    lease = lease_from_kv("10.5.7.0-24", '{"PublicIP":"192.0.2.7","PublicIPv6":null,"BackendType":"extension",'
                                         '"BackendData":"key \\u0026 mac"}')
    be = backend(tmp_path, SubnetAddCommand="true")
    assert be.accepts(lease)
    plan = be.plan(lease)
    assert plan.objects == (PeerCommand("10.5.7.0-24", "10.5.7.0/24", "", "192.0.2.7", "", "key & mac"),)


def test_peer_with_foreign_backend_data_is_skipped_with_the_reason(tmp_path):
    be = backend(tmp_path, SubnetAddCommand="true")
    plan = be.plan(peer(2, "extension", {"VtepMAC": "aa"}))
    assert plan.mode == "skipped" and plan.objects == ()
    assert plan.reason.startswith("its BackendData is a JSON dict, not the string an extension node writes")


async def test_peer_status_reports_failing_add_commands(tmp_path):
    be = backend(tmp_path, SubnetAddCommand='[ "$SUBNET" != 10.5.3.0/24 ] || { echo nope; exit 1; }')
    await be.overlay_store_in_sync([peer(2, "extension"), peer(3, "extension")])
    status = be.overlay_peer_status()
    assert status["10.5.2.0-24"].state == "programmed"
    failing = status["10.5.3.0-24"]
    assert failing.state == "failing"
    assert (failing.detail["command"], failing.detail["attempts"], failing.detail["error"]) == (
        "SubnetAddCommand", 1, "exit 1: nope")
    assert be.overlay_report()["failing_commands"] == 1


async def test_backend_contract(tmp_path):
    await check_contract(ExtensionBackend, network(SubnetAddCommand="true", SubnetRemoveCommand="true"), tmp_path,
                         peer_data=lambda n: f"data-{n}")


def test_config_warnings_name_what_will_not_happen(tmp_path, caplog):
    be = backend(tmp_path, ShutdownCommand="ip link del flannel-vxlan")
    be.overlay_network_config(be.node.config, be.node)
    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert warnings == [
        "extension: no SubnetAddCommand: peers' subnets are not connected by this node",
        "extension: ShutdownCommand is not run (Flannel never ran it either): the node's state stays when the "
        "agent stops; remove it by hand when retiring the node",
    ]
