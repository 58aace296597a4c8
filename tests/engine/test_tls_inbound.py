"""The TLS-family server: Trojan and VLESS raw, over WebSocket and httpupgrade; everything else
to the fallback, byte for byte."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import ssl
from pathlib import Path

import pytest
from tls_helpers import make_cert

from elsewhere.codecs import http_upgrade, trojan, vless, websocket
from elsewhere.config import from_mapping
from elsewhere.engine import Engine
from elsewhere.session import Destination

UUID = "b831381d-6324-4d53-ad4f-8cda48b30811"
PASSWORD = "trojan-secret"
FALLBACK_PAGE = b"HTTP/1.1 200 OK\r\nContent-Length: 9\r\nConnection: close\r\n\r\nfallback!"


async def echo_server() -> tuple[asyncio.Server, int]:
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
        writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    return server, server.sockets[0].getsockname()[1]


async def fallback_server() -> tuple[asyncio.Server, int, list[bytes]]:
    seen: list[bytes] = []

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        seen.append(await reader.read(65536))
        writer.write(FALLBACK_PAGE)
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    return server, server.sockets[0].getsockname()[1], seen


def server_config(tmp: Path, fallback_port: int) -> dict:
    cert, key = make_cert(tmp)
    return {
        "inbounds": [
            {
                "type": "tls",
                "listen": "127.0.0.1",
                "port": 0,
                "cert": str(cert),
                "key": str(key),
                "trojan": [{"id": "tom", "password": PASSWORD}],
                "vless": [{"id": "vera", "uuid": UUID}],
                "websocket": {"path": "/ws-secret"},
                "httpupgrade": {"path": "/hu-secret"},
                "fallback": f"127.0.0.1:{fallback_port}",
                "decide_timeout": 0.5,
            }
        ],
        "outbounds": [{"type": "direct", "private": "allow"}],
        "timeouts": {"idle": 5},
    }


@functools.cache
def client_tls() -> ssl.SSLContext:
    """The one context of the TLS clients here and in test_no_leaks. Not a
    create_default_context() per connection: that loads the system's CA store (~30 ms of the
    event loop the server shares, each time; unused with CERT_NONE), which was most of
    test_no_leaks' mix time and, under load, pushed its clients past their CLIENT_WAIT."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    ctx.set_alpn_protocols(["http/1.1"])
    return ctx


async def open_tls(port: int) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    return await asyncio.open_connection(
        "127.0.0.1", port, ssl=client_tls(), server_hostname="localhost"
    )


def first_bytes(kind: str, dest: Destination, payload: bytes) -> bytes:
    if kind == "trojan":
        return trojan.encode_request(
            trojan.password_hash(PASSWORD), trojan.CMD_CONNECT, dest, payload
        )
    return vless.encode_request(vless.parse_uuid(UUID), vless.CMD_TCP, dest, payload)


@pytest.fixture
async def servers(tmp_path: Path):  # type: ignore[no-untyped-def]
    echo, echo_port = await echo_server()
    fallback, fallback_port, seen = await fallback_server()
    async with echo, fallback, Engine(from_mapping(server_config(tmp_path, fallback_port))) as e:
        yield e, e.inbounds[0].port, echo_port, seen


@pytest.mark.parametrize("kind", ["trojan", "vless"])
@pytest.mark.parametrize("carrier", ["tls", "ws", "httpupgrade"])
async def test_client_reaches_echo(servers, kind: str, carrier: str) -> None:  # type: ignore[no-untyped-def]
    engine, port, echo_port, seen = servers
    reader, writer = await open_tls(port)
    payload = b"hello through " + carrier.encode() + b" " * 3000
    first = first_bytes(kind, Destination("127.0.0.1", echo_port), payload)
    if carrier == "ws":
        key = websocket.new_key()
        writer.write(websocket.handshake_request("localhost", "/ws-secret", key, early_data=first))
        head = await reader.readuntil(b"\r\n\r\n")
        assert websocket.parse_handshake_response(head, key) == len(head)
        decoder = websocket.FrameDecoder(client=True)
        got = b""
        while len(got) < len(payload) + (2 if kind == "vless" else 0):
            decoder.feed(await asyncio.wait_for(reader.read(65536), 5))
            while (event := decoder.next_event()) is not None:
                assert isinstance(event, websocket.Data)
                got += event.payload
    else:
        if carrier == "httpupgrade":
            key = websocket.new_key()
            writer.write(http_upgrade.request_head("localhost", "/hu-secret", key) + first)
            head = await reader.readuntil(b"\r\n\r\n")
            assert head.startswith(b"HTTP/1.1 101")
        else:
            writer.write(first)
        want = len(payload) + (2 if kind == "vless" else 0)
        got = await asyncio.wait_for(reader.readexactly(want), 5)
    if kind == "vless":
        assert got[:2] == vless.encode_response()
        got = got[2:]
    assert got == payload
    writer.close()
    assert seen == []
    assert engine.stats.probes == 0


