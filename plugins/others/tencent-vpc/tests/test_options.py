"""Options: Flannel's credential rules, our URLs and limits, one-line errors that never show a secret."""

from __future__ import annotations

import json

import pytest
from overlay_core import ConfigError, parse_config
from overlay_core.backend import check_backend_config
from overlay_core.services import Secret
from overlay_tencent_vpc import parse_options
from overlay_tencent_vpc.backend import TencentVpcBackend
from overlay_tencent_vpc.options import DEFAULT_API_ENDPOINT, DEFAULT_METADATA_URL

CREDS = {"AccessKeyID": "AKIDabc", "AccessKeySecret": "s3cr3t-value"}


def test_defaults_and_config_credentials():
    opts = parse_options({"type": "tencent-vpc", **CREDS}, {})
    assert opts.access_key_id.reveal() == "AKIDabc"
    assert opts.access_key_secret.reveal() == "s3cr3t-value"
    assert opts.api_endpoint == DEFAULT_API_ENDPOINT and not opts.endpoint_overridden
    assert opts.metadata_url == DEFAULT_METADATA_URL == "http://metadata.tencentyun.com/latest/meta-data/"
    assert opts.route_table_id is None
    assert opts.route_table_limit == 50


def test_keys_match_case_insensitively_like_flannel():
    # core lower-cases the Backend object's keys
    opts = parse_options({"accesskeyid": "AKIDabc", "accesskeysecret": "x", "routetablelimit": 7}, {})
    assert opts.route_table_limit == 7


@pytest.mark.parametrize("config", [{}, {"AccessKeyID": "AKIDcfg"}, {"AccessKeySecret": "cfg-secret"}])
def test_either_empty_takes_both_from_the_environment(config):
    opts = parse_options(config, {"ACCESS_KEY_ID": "AKIDenv", "ACCESS_KEY_SECRET": "env-secret"})
    assert (opts.access_key_id.reveal(), opts.access_key_secret.reveal()) == ("AKIDenv", "env-secret")


@pytest.mark.parametrize(
    "config,environ",
    [({}, {}), ({"AccessKeyID": "AKIDcfg"}, {"ACCESS_KEY_ID": "AKIDenv"}), ({}, {"ACCESS_KEY_SECRET": "x"})],
)
def test_no_credentials_is_one_line(config, environ):
    with pytest.raises(ConfigError) as e:
        parse_options(config, environ)
    msg = str(e.value)
    assert "\n" not in msg and "ACCESS_KEY_ID" in msg and "AccessKeySecret" in msg


@pytest.mark.parametrize(
    "config,expected",
    [
        ({"ApiEndpoint": "http://127.0.0.1:8080/"}, "http://127.0.0.1:8080"),
        ({"ApiEndpoint": "https://vpc.internal.example"}, "https://vpc.internal.example"),
    ],
)
def test_api_endpoint_normalised(config, expected):
    opts = parse_options({**CREDS, **config}, {})
    assert opts.api_endpoint == expected and opts.endpoint_overridden


def test_metadata_url_gets_a_trailing_slash():
    opts = parse_options({**CREDS, "MetadataURL": "http://127.0.0.1:9/latest/meta-data"}, {})
    assert opts.metadata_url == "http://127.0.0.1:9/latest/meta-data/"


@pytest.mark.parametrize(
    "config,words",
    [
        ({"ApiEndpoint": "vpc.tencentcloudapi.com"}, ["ApiEndpoint", "URL"]),
        ({"ApiEndpoint": "http://127.0.0.1:1/v2"}, ["ApiEndpoint", "path"]),
        ({"ApiEndpoint": "http://user:pw@127.0.0.1:1"}, ["ApiEndpoint", "user"]),
        ({"MetadataURL": "ftp://x/"}, ["MetadataURL"]),
        ({"RouteTableLimit": 0}, ["RouteTableLimit", "at least 1"]),
        ({"RouteTableLimit": True}, ["RouteTableLimit"]),
        ({"RouteTableLimit": "50"}, ["RouteTableLimit"]),
        ({"RouteTableId": "table-1"}, ["RouteTableId", "rtb-"]),
    ],
)
def test_bad_values_are_one_line_errors(config, words):
    with pytest.raises(ConfigError) as e:
        parse_options({**CREDS, **config}, {})
    msg = str(e.value)
    assert "\n" not in msg and msg.startswith("tencent-vpc: ")
    for word in words:
        assert word in msg


def test_a_misspelt_key_is_refused_by_core_with_a_suggestion():
    config = parse_config(json.dumps({"Network": "10.0.0.0/8", "Backend": {"Type": "tencent-vpc", **CREDS,
                                                                         "RouteTablID": "rtb-1"}}))
    with pytest.raises(ConfigError, match="tencent-vpc: unknown Backend key 'RouteTablID' \\(did you mean "
                                          "'RouteTableId'\\?\\)"):
        check_backend_config(TencentVpcBackend, config)


def test_errors_never_echo_a_credential():
    with pytest.raises(ConfigError) as e:
        parse_options({"AccessKeyID": "AKIDabc", "AccessKeySecret": " padded-secret "}, {})
    assert "padded-secret" not in str(e.value) and "AccessKeySecret" in str(e.value)
    with pytest.raises(ConfigError) as e:
        parse_options({}, {"ACCESS_KEY_ID": "AKIDenv", "ACCESS_KEY_SECRET": "env-secret "})
    assert "env-secret" not in str(e.value) and "ACCESS_KEY_SECRET" in str(e.value)


def test_options_repr_hides_credentials():
    opts = parse_options(CREDS, {})
    for text in (repr(opts), str(opts), f"{opts}"):
        assert "AKIDabc" not in text and "s3cr3t-value" not in text and "***" in text


def test_credentials_are_cores_secret():
    opts = parse_options(CREDS, {})
    assert isinstance(opts.access_key_id, Secret) and isinstance(opts.access_key_secret, Secret)
