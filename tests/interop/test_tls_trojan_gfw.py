"""Trojan against Debian's trojan-gfw 1.16 (the reference implementation), TCP and UDP: its
client (forward mode, certificate checked) into our server, and our client into its server."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from tls_peers import (
    PASSWORD,
    TROJAN_READY,
    echo,
    our_client,
    our_server,
    pin_of,
    round_trip,
    running,
    trojan_forward,
    trojan_server,
    write_config,
)

from elsewhere.config import from_mapping
from elsewhere.engine import Engine
from elsewhere.session import Destination
from engine.tls_helpers import make_cert
from ports import free_port

# Needs the Debian package trojan (listed in .ci/apt-packages); never skipped.
pytestmark = pytest.mark.interop

NOWHERE = Destination("127.0.0.1", 9)  # fallback that no test here should reach
networks = pytest.mark.parametrize("network", ["tcp", "udp"])


@networks
async def test_trojan_gfw_client_reaches_our_server(tmp_path: Path, network: str) -> None:
    cert, key = make_cert(tmp_path)
    local = free_port()
    async with echo(network) as target, Engine(from_mapping(our_server(cert, key, NOWHERE))) as srv:
        config = trojan_forward(local, Destination("127.0.0.1", target), srv.inbounds[0].port, cert)
        args = ["trojan", "-c", str(write_config(tmp_path, "client.json", config))]
        async with running(args, tmp_path / "trojan.log", TROJAN_READY):
            await round_trip(network, local)
        assert srv.stats.probes == 0


async def test_trojan_gfw_client_with_a_wrong_password_gets_our_fallback(tmp_path: Path) -> None:
    cert, key = make_cert(tmp_path)
    local = free_port()
    seen: list[bytes] = []
    page = b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nConnection: close\r\n\r\nhello"

    async def web(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        seen.append(await reader.readuntil(b"HTTP/1.1\r\n\r\n"))
        writer.write(page)
        writer.close()

    fallback = await asyncio.start_server(web, "127.0.0.1", 0)
    fallback_at = Destination("127.0.0.1", fallback.sockets[0].getsockname()[1])
    async with fallback, Engine(from_mapping(our_server(cert, key, fallback_at))) as srv:
        config = trojan_forward(local, Destination("127.0.0.1", 9), srv.inbounds[0].port, cert)
        config["password"] = ["not-" + PASSWORD]
        args = ["trojan", "-c", str(write_config(tmp_path, "client.json", config))]
        async with running(args, tmp_path / "trojan.log", TROJAN_READY):
            reader, writer = await asyncio.open_connection("127.0.0.1", local)
            writer.write(b"GET / HTTP/1.1\r\n\r\n")
            answer = await asyncio.wait_for(reader.read(-1), 5)
            writer.close()
    assert answer == page  # what the web server said, through the wrong tunnel
    assert len(seen) == 1 and seen[0].endswith(b"GET / HTTP/1.1\r\n\r\n")
    assert srv.stats.probes == 1


@networks
async def test_our_client_reaches_trojan_gfw_server(tmp_path: Path, network: str) -> None:
    cert, key = make_cert(tmp_path)
    port = free_port()
    config = trojan_server(port, NOWHERE, cert, key)
    args = ["trojan", "-c", str(write_config(tmp_path, "server.json", config))]
    async with echo(network) as target, running(args, tmp_path / "trojan.log", TROJAN_READY):
        ours = our_client("trojan", "tls", port, Destination("127.0.0.1", target), pin_of(cert))
        async with Engine(from_mapping(ours)) as client:
            await round_trip(network, client.inbounds[0].port)