@pytest.mark.parametrize(
    "probe",
    [
        b"GET / HTTP/1.1\r\nHost: example.com\r\n\r\n",
        b"GET /ws-wrong HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\n"
        b"Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
        b"Sec-WebSocket-Version: 13\r\n\r\n",
        trojan.password_hash("wrong") + b"\r\n\x01\x01\x7f\x00\x00\x01\x00\x50\r\n",
        bytes(1) + bytes(16) + b"\x00\x01\x00\x50\x01\x7f\x00\x00\x01",
        b"\x16\x03\x01garbage that is not anything",
    ],
    ids=["browser", "wrong-ws-path", "wrong-trojan-password", "wrong-vless-uuid", "garbage"],
)
async def test_strangers_get_the_fallback_with_every_byte(servers, probe: bytes) -> None:  # type: ignore[no-untyped-def]
    engine, port, _, seen = servers
    reader, writer = await open_tls(port)
    writer.write(probe)
    answer = await asyncio.wait_for(reader.read(-1), 5)
    writer.close()
    assert answer == FALLBACK_PAGE
    assert seen == [probe]
    assert engine.stats.probes == 1


async def test_half_sent_header_goes_to_the_fallback_when_nothing_more_comes(servers) -> None:  # type: ignore[no-untyped-def]
    _engine, port, echo_port, seen = servers
    reader, writer = await open_tls(port)
    whole = first_bytes("trojan", Destination("127.0.0.1", echo_port), b"")
    writer.write(whole[:40])
    answer = await asyncio.wait_for(reader.read(-1), 5)
    writer.close()
    assert answer == FALLBACK_PAGE
    assert seen == [whole[:40]]


def without_date(response: bytes) -> bytes:
    return b"\r\n".join(line for line in response.split(b"\r\n") if not line.startswith(b"Date:"))


@pytest.mark.parametrize(
    "probe",
    [
        b"GET / HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n",
        b"GET /nothing-here HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n",
        trojan.password_hash(PASSWORD)[:30],  # half a Trojan header: nginx answers 400 at once
        b"\x00" + bytes(10),
    ],
    ids=["index", "404", "half-trojan-header", "half-vless-header"],
)
async def test_decoy_fallback_answers_like_the_decoy_alone(tmp_path: Path, probe: bytes) -> None:
    from elsewhere.web.decoy import DecoySite
    from elsewhere.web.decoy_content import default_content

    config = server_config(tmp_path, 1)
    config["inbounds"][0]["fallback"] = "decoy"
    config["inbounds"][0]["decide_timeout"] = 30
    async with Engine(from_mapping(config)) as engine:
        reader, writer = await open_tls(engine.inbounds[0].port)  # type: ignore[attr-defined]
        writer.write(probe)
        answer = await asyncio.wait_for(reader.read(-1), 5)
        writer.close()
    alone = DecoySite(default_content(), now=0)
    alone.feed(probe, 0)
    expected = alone.data_to_send()
    assert expected, "the decoy answers these at once"
    assert without_date(answer) == without_date(expected)
    assert engine.stats.probes == 1


# bytes that start no TLS at all


async def test_plain_http_to_the_tls_port_gets_nginxs_page_for_it_and_no_fallback(servers) -> None:  # type: ignore[no-untyped-def]
    engine, port, _, seen = servers
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"GET / HTTP/1.1\r\nHost: example.com\r\n\r\n")
    answer = await asyncio.wait_for(reader.read(-1), 5)
    writer.close()
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 400 Bad Request\r\nServer: nginx/1.22.1\r\n")
    assert b"<center>The plain HTTP request was sent to HTTPS port</center>" in body
    assert seen == []  # the upstream web server is plain HTTP behind our TLS: not asked
    assert engine.stats.probes == 1


