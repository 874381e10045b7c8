import json

import pytest
from overlay_core.config import parse_config
from overlay_core.errors import ConfigError


def test_v4_defaults_golden():
    c = parse_config('{ "network": "10.3.0.0/16" }')
    assert (str(c.ipv4.network), c.ipv4.subnet_len) == ("10.3.0.0/16", 24)
    assert (str(c.ipv4.subnet_min), str(c.ipv4.subnet_max)) == ("10.3.1.0", "10.3.255.0")
    assert c.ipv6 is None


def test_v6_defaults_golden():
    c = parse_config('{ "enableIPv6": true, "ipv6Network": "fc00::/48", "enableIPv4": false }')
    assert c.ipv4 is None and c.ipv6.subnet_len == 64
    assert (str(c.ipv6.subnet_min), str(c.ipv6.subnet_max)) == ("fc00:0:0:1::", "fc00:0:0:ffff::")


def test_explicit_values_preserved():
    c = parse_config('{"Network":"10.3.0.0/16","SubnetMin":"10.3.5.0","SubnetMax":"10.3.8.0","SubnetLen":28}')
    assert (c.ipv4.subnet_len, str(c.ipv4.subnet_min), str(c.ipv4.subnet_max)) == (28, "10.3.5.0", "10.3.8.0")
    c6 = parse_config('{"EnableIPv6":true,"Network":"10.0.0.0/8","IPv6Network":"fc00::/48",'
                      '"IPv6SubnetLen":124,"IPv6SubnetMin":"fc00:0:0:1::","IPv6SubnetMax":"fc00:0:0:f::"}')
    assert c6.ipv6.subnet_len == 124 and str(c6.ipv6.subnet_max) == "fc00:0:0:f::"


def test_small_network_gets_prefix_plus_two():
    c = parse_config('{"Network":"10.0.0.0/26"}')
    assert c.ipv4.subnet_len == 28 and c.ipv4.capacity == 3  # first subnet skipped, last kept


def test_missing_backend_is_vxlan_and_type_is_case_insensitive():
    assert parse_config('{"Network":"10.0.0.0/8"}').backend_type == "vxlan"
    c = parse_config('{"network":"10.0.0.0/8","BACKEND":{"TYPE":"Host-GW","Port":1}}')
    assert c.backend_type == "host-gw" and c.backend_option("port") == 1


def test_host_bits_are_masked():
    assert str(parse_config('{"Network":"10.5.3.7/16"}').ipv4.network) == "10.5.0.0/16"


@pytest.mark.parametrize(
    "text, message",
    [
        ("{", "not valid JSON"),
        ("[]", "must be a JSON object"),
        ("{}", "please define a correct Network"),
        ('{"Network":"0.0.0.0/0"}', "please define a correct Network"),
        ('{"Network":"fc00::/48"}', "must be an IPv4 CIDR"),
        ('{"Network":"10.5.0.0/33"}', "not a valid CIDR"),
        ('{"Network":"10.0.0.0/29"}', "too small"),
        ('{"Network":"10.0.0.0/16","SubnetLen":31}', "less than /31"),
        ('{"Network":"10.0.0.0/16","SubnetLen":17}', "at least four subnets"),
        ('{"Network":"10.0.0.0/16","SubnetLen":"24"}', "SubnetLen must be a whole number"),
        ('{"Network":"10.0.0.0/16","SubnetMin":"10.1.0.0"}', "SubnetMin 10.1.0.0 is not in the range"),
        ('{"Network":"10.0.0.0/16","SubnetMax":"10.0.5.1"}', "not on a SubnetLen boundary"),
        ('{"Network":"10.0.0.0/16","SubnetMin":"10.0.9.0","SubnetMax":"10.0.5.0"}', "must not be above"),
        ('{"Network":"10.0.0.0/16","Backend":"vxlan"}', "Backend must be a JSON object"),
        ('{"Network":"10.0.0.0/16","Backend":{"Port":1}}', "Backend.Type is missing"),
        ('{"Network":"10.0.0.0/16","Backend":{"Type":5}}', "Backend.Type must be a string"),
        ('{"Network":"10.0.0.0/16","Backend":{"Type":["vxlan"]}}', "Backend.Type must be a string"),
        ('{"Network":"10.0.0.0/16","EnableIPv6":"yes"}', "EnableIPv6 must be true or false"),
        ('{"Network":"10.0.0.0/16","EnableIPv6":true}', "IPv6Network"),
        ('{"EnableIPv4":false}', "enable at least one"),
        ('{"EnableIPv4":false,"EnableIPv6":true,"IPv6Network":"fc00::/125"}', "too small"),
        ('{"EnableIPv4":false,"EnableIPv6":true,"IPv6Network":"fc00::/48","IPv6SubnetLen":127}', "less than /127"),
    ],
)
def test_invalid_configs_give_one_line_errors(text, message):
    with pytest.raises(ConfigError) as info:
        parse_config(text)
    assert message in str(info.value)
    assert "\n" not in str(info.value)


