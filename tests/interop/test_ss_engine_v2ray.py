"""v2ray's (Debian package, 4.34) Shadowsocks AEAD outbound into the elsewhere server: TCP from a
socks inbound (curl, host names left to the server) and UDP from a dokodemo-door inbound, for
the three ciphers under v2ray's own names. Byte-exact, and metered against the key."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

import pytest

from elsewhere.config import from_mapping
from elsewhere.engine import Engine
from elsewhere.store.usage import UsageMeter
from interop.peers import curl, eventually, http_sink, running, udp_client, udp_echo
from ports import free_port

# Needs the Debian packages v2ray and curl (.ci/apt-packages); never skipped.
pytestmark = pytest.mark.interop

# v2ray's method name -> ours (v2ray calls the IETF ChaCha20-Poly1305 "chacha20-poly1305")
METHODS = {
    "chacha20-poly1305": "chacha20-ietf-poly1305",
    "aes-256-gcm": "aes-256-gcm",
    "aes-128-gcm": "aes-128-gcm",
}
methods = pytest.mark.parametrize("v2ray_method", sorted(METHODS))
PASSWORD = "v2ray-interop-secret"
UPLOAD = 3 << 20
DOWNLOAD = 2 << 20
# v2ray 4.34 seals a UDP packet into one 2 KiB buffer and panics on bigger datagrams
# (EncodePacket in proxy/shadowsocks), so stay at a typical MTU's worth
DATAGRAMS = [1, 100, 1400]


def server_config(method: str) -> dict[str, Any]:
    keys = [{"id": f"decoy{i}", "method": method, "password": f"decoy-{i}"} for i in range(3)]
    keys.append({"id": "alice", "method": method, "password": PASSWORD})
    return {
        "inbounds": [{"type": "shadowsocks", "listen": "127.0.0.1", "port": 0, "keys": keys}],
        "outbounds": [{"type": "direct", "private": "allow"}],
        "timeouts": {"idle": 30},
    }


def v2ray_config(
    method: str, server_port: int, socks_port: int, udp_port: int, echo_port: int
) -> dict[str, Any]:
    return {
        "log": {"loglevel": "warning"},
        "inbounds": [
            {
                "listen": "127.0.0.1",
                "port": socks_port,
                "protocol": "socks",
                "settings": {"auth": "noauth", "udp": False},
            },
            {
                "listen": "127.0.0.1",
                "port": udp_port,
                "protocol": "dokodemo-door",
                "settings": {"address": "127.0.0.1", "port": echo_port, "network": "udp"},
            },
        ],
        "outbounds": [
            {
                "protocol": "shadowsocks",
                "settings": {
                    "servers": [
                        {
                            "address": "127.0.0.1",
                            "port": server_port,
                            "method": method,
                            "password": PASSWORD,
                        }
                    ]
                },
            }
        ],
    }


@methods
async def test_v2ray_shadowsocks_outbound_reaches_sites_through_our_server(
    v2ray_method: str, tmp_path: Path
) -> None:
    sink = await http_sink()
    meter = UsageMeter()
    config = from_mapping(server_config(METHODS[v2ray_method]))
    socks, dgram = free_port(), free_port()
    upload = os.urandom(UPLOAD)
    (tmp_path / "upload").write_bytes(upload)
    async with (
        sink.server,
        udp_echo() as (echo, echo_port),
        Engine(config, meter=meter) as server,
    ):
        ss_port = int(server.inbounds[0].port)
        config_file = tmp_path / "v2ray.json"
        config_file.write_text(
            json.dumps(v2ray_config(v2ray_method, ss_port, socks, dgram, echo_port))
        )
        v2ray = ["v2ray", "-config", str(config_file)]
        async with running(v2ray, tmp_path / "v2ray.log", tcp=socks, udp=dgram):
            head = await curl(
                "--socks5-hostname",
                f"127.0.0.1:{socks}",
                "-H",
                "Expect:",
                "--data-binary",
                f"@{tmp_path / 'upload'}",
                "-o",
                str(tmp_path / "download"),
                "-D",
                "-",
                f"http://localhost:{sink.port}/{DOWNLOAD}",
            )
            async with udp_client(dgram) as app:
                for size in DATAGRAMS:
                    payload = os.urandom(size)
                    assert await app.ask(payload) == payload
            await eventually(lambda: server.stats.active == 0, "the TCP relay to close")
    [exchange] = sink.exchanges
    assert (tmp_path / "download").read_bytes() == exchange.body
    assert len(exchange.body) == DOWNLOAD
    assert f"x-upload-sha256: {hashlib.sha256(upload).hexdigest()}" in head.decode().lower()
    datagrams = sum(DATAGRAMS)
    assert echo.received == datagrams
    assert meter.drain() == {"alice": (exchange.read + datagrams, exchange.written + datagrams)}
    assert server.stats.probes == 0
