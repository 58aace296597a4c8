"""The REALITY server with a real TLS 1.3 site as dest (Debian's nginx on loopback): clients with
the key get our handshake and VLESS; everybody else — a browser-like hello (OpenSSL's), a wrong
key, short id or clock, a replay, random bytes, plain HTTP — meets nginx itself, its certificate
and its pages, byte for byte, and is counted as a probe by its reason."""

from __future__ import annotations

import asyncio
import contextlib
import os
import ssl
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from test_decoy_nginx import certificate_files, running_tls_nginx
from tls_peers import tcp_echo

from elsewhere.codecs import reality, vless
from elsewhere.config import from_mapping
from elsewhere.engine import Engine
from elsewhere.inbounds.reality import RealityInbound
from elsewhere.session import Destination
from reality_client import NotAuthenticated, RealityConnection, RealityParams, connect, hello_for

pytestmark = pytest.mark.interop

UUID = "5783a3e7-e373-51cd-8642-c83782b807c5"
PRIVATE = reality.generate_private_key()
PUBLIC = reality.public_key(PRIVATE)
SHORT_ID = "0123abcd"
TIMEOUT = 10.0


@pytest.fixture
def nginx(tmp_path: Path) -> Iterator[int]:
    files = certificate_files(tmp_path)
    root = tmp_path / "nginx"
    root.mkdir()
    with running_tls_nginx(root, files, "") as port:
        yield port


def server_config(dest: int) -> dict[str, Any]:
    return {
        "inbounds": [{
            "type": "reality", "tag": "reality", "listen": "127.0.0.1", "port": 0,
            "dest": f"127.0.0.1:{dest}", "server_names": ["localhost"],
            "private_key": reality.encode_key(PRIVATE), "short_ids": [SHORT_ID, ""],
            "max_time_diff": 60_000, "vless": [{"uuid": UUID, "id": "alice"}],
        }],
        "outbounds": [{"type": "direct", "private": "allow"}],
    }


@contextlib.asynccontextmanager
async def reality_server(dest: int) -> AsyncIterator[tuple[Engine, RealityInbound]]:
    async with Engine(from_mapping(server_config(dest))) as engine:
        inbound = engine.inbounds[0]
        assert isinstance(inbound, RealityInbound)
        yield engine, inbound


async def vless_echo(connection: RealityConnection, echo_port: int, payload: bytes) -> bytes:
    return await vless_echo_for(connection, UUID, echo_port, payload)


async def vless_echo_for(
    connection: RealityConnection, uuid: str, echo_port: int, payload: bytes
) -> bytes:
    """`payload` through VLESS to the echo and back (the response header checked, dropped)."""
    connection.send(vless.encode_request(
        vless.parse_uuid(uuid), vless.CMD_TCP, Destination("127.0.0.1", echo_port), payload
    ))
    got = b""
    async with asyncio.timeout(TIMEOUT):
        while len(got) < len(payload) + 2:
            data = await connection.receive()
            assert data, "the server closed"
            got += data
    assert got[:2] == vless.encode_response()
    return got[2:]


async def test_a_client_with_the_key_gets_our_handshake_and_vless_reaches_its_destination(
    nginx: int,
) -> None:
    async with reality_server(nginx) as (engine, inbound), tcp_echo() as echo:
        for short_id in (SHORT_ID, ""):
            params = RealityParams(PUBLIC, short_id=short_id)
            async with asyncio.timeout(TIMEOUT):
                connection = await connect(inbound.port, params)
            payload = os.urandom(100_000)
            assert await vless_echo(connection, echo, payload) == payload
            connection.close()
        assert engine.stats.probes == 0
        assert engine.stats.sessions == 2


@pytest.mark.parametrize(
    ("params", "reason"),
    [
        (RealityParams(reality.public_key(reality.generate_private_key()), SHORT_ID), "bad_token"),
        (RealityParams(PUBLIC, "ffff"), "short_id"),
        (RealityParams(PUBLIC, SHORT_ID, clock_skew=120), "clock"),
        (RealityParams(PUBLIC, SHORT_ID, server_name="example.com"), "server_name"),
    ],
    ids=["wrong pbk", "wrong sid", "clock skew", "wrong sni"],
)
async def test_a_wrong_key_short_id_clock_or_name_meets_dest_and_counts_as_a_probe(
    nginx: int, params: RealityParams, reason: str
) -> None:
    async with reality_server(nginx) as (engine, inbound):
        with pytest.raises(NotAuthenticated):
            async with asyncio.timeout(TIMEOUT):
                await connect(inbound.port, params)
        await _settled(lambda: engine.stats.probes == 1)
        assert inbound.refusals == {reason: 1}
        assert engine.stats.sessions == 0


async def test_a_replayed_hello_meets_dest_even_with_the_key(nginx: int) -> None:
    params = RealityParams(PUBLIC, SHORT_ID)
    hello = hello_for(params)
    async with reality_server(nginx) as (engine, inbound):
        for attempt in range(2):
            reader, writer = await asyncio.open_connection("127.0.0.1", inbound.port)
            connection = RealityConnection(reader, writer)
            try:
                async with asyncio.timeout(TIMEOUT):
                    if attempt == 0:
                        await connection.handshake(params, hello)  # ours
                    else:
                        with pytest.raises(NotAuthenticated):  # nginx's certificate
                            await connection.handshake(params, hello)
            finally:
                writer.close()
        assert inbound.refusals == {"replay": 1}
        assert engine.stats.probes == 1


