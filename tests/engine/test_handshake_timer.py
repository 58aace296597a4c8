"""One idle timer per Shadowsocks-family connection: the handshake's timer goes on into the
relay. A valid session that goes quiet is closed one idle timeout after its last byte, and a
valid key that may not open a session (over its data limit) gets what a stranger gets: not a
byte back, and the same idle close (DESIGN.md §4 Stealth)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest

from elsewhere.codecs.address import encode_address
from elsewhere.codecs.shadowsocks import Cipher, StreamEncryptor
from elsewhere.codecs.ss2022 import TcpClient, decode_psks, generate_psk
from elsewhere.config import from_mapping
from elsewhere.engine import Engine
from elsewhere.session import Destination

IDLE = 0.5  # [timeouts] idle of the server under test
METHOD, PASSWORD = "aes-256-gcm", "s3cret"
METHOD_2022 = "2022-blake3-aes-256-gcm"
PSK = generate_psk(METHOD_2022)
kinds = pytest.mark.parametrize("kind", ["shadowsocks", "ss2022"])


def server_config(kind: str) -> dict[str, Any]:
    inbound: dict[str, Any] = {"type": kind, "listen": "127.0.0.1", "port": 0, "udp": False}
    if kind == "shadowsocks":
        inbound["keys"] = [{"id": "alice", "method": METHOD, "password": PASSWORD}]
    else:
        inbound |= {"method": METHOD_2022, "psk": PSK, "id": "alice"}
    return {
        "inbounds": [inbound],
        "outbounds": [{"type": "direct", "private": "allow"}],
        "timeouts": {"idle": IDLE},
    }


def first_packet(kind: str, port: int) -> bytes:
    """A genuine client's first write: request header and first data."""
    destination = Destination("127.0.0.1", port)
    if kind == "shadowsocks":
        encryptor = StreamEncryptor(Cipher.from_password(METHOD, PASSWORD))
        return encryptor.encrypt(encode_address(destination) + b"hello")
    codec = TcpClient(METHOD_2022, decode_psks(METHOD_2022, PSK))
    return codec.request(destination, b"hello", now=time.time())


@pytest.fixture
async def echo() -> AsyncIterator[int]:
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while data := await reader.read(1 << 16):
            writer.write(data)
        writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    async with server:
        yield server.sockets[0].getsockname()[1]


async def until_closed(port: int, data: bytes) -> tuple[bytes, float]:
    """Send `data`, then read until the server closes: what came back, and how long after our
    last byte the close came."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(data)
        await writer.drain()
        start = time.monotonic()
        answer = await asyncio.wait_for(reader.read(-1), 4 * IDLE + 5)
        return answer, time.monotonic() - start
    finally:
        writer.close()


@kinds
async def test_a_quiet_session_is_closed_one_idle_timeout_after_its_last_byte(
    kind: str, echo: int
) -> None:
    async with Engine(from_mapping(server_config(kind))) as server:
        answer, after = await until_closed(server.inbounds[0].port, first_packet(kind, echo))
    assert answer  # the echo's reply, sealed
    assert 0.9 * IDLE <= after <= 2 * IDLE + 0.5
    assert server.stats.active == 0 and server.stats.probes == 0


@kinds
async def test_a_key_over_its_limit_gets_silence_and_the_idle_close(kind: str, echo: int) -> None:
    engine = Engine(from_mapping(server_config(kind)), over_limit=lambda user: user == "alice")
    async with engine as server:
        answer, after = await until_closed(server.inbounds[0].port, first_packet(kind, echo))
    assert answer == b""
    assert 0.9 * IDLE <= after <= 2 * IDLE + 0.5
    assert server.stats.sessions == 0