def test_the_handshake_and_a_plain_head_get_nginxs_60_seconds_unless_set(tmp_path: Path) -> None:
    from elsewhere.inbounds.fallback import DecoyFallback
    from elsewhere.inbounds.tls import TlsInbound
    from elsewhere.transports.tls_layer import TlsServerLayer

    options = server_config(tmp_path, 1)["inbounds"][0] | {"fallback": "decoy"}
    for given, expected in (({}, 60.0), ({"client_header_timeout": 7}, 7.0)):
        inbound = TlsInbound("tls", options | given)
        layer = inbound._accepted()
        assert isinstance(layer, TlsServerLayer) and layer.handshake_timeout == expected
        assert isinstance(inbound.fallback, DecoyFallback)
        assert inbound.fallback.header_timeout == expected == inbound.header_timeout


@pytest.mark.parametrize("sent", [b"", b"\x16\x03\x01\x02", b"GET / HTTP/1.1\r\n"])
async def test_nothing_or_too_little_is_closed_silently_client_header_timeout_after_accept(
    tmp_path: Path, sent: bytes
) -> None:
    config = server_config(tmp_path, 1)
    config["inbounds"][0]["client_header_timeout"] = 0.3
    async with Engine(from_mapping(config)) as engine:
        reader, writer = await asyncio.open_connection("127.0.0.1", engine.inbounds[0].port)  # type: ignore[attr-defined]
        start = asyncio.get_running_loop().time()
        writer.write(sent)
        answer = await asyncio.wait_for(reader.read(-1), 5)  # a FIN: no reset, no bytes
        waited = asyncio.get_running_loop().time() - start
        writer.close()
        assert answer == b"" and 0.25 < waited < 2
        assert engine.stats.probes == 1


async def test_connections_proxied_to_an_upstream_end_when_the_server_stops(
    tmp_path: Path,
) -> None:
    """An upstream that keeps a stranger's connection open (a long download, a slow client)
    must not keep it past the server's stop, on either side."""
    request = b"GET /big HTTP/1.1\r\nHost: x\r\n\r\n"
    upstream_got: asyncio.Queue[bytes] = asyncio.Queue()
    upstream_ended = asyncio.Event()

    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await upstream_got.put(await reader.read(65536))
        with contextlib.suppress(ConnectionError):
            await reader.read()  # until elsewhere ends its side
        upstream_ended.set()
        writer.close()

    upstream = await asyncio.start_server(silent, "127.0.0.1", 0)
    async with upstream:
        config = server_config(tmp_path, upstream.sockets[0].getsockname()[1])
        engine = Engine(from_mapping(config))
        await engine.start()
        try:
            reader, writer = await open_tls(engine.inbounds[0].port)  # type: ignore[attr-defined]
            writer.write(request)
            assert await asyncio.wait_for(upstream_got.get(), 5) == request
        finally:
            await engine.stop()
        await asyncio.wait_for(upstream_ended.wait(), 5)
        rest = b""
        with contextlib.suppress(ConnectionError, ssl.SSLError):  # a RST is an end too
            rest = await asyncio.wait_for(reader.read(-1), 5)
        assert rest == b""
        writer.close()


async def test_an_upgrade_registered_outside_src_is_routed_by_its_option(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """transports.registry's acceptors: the TLS inbound knows no upgrade by name."""
    from elsewhere.transports.layer import Layer
    from elsewhere.transports.registry import ACCEPTORS, Acceptor, acceptors

    def accept(transport: asyncio.Transport, request: http_upgrade.UpgradeRequest) -> Layer:
        transport.write(b"HTTP/1.1 101 Switching Protocols\r\nX-Test: yes\r\n\r\n")
        return Layer()

    def parse(
        buf: bytes | bytearray, path: str, host: str | None
    ) -> http_upgrade.UpgradeRequest | None:
        return http_upgrade.parse_request(buf, path=path, host=host)

    acceptors()
    monkeypatch.setitem(ACCEPTORS, "test-up", Acceptor("test-up", "test_up", parse, accept))
    echo, echo_port = await echo_server()
    fallback, fallback_port, seen = await fallback_server()
    config = server_config(tmp_path, fallback_port)
    config["inbounds"][0]["test_up"] = "/test-secret"
    async with echo, fallback, Engine(from_mapping(config)) as engine:
        assert "test-up /test-secret" in engine.inbounds[0].describe()
        reader, writer = await open_tls(engine.inbounds[0].port)  # type: ignore[attr-defined]
        first = first_bytes("trojan", Destination("127.0.0.1", echo_port), b"ping")
        writer.write(http_upgrade.request_head("localhost", "/test-secret", "") + first)
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
        assert b"X-Test: yes" in head
        assert await asyncio.wait_for(reader.readexactly(4), 5) == b"ping"
        writer.close()
    assert seen == []