def _https_get(port: int) -> tuple[bytes, bytes]:
    """What OpenSSL (a browser-like hello, no REALITY) sees: the certificate and the page."""
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    import socket

    with socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT) as raw, \
            context.wrap_socket(raw, server_hostname="localhost") as tls:
        cert = tls.getpeercert(binary_form=True) or b""
        tls.sendall(b"GET / HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        page = b""
        while chunk := tls.recv(65536):
            page += chunk
    return cert, page


async def _raw_answer(port: int, data: bytes) -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(data)
        answer = b""
        async with asyncio.timeout(TIMEOUT):
            while chunk := await reader.read(65536):
                answer += chunk
        return answer
    finally:
        writer.close()


async def test_strangers_get_dests_answers_byte_for_byte(nginx: int) -> None:
    async with reality_server(nginx) as (engine, inbound):
        loop = asyncio.get_running_loop()
        direct_cert, direct_page = await loop.run_in_executor(None, _https_get, nginx)
        cert, page = await loop.run_in_executor(None, _https_get, inbound.port)
        assert cert == direct_cert  # nginx's own certificate, not a temporary one
        strip = lambda page: b"\n".join(  # noqa: E731 - the Date differs by a second or so
            line for line in page.split(b"\n") if not line.startswith(b"Date:"))
        assert strip(page) == strip(direct_page) and b"200 OK" in page
        probes = [
            b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n",  # plain HTTP on a TLS port
            os.urandom(600),
            b"\x16\x03\x01\x00\x05\x01\x00\x00\x01\x00",  # a ClientHello of one byte
        ]
        for probe in probes:
            assert strip(await _raw_answer(inbound.port, probe)) == strip(
                await _raw_answer(nginx, probe))
        await _settled(lambda: engine.stats.probes == 1 + len(probes))
        assert engine.stats.sessions == 0
        # OpenSSL's hello carries a random session id; the rest are no ClientHello at all
        assert inbound.refusals == {"bad_token": 1, "not_tls": 3}


async def _settled(check: Any) -> None:
    """The server counts a probe when it decides, a moment after the client saw its answer."""
    async with asyncio.timeout(TIMEOUT):
        while not check():
            await asyncio.sleep(0.01)


def fake_server_hello() -> bytes:
    """An inner ServerHello record (TLS 1.3, AES-128-GCM) as Vision's filter reads one."""
    extensions = b"\x00\x2b\x00\x02\x03\x04"
    body = (b"\x03\x03" + os.urandom(32) + b"\x20" + os.urandom(32) + b"\x13\x01\x00"
            + len(extensions).to_bytes(2, "big") + extensions)
    message = b"\x02" + len(body).to_bytes(3, "big") + body
    return b"\x16\x03\x03" + len(message).to_bytes(2, "big") + message


def app_record(size: int) -> bytes:
    return b"\x17\x03\x03" + size.to_bytes(2, "big") + os.urandom(size)


async def test_vision_inside_reality_pads_then_both_directions_leave_our_tls(
    nginx: int, caplog: pytest.LogCaptureFixture
) -> None:
    """Through an echo, the client's inner "ServerHello" comes back as if the site had sent it:
    both sides then know the inner stream is TLS 1.3, and its first application record makes
    each go direct. What follows is raw TCP both ways, not records of ours."""
    import logging

    from elsewhere.codecs.vision import FLOW, TrafficState, VisionReader, VisionWriter

    caplog.set_level(logging.DEBUG, logger="elsewhere.vision")
    uuid = vless.parse_uuid(UUID)
    async with reality_server(nginx) as (_engine, inbound), tcp_echo() as echo:
        async with asyncio.timeout(TIMEOUT):
            connection = await connect(inbound.port, RealityParams(PUBLIC, SHORT_ID))
            state = TrafficState()
            writer, reader = VisionWriter(state, uuid), VisionReader(state, uuid)
            hello = fake_server_hello()
            header = vless.encode_request(uuid, vless.CMD_TCP, Destination("127.0.0.1", echo),
                                          flow=FLOW)
            connection.send(header + writer.encode(hello)[0])
            got, head = b"", b""
            while len(head) < 2:
                head += await connection.receive()
            assert head[:2] == vless.encode_response()
            got, _ = reader.decode(head[2:])
            while len(got) < len(hello):
                plain, _ = reader.decode(await connection.receive())
                got += plain
            assert got == hello
            record = app_record(3000)
            padded, direct = writer.encode(record)
            assert direct  # our side goes direct after this write
            connection.send(padded)
            got = b""
            while not reader.direct:
                plain, _ = reader.decode(await connection.receive())
                got += plain
            assert got == record
            raw = os.urandom(50_000)
            connection.writer.write(raw)  # not sealed: the server must take it as it is
            back = connection.splitter.take_rest()
            while len(back) < len(raw):
                chunk = await connection.reader.read(65536)
                assert chunk, "the server closed"
                back += chunk
            assert back == raw  # and the echo came back unsealed
            connection.close()
    messages = [r.getMessage() for r in caplog.records]
    assert "XTLS Vision: we went direct" in messages
    assert "XTLS Vision: the peer went direct" in messages
