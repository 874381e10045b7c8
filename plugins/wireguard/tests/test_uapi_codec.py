"""UAPI text protocol: encoding of set transactions, parsing of get answers, errors without keys."""

import os
from ipaddress import ip_network

import pytest
import trio
from overlay_core.services import Secret
from overlay_wireguard.keys import KeyPair, b64_to_hex
from overlay_wireguard.peer import DeviceConfig, WgPeer, allowed_ips
from overlay_wireguard.uapi import UapiClient, UapiError, encode_set, parse_get, response_errno

ME = KeyPair.generate()
A = KeyPair.generate().public
B = KeyPair.generate().public
PSK = Secret(bytes(range(32)))


def test_encode_full_transaction():
    peer = WgPeer(A, "[2001:db8::2]:51820", allowed_ips(["2001:db8:10:2::/64", "10.5.2.0/24"]), PSK, 25)
    text = encode_set(DeviceConfig(ME.private, 51820), [peer], remove=[B], replace_peers=True).decode()
    assert text == "\n".join([
        "set=1", f"private_key={ME.private_hex()}", "listen_port=51820", "replace_peers=true",
        f"public_key={b64_to_hex(B)}", "remove=true",
        f"public_key={b64_to_hex(A)}", "replace_allowed_ips=true", f"preshared_key={bytes(range(32)).hex()}",
        "endpoint=[2001:db8::2]:51820", "persistent_keepalive_interval=25",
        "allowed_ip=10.5.2.0/24", "allowed_ip=2001:db8:10:2::/64"]) + "\n\n"


def test_no_psk_clears_it_and_many_peers_are_one_request():
    peers = [WgPeer(KeyPair.generate().public, f"192.0.2.{i % 250 + 1}:51820",
                    allowed_ips([f"10.{i // 256}.{i % 256}.0/24"])) for i in range(1000)]
    text = encode_set(peers=peers).decode()
    assert text.count("set=1") == 1 and text.count("public_key=") == 1000 and text.endswith("\n\n")
    assert text.count("\n\n") == 1
    assert "preshared_key=" + "0" * 64 in text


GET = """private_key={priv}
listen_port=51820
public_key={a}
preshared_key={psk}
protocol_version=1
endpoint=192.0.2.2:51820
last_handshake_time_sec=1700000000
last_handshake_time_nsec=500000000
tx_bytes=1234
rx_bytes=5678
persistent_keepalive_interval=25
allowed_ip=10.5.2.0/24
allowed_ip=2001:db8:10:2::/64
public_key={b}
preshared_key={zero}
protocol_version=1
last_handshake_time_sec=0
last_handshake_time_nsec=0
tx_bytes=0
rx_bytes=0
persistent_keepalive_interval=0
errno=0

"""


def test_parse_get():
    text = GET.format(priv=ME.private_hex(), a=b64_to_hex(A), b=b64_to_hex(B), psk=bytes(range(32)).hex(),
                      zero="0" * 64)
    state = parse_get(text)
    assert state.config == DeviceConfig(ME.private, 51820)
    (pa, pb) = state.peers
    assert pa.peer == WgPeer(A, "192.0.2.2:51820", (ip_network("10.5.2.0/24"), ip_network("2001:db8:10:2::/64")),
                             PSK, 25)
    assert (pa.last_handshake, pa.rx_bytes, pa.tx_bytes) == (1700000000.5, 5678, 1234)
    assert pb.peer == WgPeer(B, None, (), None, 0) and pb.last_handshake is None
    assert ME.private_hex() not in repr(state) and bytes(range(32)).hex() not in repr(state)
    assert parse_get("errno=0\n\n").config == DeviceConfig(None, 0)
    assert response_errno("errno=-22\n\n") == -22
    with pytest.raises(ValueError):
        response_errno("listen_port=1\n")


async def _fake_server(path, answer: bytes, seen: list):
    listener = trio.socket.socket(trio.socket.AF_UNIX)
    fd = os.open(path.parent, os.O_PATH | os.O_DIRECTORY)  # bind works through /proc/self/fd too
    try:
        await listener.bind(f"/proc/self/fd/{fd}/{path.name}")
    finally:
        os.close(fd)
    listener.listen()

    async def serve(task_status=trio.TASK_STATUS_IGNORED):
        task_status.started()
        conn, _ = await listener.accept()
        with conn:
            data = b""
            while not data.endswith(b"\n\n"):
                data += await conn.recv(65536)
            seen.append(data)
            if answer:
                await conn.send(answer)
    return listener, serve


async def test_client_errors_are_one_line_without_keys(tmp_path):
    seen = []
    long_dir = tmp_path / ("d" * 60) / ("e" * 60)
    long_dir.mkdir(parents=True)
    sock = long_dir / "flannel-wg.sock"  # longer than sun_path allows: reached through /proc/self/fd
    listener, serve = await _fake_server(sock, b"errno=-22\n\n", seen)
    client = UapiClient(sock, "flannel-wg", timeout=5)
    with listener:
        async with trio.open_nursery() as nursery:
            await nursery.start(serve)
            with pytest.raises(UapiError) as err:
                await client.set(DeviceConfig(ME.private, 51820), [WgPeer(A, None, ())])
    text = str(err.value)
    assert err.value.errno == -22 and "EINVAL" in text and "\n" not in text
    assert ME.private_hex() not in text and b64_to_hex(A) not in text and A not in text
    assert seen[0].startswith(b"set=1\nprivate_key=")
    missing = UapiClient(tmp_path / "none.sock", "flannel-wg")
    with pytest.raises(UapiError, match="not reachable .*is wireguard-go running") as err:
        await missing.get()
    assert err.value.errno is None
    assert not await missing.answers()


async def test_client_times_out(tmp_path):
    seen = []
    listener, serve = await _fake_server(tmp_path / "slow.sock", b"", seen)
    with listener:
        async with trio.open_nursery() as nursery:
            await nursery.start(serve)
            with pytest.raises(UapiError, match="closed the connection|no answer within"):
                await UapiClient(tmp_path / "slow.sock", "flannel-wg", timeout=1).get()
