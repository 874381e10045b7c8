"""The plugin author's path: a separately installed package found by entry point alone."""

import json
import os
import subprocess
import sys
import time

import pytest
from overlay_core.lab.lab import PREFIX

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


@pytest.mark.netns
@pytest.mark.etcd
def test_agents_drive_the_third_party_backend(make_lab, demo_path, tmp_path):
    lab = make_lab(env={"PYTHONPATH": demo_path})
    lab.up(nodes=2, backend="demo", start_agents=False)
    logs = []
    for node in lab.state.nodes:
        logs.append(str(tmp_path / f"{node.name}.jsonl"))
        lab.start_agent(node, "--reconcile-interval=0.5", "--subnet-lease-ttl=62", "--subnet-lease-renew-margin=1",
                        env={"OVERLAY_DEMO_LOG": logs[-1]})
    lab.wait_ready()

    def events(i):
        with open(logs[i]) as fh:
            return [json.loads(line) for line in fh]

    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and not any(e["event"] == "reconcile" for e in events(0)):
        time.sleep(0.1)
    kinds = [e["event"] for e in events(0)]
    assert kinds[:3] == ["network_config", "lease_request", "lease_acquired"]
    assert "store_in_sync" in kinds and "reconcile" in kinds
    added = [e for e in events(0) + events(1) if e["event"] == "peers_added"]
    assert {s for e in added for s in e["subnets"]} == {lab.readyz(n)[1]["subnet"] for n in lab.state.nodes}
    assert all(d == {"Color": "blue"} for e in added for d in e["data"])  # BackendData round trip
    assert any(e["event"] == "audit_peers_added" for e in events(0))  # observer plugin loaded too
    assert lab.readyz(lab.node(1))[1]["demo_color"] == "blue"
    with open(lab.node(1).subnet_file) as fh:
        assert "FLANNEL_MTU=1490" in fh.read()  # the backend's MTU reached the subnet file

    def wait_for(i, kind, count=1):
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            found = [e for e in events(i) if e["event"] == kind]
            if len(found) >= count:
                return found
            time.sleep(0.1)
        raise AssertionError(f"no {kind} event on node {i + 1}")

    renewed = wait_for(0, "lease_renewed")  # 62 s TTL, 60 s margin: renewal after about 2 s
    assert 0 < renewed[0]["remaining"] <= 62
    key = lab.readyz(lab.node(1))[1]["subnet"].replace("/", "-")
    lab.etcdctl("put", f"{PREFIX}/subnets/{key}", json.dumps(
        {"PublicIP": lab.node(1).ip, "PublicIPv6": None, "BackendType": "demo", "BackendData": {"Color": "red"}}))
    assert wait_for(1, "peers_changed")[0]["data"] == [[{"Color": "blue"}, {"Color": "red"}]]
    lab.etcdctl("put", f"{PREFIX}/subnets/{key}", '{"PublicIP":"192.0.2.99","PublicIPv6":null,"BackendType":"demo"}')
    assert wait_for(0, "lease_lost")[0]["subnet"] == key.replace("-", "/")
    assert wait_for(0, "lease_acquired", 2)[1]["subnet"] != key.replace("-", "/")
    other = lab.readyz(lab.node(2))[1]["subnet"]
    assert lab.stop_agent(lab.node(2)) == 0
    assert events(1)[-1]["event"] == "shutdown"
    lab.etcdctl("del", f"{PREFIX}/subnets/{other.replace('/', '-')}")
    assert [e["subnets"] for e in wait_for(0, "peers_removed")] == [[other]]
