"""Client engine -> Shadowsocks -> server engine -> local servers, on loopback."""

from __future__ import annotations

import asyncio
import hashlib
import os
import socket

import pytest
from test_tunnel_direct import sink_server

from elsewhere.config import from_mapping
from elsewhere.engine import Engine

METHODS = ["chacha20-ietf-poly1305", "aes-256-gcm", "aes-128-gcm"]


def server_config(method: str, password: str = "s3cret", idle: float = 30) -> dict:
    return {
        "inbounds": [
            {
                "type": "shadowsocks",
                "listen": "127.0.0.1",
                "port": 0,
                "keys": [
                    {"id": f"user{i}", "method": method, "password": f"other{i}"} for i in range(5)
                ]
                + [{"id": "alice", "method": method, "password": password}],
            }
        ],
        "outbounds": [{"type": "direct", "private": "allow"}],
        "timeouts": {"idle": idle},
    }


def client_config(server_port: int, dest_port: int, method: str, password: str = "s3cret") -> dict:
    return {
        "inbounds": [{"type": "tunnel", "port": 0, "destination": f"127.0.0.1:{dest_port}"}],
        "outbounds": [
            {
                "type": "shadowsocks",
                "tag": "proxy",
                "server": "127.0.0.1",
                "port": server_port,
                "method": method,
                "password": password,
                "prefix": "HTTP/1.",
            }
        ],
    }


@pytest.mark.parametrize("method", METHODS)
async def test_tcp_through_shadowsocks_is_byte_exact_and_counted_per_key(method: str) -> None:
    sink, sink_port, _results = await sink_server()
    counted: dict[str, list[int]] = {}

    class Meter:
        def add(self, key: str, up: int, down: int) -> None:
            c = counted.setdefault(key, [0, 0])
            c[0] += up
            c[1] += down

    async with sink, Engine(from_mapping(server_config(method)), meter=Meter()) as server:
        ss_port = server.inbounds[0].port  # type: ignore[attr-defined]
        async with Engine(from_mapping(client_config(ss_port, sink_port, method))) as client:
            local = client.inbounds[0].port  # type: ignore[attr-defined]
            reader, writer = await asyncio.open_connection("127.0.0.1", local)
            payload = os.urandom(3 << 20)
            writer.write(payload)
            writer.write_eof()
            answer = await asyncio.wait_for(reader.read(-1), 20)
            writer.close()
            assert answer[:32] == hashlib.sha256(payload).digest()
            assert len(answer) == 32 + (1 << 20)
    assert counted["alice"] == [len(payload), len(answer)]
    assert server.stats.probes == 0


async def test_wrong_password_gets_silence_not_an_answer() -> None:
    sink, sink_port, _ = await sink_server()
    async with sink, Engine(from_mapping(server_config("aes-256-gcm", idle=0.5))) as server:
        ss_port = server.inbounds[0].port  # type: ignore[attr-defined]
        bad = client_config(ss_port, sink_port, "aes-256-gcm", password="wrong")
        async with Engine(from_mapping(bad)) as client:
            local = client.inbounds[0].port  # type: ignore[attr-defined]
            reader, writer = await asyncio.open_connection("127.0.0.1", local)
            writer.write(b"x" * 100)
            assert await asyncio.wait_for(reader.read(-1), 5) == b""
            writer.close()
    assert server.stats.probes == 1
    assert server.stats.sessions == 0


async def test_udp_through_shadowsocks() -> None:
    loop = asyncio.get_running_loop()

    class Echo(asyncio.DatagramProtocol):
        def connection_made(self, transport: asyncio.BaseTransport) -> None:
            self.transport = transport

        def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
            self.transport.sendto(b"echo:" + data, addr)  # type: ignore[attr-defined]

    echo, _ = await loop.create_datagram_endpoint(Echo, local_addr=("127.0.0.1", 0))
    echo_port = echo.get_extra_info("sockname")[1]
    try:
        async with Engine(from_mapping(server_config("chacha20-ietf-poly1305"))) as server:
            ss_port = server.inbounds[0].port  # type: ignore[attr-defined]
            config = client_config(ss_port, echo_port, "chacha20-ietf-poly1305")
            async with Engine(from_mapping(config)) as client:
                local = client.inbounds[0].port  # type: ignore[attr-defined]
                sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
                sock.setblocking(False)
                sock.connect(("127.0.0.1", local))
                for i in range(3):
                    sock.send(b"ping %d" % i)
                    got = await asyncio.wait_for(loop.sock_recv(sock, 2048), 5)
                    assert got == b"echo:ping %d" % i
                sock.close()
    finally:
        echo.close()
