"""The engine end to end on loopback: tunnel inbound -> direct outbound -> a local server."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import os
import socket
import struct

import pytest

from elsewhere.config import from_mapping
from elsewhere.engine import Engine
from elsewhere.session import Session
from elsewhere.transports.layer import Pending
from elsewhere.transports.tcp import connect_tcp


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


class _ResetSeen(Pending):
    """A Pending that lets the test wait for the far side's reset."""

    def __init__(self) -> None:
        super().__init__()
        self.reset = asyncio.Event()

    def connection_lost(self, exc: Exception | None) -> None:
        super().connection_lost(exc)
        self.reset.set()


class _ResetBeforeRelay:
    """The direct outbound's connection, handed to the engine only once the far side has reset
    it: the moment between connect and relay that a destination resetting at once can hit."""

    tag = "direct"

    async def open_tcp(self, session: Session) -> asyncio.Transport:
        loop = asyncio.get_running_loop()
        dest = session.destination
        transport, pending = await connect_tcp(loop, _ResetSeen, dest.host, dest.port, 5)
        await asyncio.wait_for(pending.reset.wait(), 5)
        return transport

    async def close(self) -> None:
        return None


async def test_a_destination_that_resets_before_the_relay_starts_ends_the_session_cleanly(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async def reset_at_once(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        sock = writer.get_extra_info("socket")
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        writer.transport.abort()

    server = await asyncio.start_server(reset_at_once, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    async with server, Engine(from_mapping(tunnel_config(port))) as engine:
        engine.outbounds["direct"] = _ResetBeforeRelay()  # type: ignore[assignment]
        local = engine.inbounds[0].port  # type: ignore[attr-defined]
        with caplog.at_level(logging.DEBUG, logger="elsewhere"):
            reader, writer = await asyncio.open_connection("127.0.0.1", local)
            writer.write(b"hello")
            with contextlib.suppress(ConnectionResetError):
                assert await asyncio.wait_for(reader.read(-1), 5) == b""
            writer.close()
            await asyncio.wait_for(_engine_idle(engine), 5)
    assert "internal error" not in caplog.text
    assert "reset before the relay started" in caplog.text
    assert engine.stats.active == 0


async def _engine_idle(engine: Engine) -> None:
    while engine._tasks:  # the session's task ends right after the user's side is closed
        await asyncio.gather(*engine._tasks, return_exceptions=True)