def test_same_network_ignores_backend_options():
    a = parse_config('{"Network":"10.0.0.0/8","Backend":{"Type":"vxlan","VNI":1}}')
    assert a.same_network(parse_config('{"Network":"10.0.0.0/8","Backend":{"Type":"vxlan","VNI":2}}'))
    assert not a.same_network(parse_config('{"Network":"10.0.0.0/8","Backend":{"Type":"host-gw"}}'))
    assert not a.same_network(parse_config('{"Network":"10.1.0.0/16","Backend":{"Type":"vxlan"}}'))


def test_misspelt_top_level_key_is_named_with_the_nearest_known_one():
    from overlay_core.config import check_top_level_keys

    check_top_level_keys(parse_config('{"network":"10.0.0.0/16","enableNFTables":false,"Backend":{"Type":"vxlan"}}'))
    with pytest.raises(ConfigError, match="unknown key 'SubnetLength' in the network config \\(did you mean"):
        check_top_level_keys(parse_config('{"Network":"10.0.0.0/16","SubnetLength":24}'))


def test_no_backend_selects_vxlan_and_is_marked_for_the_warning():
    config = parse_config('{"Network":"10.0.0.0/16"}')
    assert config.backend_type == "vxlan" and config.backend_defaulted
    assert not parse_config('{"Network":"10.0.0.0/16","Backend":{"Type":"vxlan"}}').backend_defaulted


def test_shown_config_hides_credentials_of_the_backend():
    raw = ('{"Network": "10.5.0.0/16", "backend": {"Type": "tencent-vpc", "AccessKeyID": "AKIDx", '
           '"accessKeySecret": "s3cret", "PSK": "psk-value", "RouteTableLimit": 50}}')
    shown = parse_config(raw).shown()
    assert "AKIDx" not in shown and "s3cret" not in shown and "psk-value" not in shown
    assert '"RouteTableLimit":50' in shown and '"Type":"tencent-vpc"' in shown and "10.5.0.0/16" in shown


def test_config_for_log_hides_backend_secrets():
    config = parse_config('{"Network":"10.5.0.0/16","Backend":{"Type":"wireguard","PSK":"c2VjcmV0","ListenPort":5},'
                          '"x":{"Password":"kept: not a Backend key"}}')
    line = config.shown()
    assert json.loads(line)["Backend"] == {"Type": "wireguard", "PSK": "***", "ListenPort": 5}
    assert "c2VjcmV0" not in line and "\n" not in line


def test_shown_masks_backend_secrets_only():
    psk = "k" * 96
    cfg = parse_config('{"Network":"10.5.0.0/16","Backend":{"Type":"ipsec","PSK":"%s","UDPEncap":true,'
                       '"AccessKeySecret":"s3cret"}}' % psk)
    text = cfg.shown()
    assert psk not in text and "s3cret" not in text
    assert json.loads(text) == {"Network": "10.5.0.0/16",
                                "Backend": {"Type": "ipsec", "PSK": "***", "UDPEncap": True, "AccessKeySecret": "***"}}
