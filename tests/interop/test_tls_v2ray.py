"""VLESS and Trojan against Debian's v2ray 4.34, over TLS and over WebSocket+TLS, TCP and the
in-stream UDP of each: v2ray's client into our server, and our client into v2ray's server."""

from __future__ import annotations

from pathlib import Path

import pytest
from tls_peers import (
    V2RAY_READY,
    echo,
    our_client,
    our_server,
    pin_of,
    round_trip,
    running,
    v2ray_client,
    v2ray_server,
    write_config,
)

from elsewhere.config import from_mapping
from elsewhere.engine import Engine
from elsewhere.session import Destination
from engine.tls_helpers import make_cert
from ports import free_port

# Needs the Debian package v2ray (listed in .ci/apt-packages); never skipped.
pytestmark = [
    pytest.mark.interop,
    pytest.mark.parametrize("protocol", ["vless", "trojan"]),
    pytest.mark.parametrize("carrier", ["tls", "ws"]),
    pytest.mark.parametrize("network", ["tcp", "udp"]),
]
NOWHERE = Destination("127.0.0.1", 9)  # fallback that no test here should reach


async def test_v2ray_client_reaches_our_server(
    tmp_path: Path, protocol: str, carrier: str, network: str
) -> None:
    cert, key = make_cert(tmp_path)
    local = free_port()
    async with echo(network) as target, Engine(from_mapping(our_server(cert, key, NOWHERE))) as srv:
        port = srv.inbounds[0].port
        config = v2ray_client(protocol, carrier, local, Destination("127.0.0.1", target), port)
        args = ["v2ray", "-config", str(write_config(tmp_path, "client.json", config))]
        async with running(args, tmp_path / "v2ray.log", V2RAY_READY):
            await round_trip(network, local)
        assert srv.stats.probes == 0


async def test_our_client_reaches_v2ray_server(
    tmp_path: Path, protocol: str, carrier: str, network: str
) -> None:
    cert, key = make_cert(tmp_path)
    port = free_port()
    config = v2ray_server(protocol, carrier, port, cert, key)
    args = ["v2ray", "-config", str(write_config(tmp_path, "server.json", config))]
    async with echo(network) as target, running(args, tmp_path / "v2ray.log", V2RAY_READY):
        ours = our_client(protocol, carrier, port, Destination("127.0.0.1", target), pin_of(cert))
        async with Engine(from_mapping(ours)) as client:
            await round_trip(network, client.inbounds[0].port)
