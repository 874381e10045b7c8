from ipaddress import IPv4Network, IPv6Network

from overlay_core.dataplane.firewall import FamilyRules, iptables_payload, nft_commands


def test_iptables_payload_is_flannels_rules():
    rules = FamilyRules(IPv4Network("10.42.0.0/16"), IPv4Network("10.42.3.0/24"), True, True)
    payload = iptables_payload(rules)
    nat = payload["nat"].splitlines()
    assert nat[:2] == ["*nat", ":FLANNEL-POSTRTG - [0:0]"] and nat[-1] == "COMMIT"
    assert ('-A FLANNEL-POSTRTG -s 10.42.0.0/16 ! -d 224.0.0.0/4 -m comment --comment "flanneld masq" '
            '-j MASQUERADE --random-fully') in nat
    assert '-A FLANNEL-POSTRTG ! -s 10.42.0.0/16 -d 10.42.3.0/24 -m comment --comment "flanneld masq" -j RETURN' in nat
    assert payload["filter"].splitlines()[2] == (
        '-A FLANNEL-FWD -s 10.42.0.0/16 -m comment --comment "flanneld forward" -j ACCEPT')


def test_nft_transaction_replaces_the_whole_table_atomically():
    v6 = FamilyRules(IPv6Network("fd00:10::/56"), IPv6Network("fd00:10:0:3::/64"), True, False, False)
    cmds = nft_commands(v6)
    assert cmds[:3] == [{"add": {"table": {"family": "ip6", "name": "flannel-ipv6"}}},
                        {"delete": {"table": {"family": "ip6", "name": "flannel-ipv6"}}},
                        {"add": {"table": {"family": "ip6", "name": "flannel-ipv6"}}}]
    rules = [c["add"]["rule"] for c in cmds if "rule" in c.get("add", {})]
    assert len(rules) == 6 and all(r["chain"] == "postrtg" for r in rules)
    assert rules[4]["expr"][1]["match"]["right"] == {"prefix": {"addr": "ff00::", "len": 8}}
    assert rules[4]["expr"][-1] == {"masquerade": None}  # fully-random disabled
    forward_only = nft_commands(FamilyRules(IPv4Network("10.0.0.0/8"), IPv4Network("10.0.1.0/24"), False, True))
    assert [c["add"]["chain"]["name"] for c in forward_only if "chain" in c.get("add", {})] == ["forward"]
