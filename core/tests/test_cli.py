import subprocess
import sys

import pytest
from overlay_core import cli
from overlay_core.errors import OverlayError


def resolve(argv, env=None):
    parser = cli.build_parser()
    ns = parser.parse_args(["run", *argv])
    return cli._resolve(ns, env or {})


def test_defaults_are_flannels():
    values = resolve([])
    assert values["etcd_endpoints"] == "http://127.0.0.1:4001,http://127.0.0.1:2379"
    assert values["etcd_prefix"] == "/coreos.com/network" and values["subnet_file"] == "/run/flannel/subnet.env"
    assert values["subnet_lease_renew_margin"] == 60 and values["iptables_forward_rules"] is True
    assert values["ip_masq"] is False and values["healthz_port"] == 0 and values["iface"] == []


def test_go_style_flags_and_env_precedence():
    values = resolve(["-etcd-prefix=/x", "--ip-masq", "--iptables-forward-rules=false", "--iface", "eth0",
                      "--iface=192.0.2.1", "-v", "3"],
                     {"FLANNELD_ETCD_PREFIX": "/env", "FLANNELD_HEALTHZ_PORT": "8471", "FLANNELD_IFACE": "eth9"})
    assert values["etcd_prefix"] == "/x"  # command line wins
    assert values["healthz_port"] == 8471  # env fills what the command line left out
    assert values["ip_masq"] is True and values["iptables_forward_rules"] is False
    assert values["iface"] == ["eth0", "192.0.2.1"] and values["v"] == 3


def test_bad_env_value_is_a_one_line_error():
    with pytest.raises(OverlayError, match="FLANNELD_HEALTHZ_PORT='x' is not a valid healthz-port"):
        resolve([], {"FLANNELD_HEALTHZ_PORT": "x"})


def test_options_are_built_and_validated():
    opts = cli.build_options(resolve(["--etcd-endpoints=http://a:1,https://b:2", "--public-ip=192.0.2.5"]))
    assert opts.etcd.endpoints == ("http://a:1", "https://b:2") and opts.etcd.secure
    assert opts.iface.public_ip == "192.0.2.5"
    opts.renew_margin = 1440
    with pytest.raises(OverlayError, match="out of range"):
        opts.validate()


def run(*args, stdin=None):
    return subprocess.run([sys.executable, "-m", "overlay_core", *args], input=stdin, capture_output=True,
                          text=True, timeout=60)


def test_config_check_reports_and_fails_in_one_line(tmp_path):
    ok = run("config", "check", "-", stdin='{"Network":"10.5.0.0/16","Backend":{"Type":"alloc"}}')
    assert ok.returncode == 0 and "10.5.1.0 to 10.5.255.0 (255 nodes)" in ok.stdout
    bad = run("config", "check", str(tmp_path / "missing.json"))
    assert bad.returncode == 1 and bad.stderr.startswith("overlay-core: error: cannot read")
    bad = run("config", "check", "-", stdin='{"Network":"10.5.0.0/16","SubnetLen":31}')
    assert bad.stderr == "overlay-core: error: SubnetLen must be less than /31\n"


def test_version_and_flanneld_style_invocation():
    assert run("--version").stdout.strip() == "overlay-core 0.1.0"
    bad = run("--subnet-lease-renew-margin=5000")  # flags only: treated as "run"
    assert bad.returncode == 1 and "overlay-core: error: --subnet-lease-renew-margin 5000" in bad.stderr
    assert "Traceback" not in bad.stderr
