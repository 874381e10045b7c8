"""The extension target: desired state = peers whose add command succeeded, retried by converge."""

import logging

from overlay_core import reconcile
from overlay_core.testing.contract import peer
from overlay_extension import CommandResult, CommandTarget, ExtensionOptions, PeerCommand


class Script:
    """A stand-in for ``run_command`` recording (command, SUBNET, PUBLIC_IP, stdin); fails while told to."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, str, str, str]] = []
        self.failing: set[str] = set()

    async def __call__(self, command, env, stdin=""):
        self.calls.append((command, env["SUBNET"], env["PUBLIC_IP"], stdin))
        if command in self.failing:
            return CommandResult(False, "RTNETLINK answers: File exists", "exit 2")
        return CommandResult(True, "", "exit 0")


def make(add="add", remove="remove"):
    script = Script()
    return CommandTarget(ExtensionOptions(subnet_add=add, subnet_remove=remove), run=script), script


def obj(n, data="aa:bb"):
    return PeerCommand.of(peer(n, "extension", data))


async def test_add_then_remove_with_flannels_variables():
    target, script = make()
    await reconcile.converge(target, [obj(2)])
    await reconcile.converge(target, [])
    assert script.calls == [("add", "10.5.2.0/24", "192.0.2.2", "aa:bb"),
                            ("remove", "10.5.2.0/24", "192.0.2.2", "aa:bb")]
    assert target.added == {}


async def test_failed_add_is_retried_by_each_converge_until_it_succeeds(caplog):
    target, script = make()
    script.failing.add("add")
    caplog.set_level(logging.INFO, "overlay.extension")
    for _ in range(5):
        assert await reconcile.converge(target, [obj(2)]) == (1, 0)
    assert target.failing["10.5.2.0-24"].attempts == 5 and target.added == {}
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert [w.split("(attempt ")[1][0] for w in warnings] == ["1", "2", "4"]  # not every attempt
    assert warnings[0] == ("extension: SubnetAddCommand for 10.5.2.0/24 at 192.0.2.2 failed (attempt 1; retried "
                           "at every reconcile): exit 2: RTNETLINK answers: File exists")
    script.failing.clear()
    assert await reconcile.converge(target, [obj(2)]) == (1, 0)
    assert await reconcile.converge(target, [obj(2)]) == (0, 0)  # added now: nothing left to do
    assert "10.5.2.0-24" in target.added and target.failing == {}
    assert "succeeded after 5 failed attempts" in caplog.text


async def test_peer_never_added_gets_no_remove_command():
    target, script = make()
    script.failing.add("add")
    await target.apply([obj(2)], [])
    await target.apply([], [obj(2)])
    assert [c[0] for c in script.calls] == ["add"] and target.failing == {}


async def test_failed_removal_is_retried():
    target, script = make()
    await target.apply([obj(2)], [])
    script.failing.add("remove")
    assert await target.apply([], [obj(2)]) == 1
    assert "10.5.2.0-24" in target.added
    script.failing.clear()
    assert await reconcile.converge(target, []) == (0, 1)
    assert target.added == {} and [c[0] for c in script.calls] == ["add", "remove", "remove"]


async def test_changed_peer_removed_with_old_data_then_added_with_new():
    target, script = make()
    await target.apply([obj(2, "old")], [])
    await target.apply([obj(2, "new")], [])
    assert [(c[0], c[3]) for c in script.calls] == [("add", "old"), ("remove", "old"), ("add", "new")]
    assert target.added["10.5.2.0-24"].stdin == "new"


async def test_without_commands_peers_are_recorded_only():
    target, script = make(add="", remove="")
    await reconcile.converge(target, [obj(2), obj(3)])
    assert set(target.added) == {"10.5.2.0-24", "10.5.3.0-24"} and script.calls == []


async def test_peer_back_unchanged_before_its_removal_succeeded_is_connected_again():
    target, script = make()
    await target.apply([obj(2)], [])
    script.failing.add("remove")
    await target.apply([], [obj(2)])
    assert target.failing["10.5.2.0-24"].option == "SubnetRemoveCommand"
    assert await reconcile.converge(target, [obj(2)]) == (0, 0)  # still connected: nothing to run
    await target.apply([obj(2)], [])
    assert target.failing == {} and [c[0] for c in script.calls] == ["add", "remove"]
