"""Across restarts: peers connected by the previous agent that are gone or changed get their
remove command at the first converge; the others' add command runs again."""

import json
import logging

from overlay_core.testing.contract import fake_node, peer
from overlay_extension import ExtensionBackend

LOG = 'echo "{verb} $SUBNET $PUBLIC_IP $(cat)" >> {log}'


def agent(tmp_path, log):
    config = json.dumps({"Network": "10.5.0.0/16", "Backend": {
        "Type": "extension", "SubnetAddCommand": LOG.format(verb="add", log=log),
        "SubnetRemoveCommand": LOG.format(verb="remove", log=log)}})
    node, services = fake_node(config, tmp_path)
    return ExtensionBackend(node, services)


def lines(log) -> list[str]:
    return log.read_text().splitlines() if log.exists() else []


async def test_peers_gone_while_the_agent_was_down_get_their_remove_command(tmp_path):
    log = tmp_path / "commands.log"
    first = agent(tmp_path, log)
    await first.overlay_store_in_sync([peer(2, "extension", "d2"), peer(3, "extension", "d3"),
                                       peer(5, "extension", "old")])
    record = json.loads((tmp_path / "extension" / "connected.json").read_text())
    assert [p["key"] for p in record["peers"]] == ["10.5.2.0-24", "10.5.3.0-24", "10.5.5.0-24"]
    assert (tmp_path / "extension" / "connected.json").stat().st_mode & 0o077 == 0
    log.unlink()
    # The agent restarts: peer 3 left meanwhile, peer 5 changed its data, peer 4 is new.
    second = agent(tmp_path, log)
    await second.overlay_store_in_sync([peer(2, "extension", "d2"), peer(4, "extension", "d4"),
                                        peer(5, "extension", "new")])
    assert lines(log) == ["remove 10.5.3.0/24 192.0.2.3 d3", "add 10.5.2.0/24 192.0.2.2 d2",
                          "add 10.5.4.0/24 192.0.2.4 d4", "remove 10.5.5.0/24 192.0.2.5 old",
                          "add 10.5.5.0/24 192.0.2.5 new"]
    record = json.loads((tmp_path / "extension" / "connected.json").read_text())
    assert [p["key"] for p in record["peers"]] == ["10.5.2.0-24", "10.5.4.0-24", "10.5.5.0-24"]


async def test_an_unreadable_record_is_ignored_with_one_warning(tmp_path, caplog):
    (tmp_path / "extension").mkdir()
    (tmp_path / "extension" / "connected.json").write_text("{not json")
    log = tmp_path / "commands.log"
    caplog.set_level(logging.WARNING, "overlay.extension")
    await agent(tmp_path, log).overlay_store_in_sync([peer(2, "extension", "d2")])
    assert lines(log) == ["add 10.5.2.0/24 192.0.2.2 d2"]
    assert [r.getMessage() for r in caplog.records] == [
        f"extension: ignoring the record of connected peers {tmp_path}/extension/connected.json (JSONDecodeError): "
        "peers that left while the agent was down get no SubnetRemoveCommand"]
