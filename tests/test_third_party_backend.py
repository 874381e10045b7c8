"""The plugin author's path: a separately installed package found by entry point alone."""

import json
import os
import subprocess
import sys
import time

import pytest
from overlay_lab.lab import PREFIX, Lab

DEMO = os.path.join(os.path.dirname(__file__), "thirdparty", "overlay-demo")


@pytest.fixture(scope="module")
def demo_path(tmp_path_factory):
    """overlay-demo installed into a directory of its own, put on PYTHONPATH by each test."""
    target = tmp_path_factory.mktemp("demo-site")
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation",
                    "--target", str(target), DEMO], check=True, capture_output=True)
    return str(target)


def cli(demo_path, *args, stdin=None):
    env = {**os.environ, "PYTHONPATH": demo_path}
    return subprocess.run([sys.executable, "-m", "overlay_core", *args], env=env, input=stdin,
                          capture_output=True, text=True, timeout=60)


def test_backends_lists_the_installed_package(demo_path):
    out = json.loads(cli(demo_path, "backends", "--json").stdout)
    demo = next(b for b in out["backends"] if b["name"] == "demo")
    assert (demo["distribution"], demo["version"]) == ("overlay-demo", "1.2.3")
    assert [p["name"] for p in out["plugins"]] == ["demo-audit"]
    assert "demo" not in cli("/nonexistent", "backends").stdout  # found through the package alone


def test_config_check_runs_the_plugins_option_checks(demo_path):
    ok = cli(demo_path, "config", "check", "-", stdin='{"Network":"10.5.0.0/16","Backend":{"Type":"Demo"}}')
    assert ok.returncode == 0 and "backend demo" in ok.stdout
    bad = cli(demo_path, "config", "check", "-", stdin='{"Network":"10.5.0.0/16","Backend":{"Type":"demo","Color":3}}')
    assert bad.returncode == 1
    assert bad.stderr == "overlay-core: error: demo backend: Color must be a string, got 3\n"


def _wait_for(events, kind: str, count: int = 1, timeout: float = 20.0) -> list[dict]:
    """The ``kind`` events once there are ``count`` of them (fewer if the timeout passes)."""
    deadline = time.monotonic() + timeout
    while True:
        found = [e for e in events() if e["event"] == kind]
        if len(found) >= count or time.monotonic() >= deadline:
            return found
        time.sleep(0.1)


@pytest.fixture(scope="module")
def story(demo_path, tmp_path_factory):
    """Two agents drive the demo backend through every hook once; what each node's backend
    recorded, and what the node reported, is kept for the ``test_hook_*`` tests below. Each
    step waits (bounded) for its event and goes on either way, so one missing event fails
    only the test of its hook."""
    tmp = tmp_path_factory.mktemp("demo-story")
    lab = Lab(f"t{os.getpid() % 10000}x8000", state_root=str(tmp / "labs"), env={"PYTHONPATH": demo_path})
    logs = [str(tmp / "n1.jsonl"), str(tmp / "n2.jsonl")]

    def events(i):
        with open(logs[i]) as fh:
            return [json.loads(line) for line in fh]

    try:
        lab.up(nodes=2, backend="demo", start_agents=False)
        for node, log in zip(lab.state.nodes, logs):
            lab.start_agent(node, "--reconcile-interval=0.5", "--subnet-lease-ttl=62",
                            "--subnet-lease-renew-margin=1", env={"OVERLAY_DEMO_LOG": log})
        lab.wait_ready()
        seen = {"report": lab.readyz(lab.node(1))[1], "subnets": {lab.readyz(n)[1]["subnet"] for n in lab.state.nodes}}
        with open(lab.node(1).subnet_file) as fh:
            seen["subnet_file"] = fh.read()
        _wait_for(lambda: events(0), "reconcile")
        _wait_for(lambda: events(0), "lease_renewed")  # 62 s TTL, 60 s margin: renewal after about 2 s
        key = lab.readyz(lab.node(1))[1]["subnet"].replace("/", "-")
        seen["first_subnet"] = key.replace("-", "/")
        lab.etcdctl("put", f"{PREFIX}/subnets/{key}", json.dumps(  # node 1 changes its BackendData
            {"PublicIP": lab.node(1).ip, "PublicIPv6": None, "BackendType": "demo", "BackendData": {"Color": "red"}}))
        _wait_for(lambda: events(1), "peers_changed")
        lab.etcdctl("put", f"{PREFIX}/subnets/{key}",  # another node takes node 1's subnet
                    '{"PublicIP":"192.0.2.99","PublicIPv6":null,"BackendType":"demo"}')
        _wait_for(lambda: events(0), "lease_acquired", 2)
        seen["other_subnet"] = lab.readyz(lab.node(2))[1]["subnet"]
        seen["stop_status"] = lab.stop_agent(lab.node(2))
        lab.etcdctl("del", f"{PREFIX}/subnets/{seen['other_subnet'].replace('/', '-')}")  # node 2 left for good
        _wait_for(lambda: events(0), "peers_removed")
        seen["events"] = [events(0), events(1)]
        yield seen
    finally:
        lab.down()


