"""status, doctor and cleanup: the pure parts (rendering, judging rules, MTUs, processes, records)."""

import json

import pytest
from overlay_core.backend import Capabilities
from overlay_core.config import parse_config
from overlay_core.dataplane.device_record import RecordedDevice, merge_record, read_record
from overlay_core.dataplane.links import LinkInfo, Links
from overlay_core.ops import doctor, nft_inspect, probes, status
from overlay_core.ops.context import config_from_subnet_file

FACTS = {
    "phase": "running", "backend": "wireguard", "public_ip": "192.0.2.1", "subnet": "10.5.1.0/24",
    "ipv6_subnet": None, "reservation": False, "lease_expires_at": 1000.0 + 3 * 3600 + 120,
    "store": {"connected": True, "since": 1.0, "endpoints": "http://192.0.2.100:2379", "revision": 42,
              "watch_lag": 3},
    "peer_leases": {"10.5.2.0-24": {"subnet": "10.5.2.0/24", "ipv6_subnet": None, "public_ip": "192.0.2.2"}},
    "peer_status": {"10.5.2.0-24": {"state": "programmed", "mode": "wireguard", "handshake_age": 12.5},
                    "10.5.3.0-24": {"state": "skipped", "mode": "skipped", "reason": "no key"}},
}


def test_status_summary_and_table():
    info = status.summary(True, FACTS, now=1000.0)
    assert info["lease"]["expires_in"] == 3 * 3600 + 120
    assert info["store"] == {"endpoints": "http://192.0.2.100:2379", "connected": True, "since": 1.0,
                             "revision": 42, "watch_lag": 3}
    lines = status.render(info)
    assert lines[0] == "agent    ready"
    assert "10.5.1.0/24  backend wireguard  public IP 192.0.2.1  expires in 3h02m" in lines[1]
    assert lines[2].endswith("connected  revision 42  watch lag 3")
    table = lines[4:]
    assert table[0].split() == ["SUBNET", "PUBLIC", "IP", "STATE", "HANDSHAKE", "AGE", "MODE", "REASON"]
    assert table[1].split() == ["10.5.2.0/24", "192.0.2.2", "programmed", "12.5", "wireguard", "-"]
    assert table[2].split() == ["10.5.3.0-24", "-", "skipped", "-", "skipped", "no", "key"]  # status without lease


def test_status_without_watch_lag_or_peers_and_not_ready():
    facts = {**FACTS, "store": {"connected": False, "endpoints": "e", "revision": 0}, "peer_leases": {},
             "peer_status": {}, "reservation": True, "not_ready": "cloud API unreachable"}
    lines = status.render(status.summary(False, facts, now=0.0))
    assert lines[0] == "agent    NOT READY (cloud API unreachable)"
    assert "expires never (reservation)" in lines[1] and "DISCONNECTED" in lines[2] and "watch lag" not in lines[2]
    assert lines[-1] == "peers    none"


def test_status_shows_supervised_helpers():
    facts = {**FACTS, "helpers": {"wireguard-go-flannel-wg": {"pid": 7, "state": "running", "restarts": 1,
                                                              "since": 0.0, "adopted": True}}}
    lines = status.render(status.summary(True, facts, now=0.0))
    assert lines[3] == "helper   wireguard-go-flannel-wg  running  pid 7  1 restart  (adopted)"


@pytest.mark.parametrize("seconds, shown", [(5, "5s"), (65, "1m05s"), (3720, "1h02m"), (90000, "1d01h"), (-5, "-5s")])
def test_duration(seconds, shown):
    assert status.duration(seconds) == shown


def test_mtu_checks():
    ok = doctor.mtu_checks("eth0", 1500, 1450, 1500, {"cni0": 1450, "veth1": 1450})
    assert [c.level for c in ok] == ["ok"] and "2 pod interfaces" in ok[0].message
    over = doctor.mtu_checks("eth0", 1400, 1450, 1500, {})
    assert [c.level for c in over] == ["fail"] and "exceeds eth0's MTU 1400" in over[0].message
    shrunk = doctor.mtu_checks("eth0", 1460, 1450, 1500, {})
    assert [c.level for c in shrunk] == ["fail"] and "fell from 1500" in shrunk[0].message
    pods = doctor.mtu_checks("eth0", 1500, 1450, None, {"cni0": 1450, "veth2": 1500})
    assert [c.level for c in pods] == ["fail"] and "veth2 1500" in pods[0].message
    assert [c.level for c in doctor.mtu_checks("eth0", 1500, None, None, {})] == ["warn"]


