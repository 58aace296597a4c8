"""The engine end to end on loopback: tunnel inbound -> direct outbound -> a local server."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import socket

import pytest

from elsewhere.config import from_mapping
from elsewhere.engine import Engine


def tunnel_config(dest_port: int, private: str = "allow", idle: float = 30) -> dict:
    return {
        "inbounds": [
            {"type": "tunnel", "tag": "t", "port": 0, "destination": f"127.0.0.1:{dest_port}"}
        ],
        "outbounds": [{"type": "direct", "private": private}],
        "timeouts": {"idle": idle},
    }


async def sink_server() -> tuple[asyncio.Server, int, asyncio.Queue[bytes]]:
    """Reads everything, answers with the SHA-256 of what it read after the client's EOF, then
    sends 1 MiB and closes: tests both directions and half-close."""
    results: asyncio.Queue[bytes] = asyncio.Queue()

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        digest = hashlib.sha256()
        while chunk := await reader.read(1 << 16):
            digest.update(chunk)
        writer.write(digest.digest() + bytes(1 << 20))
        await writer.drain()
        writer.close()
        await results.put(digest.digest())

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    return server, server.sockets[0].getsockname()[1], results


async def test_tunnel_carries_bytes_both_ways_with_half_close() -> None:
    server, port, results = await sink_server()
    async with server, Engine(from_mapping(tunnel_config(port))) as engine:
        local = engine.inbounds[0].port  # type: ignore[attr-defined]
        reader, writer = await asyncio.open_connection("127.0.0.1", local)
        payload = os.urandom(8 << 20)
        writer.write(payload)
        await writer.drain()
        writer.write_eof()
        answer = await reader.read(-1)
        writer.close()
        assert answer[:32] == hashlib.sha256(payload).digest()
        assert len(answer) == 32 + (1 << 20)
        assert await results.get() == hashlib.sha256(payload).digest()
        await asyncio.sleep(0)
    assert engine.stats.up == len(payload)
    assert engine.stats.down == len(answer)


async def test_server_policy_refuses_loopback_by_default() -> None:
    server, port, _ = await sink_server()
    async with server, Engine(from_mapping(tunnel_config(port, private="deny"))) as engine:
        local = engine.inbounds[0].port  # type: ignore[attr-defined]
        reader, writer = await asyncio.open_connection("127.0.0.1", local)
        writer.write(b"hello")
        # closed without an answer: FIN, or RST since "hello" was never read
        with contextlib.suppress(ConnectionResetError):
            assert await asyncio.wait_for(reader.read(-1), 5) == b""
        writer.close()
    assert engine.stats.failed == 1


async def test_idle_session_is_closed_after_the_timeout() -> None:
    server, port, _ = await sink_server()
    async with server, Engine(from_mapping(tunnel_config(port, idle=0.4))) as engine:
        local = engine.inbounds[0].port  # type: ignore[attr-defined]
        reader, writer = await asyncio.open_connection("127.0.0.1", local)
        writer.write(b"x")
        loop = asyncio.get_running_loop()
        start = loop.time()
        assert await asyncio.wait_for(reader.read(-1), 5) == b""
        assert 0.3 <= loop.time() - start < 2.0
        writer.close()


async def test_udp_datagrams_go_through_the_tunnel_and_back() -> None:
    loop = asyncio.get_running_loop()

    class Echo(asyncio.DatagramProtocol):
        def connection_made(self, transport: asyncio.BaseTransport) -> None:
            self.transport = transport

        def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
            self.transport.sendto(data[::-1], addr)  # type: ignore[attr-defined]

    echo, _ = await loop.create_datagram_endpoint(Echo, local_addr=("127.0.0.1", 0))
    port = echo.get_extra_info("sockname")[1]
    try:
        async with Engine(from_mapping(tunnel_config(port))) as engine:
            local = engine.inbounds[0].port  # type: ignore[attr-defined]
            client = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            client.setblocking(False)
            client.connect(("127.0.0.1", local))
            for i in range(5):
                msg = f"datagram {i}".encode()
                client.send(msg)
                assert await asyncio.wait_for(loop.sock_recv(client, 2048), 5) == msg[::-1]
            client.close()
    finally:
        echo.close()


@pytest.mark.parametrize("private", ["maybe"])
def test_bad_private_option_is_a_clear_config_error(private: str) -> None:
    from elsewhere.errors import ConfigError

    with pytest.raises(ConfigError, match='private must be "deny" or "allow"'):
        Engine(from_mapping(tunnel_config(1, private=private)))