def _of(story, node: int, kind: str) -> list[dict]:
    return [e for e in story["events"][node] if e["event"] == kind]


@pytest.mark.netns
@pytest.mark.etcd
class TestHooksDriveTheThirdPartyBackend:
    def test_hook_overlay_network_config(self, story):
        assert story["events"][0][0] == {"event": "network_config", "network": "10.5.0.0/16", "color": "blue"}

    def test_hook_overlay_lease_request(self, story):
        assert [e["event"] for e in story["events"][0][1:3]] == ["lease_request", "lease_acquired"]
        assert "FLANNEL_MTU=1490" in story["subnet_file"]  # the requested MTU reached the subnet file

    def test_hook_overlay_lease_acquired(self, story):
        acquired = [e["subnet"] for e in _of(story, 0, "lease_acquired")]
        assert acquired[0] == story["first_subnet"] and len(acquired) == 2 and acquired[1] != acquired[0]

    def test_hook_overlay_lease_renewed(self, story):
        renewed = _of(story, 0, "lease_renewed")
        assert renewed and 0 < renewed[0]["remaining"] <= 62

    def test_hook_overlay_lease_lost(self, story):
        assert [e["subnet"] for e in _of(story, 0, "lease_lost")] == [story["first_subnet"]]

    def test_hook_overlay_peers_added(self, story):
        added = _of(story, 0, "peers_added") + _of(story, 1, "peers_added")
        assert {s for e in added for s in e["subnets"]} >= story["subnets"]
        assert _of(story, 0, "peers_added")[0]["data"] == [{"Color": "blue"}]  # BackendData round trip
        assert any(e["event"] == "audit_peers_added" for e in story["events"][0])  # observer plugin too

    def test_hook_overlay_peers_changed(self, story):
        assert _of(story, 1, "peers_changed")[0]["data"] == [[{"Color": "blue"}, {"Color": "red"}]]

    def test_hook_overlay_peers_removed(self, story):
        assert [e["subnets"] for e in _of(story, 0, "peers_removed")] == [[story["other_subnet"]]]

    def test_hook_overlay_store_in_sync(self, story):
        syncs = _of(story, 0, "store_in_sync")
        assert syncs and syncs[0]["initial"] is True and all(e["initial"] is False for e in syncs[1:])

    def test_hook_overlay_reconcile(self, story):
        assert _of(story, 0, "reconcile")

    def test_hook_overlay_report(self, story):
        assert story["report"]["demo_color"] == "blue"

    def test_hook_overlay_shutdown(self, story):
        assert story["stop_status"] == 0 and story["events"][1][-1]["event"] == "shutdown"