def test_pod_interfaces_reads_the_bridge_and_its_ports(tmp_path):
    for name, mtu in (("cni0", 1450), ("veth1", 1500), ("eth0", 9000)):
        (tmp_path / name).mkdir()
        (tmp_path / name / "mtu").write_text(f"{mtu}\n")
    (tmp_path / "cni0" / "brif").mkdir()
    (tmp_path / "cni0" / "brif" / "veth1").mkdir()
    assert doctor.pod_interfaces("cni0", str(tmp_path)) == {"cni0": 1450, "veth1": 1500}
    assert doctor.pod_interfaces("nothing", str(tmp_path)) == {}


def ruleset(*items):
    return {"nftables": [{"metainfo": {}}, *items]}


def chain(family, table, name, hook, prio, policy="accept"):
    return {"chain": {"family": family, "table": table, "name": name, "hook": hook, "prio": prio, "policy": policy}}


def rule(family, table, name, *expr, handle=9):
    return {"rule": {"family": family, "table": table, "chain": name, "handle": handle, "expr": list(expr)}}


def match(proto, field, right, op="=="):
    return {"match": {"op": op, "left": {"payload": {"protocol": proto, "field": field}}, "right": right}}


DROP = {"drop": None}
NETWORK = parse_config('{"Network": "10.5.0.0/16"}').network
OURS = nft_inspect.BaseChain("ip", "flannel-ipv4", "forward", "forward", 0, "accept")


def test_forward_drops_of_the_network_fail_and_other_drops_are_ignored_or_warned():
    rs = ruleset(
        chain("ip", "flannel-ipv4", "forward", "forward", 0),
        chain("inet", "x", "early", "forward", -10),
        chain("inet", "x", "late", "forward", 10, policy="drop"),
        chain("ip6", "y", "v6only", "forward", -10, policy="drop"),
        chain("inet", "x", "in", "input", 0),
        rule("inet", "x", "early", match("ip", "daddr", {"prefix": {"addr": "10.5.0.0", "len": 16}}), DROP, handle=1),
        rule("inet", "x", "early", match("ip", "saddr", "192.0.2.9"), DROP, handle=2),  # not our network
        rule("inet", "x", "early", {"match": {"op": "==", "left": {"meta": {"key": "iifname"}}, "right": "eth9"}},
             DROP, handle=3),
        rule("inet", "x", "early", {"accept": None}, handle=4),
        rule("ip", "flannel-ipv4", "forward", DROP, handle=5),  # ours: skipped
        rule("inet", "x", "in", DROP, handle=6),  # another hook
    )
    found = nft_inspect.drops(rs, "forward", 4, OURS, {("ip", "flannel-ipv4")}, network=NETWORK)
    assert [(f.level, f.text.split(" of chain")[0]) for f in found if f.text.startswith("rule")] == [
        ("fail", "rule 1"), ("warn", "rule 3")]
    assert "before ours" in found[1].text or "before ours" in found[2].text
    policy = [f for f in found if "policy" in f.text]
    assert len(policy) == 1 and "inet x late" in policy[0].text and "after ours" in policy[0].text


@pytest.mark.parametrize("right, level", [
    (8472, "fail"), ({"set": [1, 8472]}, "fail"), ({"range": [8000, 9000]}, "fail"), (51820, None),
    ({"set": [1, 2]}, None)])
def test_input_drops_of_the_backend_port(right, level):
    rs = ruleset(chain("inet", "x", "in", "input", 0), rule("inet", "x", "in", match("udp", "dport", right), DROP))
    found = nft_inspect.drops(rs, "input", 4, None, set(), port=8472)
    assert [f.level for f in found] == ([level] if level else [])


def test_a_tcp_port_drop_is_not_ours_and_a_bare_drop_is():
    tcp = ruleset(chain("inet", "x", "in", "input", 0), rule("inet", "x", "in", match("tcp", "dport", 8472), DROP))
    assert nft_inspect.drops(tcp, "input", 4, None, set(), port=8472) == []
    bare = ruleset(chain("ip", "x", "in", "input", 0), rule("ip", "x", "in", {"reject": None}))
    assert [f.level for f in nft_inspect.drops(bare, "input", 4, None, set(), port=8472)] == ["fail"]


