"""The agent's /readyz verdict: a plugin's ``not_ready`` reason makes the node not ready."""

from types import SimpleNamespace

from overlay_core import hookimpl
from overlay_core.agent import Agent, AgentOptions


class Reporter:
    def __init__(self) -> None:
        self.reason = None

    @hookimpl
    def overlay_report(self):
        return {"not_ready": self.reason} if self.reason else {"cloud": "fine"}


def test_not_ready_from_a_plugin_turns_readyz_to_503_with_the_reason():
    agent = Agent(AgentOptions())
    try:
        reporter = Reporter()
        agent.plugins.register(reporter, name="reporter")
        agent.node = SimpleNamespace(config=SimpleNamespace(backend_type="toy"), iface=SimpleNamespace(
            name="eth0", mtu=1500, public_ip="192.0.2.1", public_ipv6=None), lease=None, mtu=1450)
        agent.synced = agent.subnet_file_written = True
        ready, facts = agent.report()
        assert ready and facts["cloud"] == "fine"
        assert facts["iface"] == {"name": "eth0", "mtu": 1500} and facts["store"]["revision"] == 0
        reporter.reason = "route table rtb-1 is full"
        ready, facts = agent.report()
        assert not ready and facts["not_ready"] == "route table rtb-1 is full"
        assert agent.metrics.ready._value.get() == 0
    finally:
        agent.netlink.close()
        agent.store.close()
