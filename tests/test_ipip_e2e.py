"""ipip above the kernel, end to end. The data plane (ping matrix, repair, restart) is in
test_routing_backends_e2e.py and runs wherever the kernel has the ipip module."""

import pytest
from overlay_lab.lab import PREFIX

from .helpers import kernel_supports

pytestmark = [pytest.mark.netns, pytest.mark.etcd]


def test_missing_kernel_module_is_a_one_line_error(lab):
    if kernel_supports("ipip"):
        pytest.skip("this kernel has ipip: the missing-module error cannot happen here")
    lab.up(nodes=1, backend="ipip", start_agents=False)
    n1 = lab.node(1)
    lab.start_agent(n1)
    assert lab.wait_exit(n1, 20) == 1
    log = open(n1.log).read()
    errors = [line for line in log.splitlines() if line.startswith("overlay-core: error:")]
    assert errors == ["overlay-core: error: this kernel cannot create ipip devices (module ipip missing): "
                      "load it with 'modprobe ipip' or choose another backend"]
    assert "Traceback" not in log


def test_ipv6_config_is_refused(lab):
    lab.up(nodes=1, backend="ipip", start_agents=False)
    lab.etcdctl("put", f"{PREFIX}/config", '{"Network":"10.5.0.0/16","EnableIPv6":true,'
                '"IPv6Network":"2001:db8:10::/48","Backend":{"Type":"ipip"}}')
    n1 = lab.node(1)
    lab.start_agent(n1)
    assert lab.wait_exit(n1, 20) == 1
    assert "overlay-core: error: ipip carries IPv4 only" in open(n1.log).read()
