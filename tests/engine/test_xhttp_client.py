"""The XHTTP client (transports.xhttp) against the XHTTP server on the TLS port: every mode over
HTTP/2 and HTTP/1.1, byte-exact both ways, on a pool of few connections (xmux)."""

from __future__ import annotations

import asyncio
import hashlib
import os
import ssl
from pathlib import Path

import pytest
from test_tls_inbound import UUID, echo_server
from test_xhttp_server import PATH, config

from elsewhere.codecs import vless, xhttp
from elsewhere.config import from_mapping
from elsewhere.engine import Engine
from elsewhere.session import Destination
from elsewhere.transports import xhttp as client
from elsewhere.transports import xhttp_pool


def context(alpn: str) -> ssl.SSLContext:
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    ctx.set_alpn_protocols([alpn])
    return ctx


class Collect(asyncio.Protocol):
    def __init__(self, size: int) -> None:
        self.size = size
        self.got = bytearray()
        self.done: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def data_received(self, data: bytes) -> None:
        self.got += data
        if len(self.got) >= self.size and not self.done.done():
            self.done.set_result(None)

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.done.done():
            self.done.set_exception(ConnectionError("stream lost"))


async def echo_through(
    target: client.Target, echo_port: int, payload: bytes
) -> tuple[bytes, client.XhttpClientStream]:
    stream = await client.open_stream(target)
    collect = Collect(2 + len(payload))
    stream.set_protocol(collect)
    head = vless.encode_request(
        vless.parse_uuid(UUID), vless.CMD_TCP, Destination("127.0.0.1", echo_port)
    )
    stream.write(head + payload)
    await asyncio.wait_for(collect.done, 20)
    return bytes(collect.got), stream


@pytest.mark.parametrize("alpn", ["h2", "http/1.1"])
@pytest.mark.parametrize("mode", ["packet-up", "stream-up", "stream-one"])
async def test_every_mode_is_byte_exact(tmp_path: Path, alpn: str, mode: str) -> None:
    echo, echo_port = await echo_server()
    async with echo, Engine(from_mapping(config(tmp_path))) as srv:
        port = srv.inbounds[0].port  # type: ignore[attr-defined]
        settings = xhttp.XhttpSettings(path=PATH, mode=mode)
        target = client.Target("127.0.0.1", port, context(alpn), "localhost", "localhost", settings)
        payload = os.urandom(3 << 20)
        try:
            got, stream = await echo_through(target, echo_port, payload)
            assert got[:2] == b"\x00\x00"
            assert hashlib.sha256(got[2:]).digest() == hashlib.sha256(payload).digest()
            assert stream.pool.http2 is (alpn == "h2")
            stream.close()
        finally:
            client.close_pools()


async def test_streams_share_a_pool_of_three_h2_connections(tmp_path: Path) -> None:
    echo, echo_port = await echo_server()
    async with echo, Engine(from_mapping(config(tmp_path))) as srv:
        port = srv.inbounds[0].port  # type: ignore[attr-defined]
        settings = xhttp.XhttpSettings(path=PATH, mode="packet-up")
        target = client.Target("127.0.0.1", port, context("h2"), "localhost", "localhost", settings)
        try:
            results = await asyncio.gather(
                *(echo_through(target, echo_port, os.urandom(10_000)) for _ in range(12))
            )
            pool = client.pool_for(target)
            assert 1 <= pool.handshakes <= 3  # 12 sessions, 24+ requests: at most 3 handshakes
            for _, stream in results:
                stream.close()
        finally:
            client.close_pools()


async def test_a_spent_connection_is_replaced(tmp_path: Path) -> None:
    echo, echo_port = await echo_server()
    async with echo, Engine(from_mapping(config(tmp_path))) as srv:
        port = srv.inbounds[0].port  # type: ignore[attr-defined]
        extra = '{"xmux": {"maxConnections": 1, "hMaxRequestTimes": 2}}'
        settings = xhttp.XhttpSettings.parse(PATH, None, "packet-up", extra)
        target = client.Target("127.0.0.1", port, context("h2"), "localhost", "localhost", settings)
        try:
            for _ in range(3):  # each session: a GET and a POST
                _, stream = await echo_through(target, echo_port, b"abc")
                stream.close()
            assert client.pool_for(target).handshakes == 3
        finally:
            client.close_pools()


@pytest.mark.parametrize("kind", ["vless", "trojan"])
@pytest.mark.parametrize("alpn", [None, "http/1.1"])
async def test_engines_carry_tcp_over_xhttp(tmp_path: Path, kind: str, alpn: str | None) -> None:
    """A client engine (tunnel inbound, vless/trojan outbound with network = "xhttp") to the
    server engine's TLS port: byte-exact, HTTP/2 unless the outbound asks for HTTP/1.1."""
    echo, echo_port = await echo_server()
    server = config(tmp_path)
    server["inbounds"][0]["trojan"] = [{"id": "tom", "password": "pw"}]
    secret = {"password": "pw"} if kind == "trojan" else {"uuid": UUID}
    outbound = {
        "type": kind,
        "server": "127.0.0.1",
        "sni": "localhost",
        "insecure": True,
        "network": "xhttp",
        "path": PATH,
        "mode": "packet-up",
        **secret,
        **({"alpn": alpn} if alpn else {}),
    }
    async with echo, Engine(from_mapping(server)) as srv:
        outbound["port"] = srv.inbounds[0].port  # type: ignore[attr-defined]
        client_config = {
            "inbounds": [{"type": "tunnel", "port": 0, "destination": f"127.0.0.1:{echo_port}"}],
            "outbounds": [outbound],
        }
        async with Engine(from_mapping(client_config)) as cli:
            local = cli.inbounds[0].port  # type: ignore[attr-defined]
            payload = os.urandom(2 << 20)
            answers = []
            for _ in range(3):  # three sessions, one pool
                reader, writer = await asyncio.open_connection("127.0.0.1", local)
                writer.write(payload)
                answers.append(await asyncio.wait_for(reader.readexactly(len(payload)), 30))
                writer.close()
            pools = list(xhttp_pool._pools.get(asyncio.get_running_loop(), {}).values())
            assert len(pools) == 1
            assert pools[0].http2 is (alpn is None)
            if alpn is None:
                assert pools[0].handshakes <= 3
        assert pools[0].closed  # the pool ends with the outbound
    for answer in answers:
        assert hashlib.sha256(answer).digest() == hashlib.sha256(payload).digest()