@pytest.mark.parametrize("argv, program", [
    (["/usr/bin/python3", "-m", "overlay_core", "run", "--iface=eth0"], "overlay-core run"),
    (["/usr/local/bin/overlay-core", "--etcd-endpoints=http://192.0.2.100:2379"], "overlay-core run"),
    (["/opt/bin/flanneld", "--iface=eth0"], "flanneld"),
    (["/usr/local/bin/overlay-core", "doctor"], None),
    (["ip", "netns", "exec", "ovo-x", "python", "-m", "overlay_core", "run"], None),  # execs into the agent
    (["python", "-m", "pytest", "run"], None),
    ([], None),
])
def test_agent_processes_are_recognised(argv, program):
    assert probes.classify(argv) == program


def test_rp_filter_takes_the_larger_value():
    assert probes.effective_rp_filter("1", "0") == 1
    assert probes.effective_rp_filter("0", "2") == 2
    assert probes.effective_rp_filter(None, None) is None


def test_backend_port_from_capabilities_and_config():
    caps = Capabilities(udp_port=8472, udp_port_key="Port")
    assert doctor.backend_port(parse_config('{"Network": "10.5.0.0/16", "Backend": {"Type": "vxlan"}}'), caps) == 8472
    assert doctor.backend_port(parse_config(
        '{"Network": "10.5.0.0/16", "Backend": {"Type": "vxlan", "Port": 4789}}'), caps) == 4789
    assert doctor.backend_port(parse_config('{"Network": "10.5.0.0/16"}'), Capabilities()) is None


def test_exit_status_is_the_worst_level():
    checks = [doctor.Check("a", "ok", "x"), doctor.Check("b", "warn", "y", "do z")]
    assert doctor.exit_status(checks) == 1 and doctor.exit_status([]) == 0
    assert doctor.as_json(checks)["status"] == "warn" and checks[1].line() == "warn  b: y; do z"


def test_device_record_merges_and_skips_garbage(tmp_path):
    path = tmp_path / "devices.json"
    assert read_record(path) == []
    merge_record(path, {RecordedDevice("flannel.1", "vxlan")})
    merge_record(path, {RecordedDevice("flannel-wg", "wireguard"), RecordedDevice("flannel.1", "vxlan")})
    assert read_record(path) == [RecordedDevice("flannel-wg", "wireguard"), RecordedDevice("flannel.1", "vxlan")]
    path.write_text("{not json")
    assert read_record(path) == []


class AnsweringNetlink:
    """``Links``' netlink: every call answers ``answer`` (what read_link would return)."""

    def __init__(self, answer):
        self.answer = answer

    async def call(self, fn):
        return self.answer


async def test_links_record_only_devices_they_own(tmp_path):
    owned: set[int] = set()
    record = tmp_path / "state" / "devices.json"
    links = Links(AnsweringNetlink(LinkInfo(7, "flannel0", None, "tun")), owned, record)
    info = await links.get("flannel0")
    await links.save_record()
    assert not record.exists()  # looked at, not owned
    links.own("tun", info.index)
    await links.save_record()
    assert json.loads(record.read_text()) == {"devices": [{"name": "flannel0", "kind": "tun"}]}
    record.unlink()
    links.own("tun", info.index)
    await links.save_record()
    assert not record.exists()  # written once per device


def test_config_from_subnet_file(tmp_path):
    path = tmp_path / "subnet.env"
    assert config_from_subnet_file(str(path)) is None
    path.write_text("FLANNEL_NETWORK=10.5.0.0/16\nFLANNEL_SUBNET=10.5.1.1/24\nFLANNEL_IPV6_NETWORK=2001:db8:10::/48\n")
    config = config_from_subnet_file(str(path))
    assert str(config.network) == "10.5.0.0/16" and str(config.ipv6_network) == "2001:db8:10::/48"


async def test_doctor_names_a_recorded_device_another_program_replaced(tmp_path):
    from overlay_core.agent_options import AgentOptions
    from overlay_core.ops.context import StoreView

    merge_record(tmp_path / "devices.json", {RecordedDevice("flannel.1", "vxlan")})
    view = doctor.NodeView(AgentOptions(state_dir=str(tmp_path)), StoreView(), None, {}, None, None,
                           agents=[probes.AgentProcess(42, "overlay-core run")])
    await doctor._recorded_devices(view, AnsweringNetlink(LinkInfo(5, "flannel.1", None, "bridge")))
    assert view.devices == [] and view.replaced == ["flannel.1 (now bridge, overlay made vxlan)"]
    [check] = doctor.check_agents(view)
    assert check.level == "warn" and "replaced by another program: flannel.1" in check.message
    view.replaced = []
    await doctor._recorded_devices(view, AnsweringNetlink(LinkInfo(5, "flannel.1", None, "vxlan")))
    assert view.devices == ["flannel.1"] and doctor.check_agents(view)[0].level == "ok"
