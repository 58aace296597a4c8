"""The WebSocket transport with a browser's TLS fingerprint (transports.browser_ws over curl_cffi):
the ClientHello it sends is Chrome's, not Python's, as JA4 sees it; without curl_cffi the plain
stack is taken (its tls layer sends elsewhere's own Chrome hello) with one note; and as a
stream it keeps order, backpressure both ways, the half-close and the ends, against a server
made of our own WebSocket codec."""

from __future__ import annotations

import asyncio
import builtins
import hashlib
import logging
import os
import ssl
import struct
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from elsewhere.codecs import websocket
from elsewhere.control.certs import self_signed
from elsewhere.errors import ConfigError
from elsewhere.lab import fingerprints
from elsewhere.transports import browser as browser_module
from elsewhere.transports.browser_ws import BrowserWebSocket
from elsewhere.transports.dial import dial
from elsewhere.transports.layer import Pending
from elsewhere.transports.settings import StreamSettings
from elsewhere.transports.tls import server_context
from elsewhere.transports.websocket import WebSocketLayer

PATH = "/ws-secret"
CHROME = StreamSettings(sni="localhost", insecure=True, network="ws", path=PATH,
                        fingerprint="chrome")
CHUNK = 1 << 16
STALLED = 512 * 1024


# -- a ClientHello as JA4 (FoxIO) reads it -----------------------------------------------------


@dataclass(frozen=True)
class Hello:
    ciphers: tuple[int, ...]
    extensions: tuple[int, ...]  # wire order
    alpn: tuple[str, ...]
    server_name: str | None
    versions: tuple[int, ...]
    groups: tuple[int, ...]
    signatures: tuple[int, ...]


def is_grease(value: int) -> bool:
    return value & 0x0F0F == 0x0A0A and value >> 8 == value & 0xFF  # RFC 8701


def u16s(data: bytes) -> tuple[int, ...]:
    return struct.unpack(f"!{len(data) // 2}H", data[: len(data) // 2 * 2])


def parse_hello(record: bytes) -> Hello:
    """RFC 8446 §4.1.2, from the first record (a whole ClientHello: ours are < 2^14 bytes)."""
    assert record[0] == 0x16 and record[5] == 0x01, "not a ClientHello record"
    body = record[9:]
    at = 2 + 32  # legacy_version, random
    at += 1 + body[at]  # legacy_session_id
    length = int.from_bytes(body[at : at + 2], "big")
    ciphers = u16s(body[at + 2 : at + 2 + length])
    at += 2 + length
    at += 1 + body[at]  # legacy_compression_methods
    end = at + 2 + int.from_bytes(body[at : at + 2], "big")
    at += 2
    extensions: list[int] = []
    fields: dict[str, Any] = {"alpn": (), "server_name": None, "versions": (), "groups": (),
                              "signatures": ()}
    while at < end:
        kind, size = struct.unpack_from("!HH", body, at)
        data = body[at + 4 : at + 4 + size]
        at += 4 + size
        extensions.append(kind)
        if kind == 0x0000:  # server_name
            fields["server_name"] = data[5:].decode()
        elif kind == 0x0010:  # ALPN
            names, rest = [], data[2:]
            while rest:
                names.append(rest[1 : 1 + rest[0]].decode())
                rest = rest[1 + rest[0] :]
            fields["alpn"] = tuple(names)
        elif kind == 0x002B:
            fields["versions"] = u16s(data[1:])
        elif kind == 0x000A:
            fields["groups"] = u16s(data[2:])
        elif kind == 0x000D:
            fields["signatures"] = u16s(data[2:])
    return Hello(ciphers=ciphers, extensions=tuple(extensions), **fields)


def ja4(hello: Hello) -> str:
    """JA4 a_b_c: TLS version, SNI or not, counts, ALPN ends; sorted ciphers; sorted extensions
    without SNI/ALPN plus signature algorithms in order. GREASE is left out throughout."""
    ciphers = [c for c in hello.ciphers if not is_grease(c)]
    extensions = [e for e in hello.extensions if not is_grease(e)]
    version = {0x0304: "13", 0x0303: "12"}[max(v for v in hello.versions if not is_grease(v))]
    first = hello.alpn[0] if hello.alpn else ""
    alpn = first[0] + first[-1] if first else "00"
    part_a = (f"t{version}{'d' if hello.server_name else 'i'}"
              f"{len(ciphers):02d}{len(extensions):02d}{alpn}")
    part_b = hashlib.sha256(",".join(sorted(f"{c:04x}" for c in ciphers)).encode())
    hashed = ",".join(sorted(f"{e:04x}" for e in extensions if e not in (0x0000, 0x0010)))
    signatures = ",".join(f"{s:04x}" for s in hello.signatures)
    part_c = hashlib.sha256(f"{hashed}_{signatures}".encode())
    return f"{part_a}_{part_b.hexdigest()[:12]}_{part_c.hexdigest()[:12]}"


def stdlib_hello(settings: StreamSettings) -> bytes:
    """The ClientHello the stdlib path sends for `settings`, made into memory."""
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    tls = settings.context().wrap_bio(incoming, outgoing, server_hostname=settings.sni)
    with suppress(ssl.SSLWantReadError):
        tls.do_handshake()
    return outgoing.read()


@asynccontextmanager
async def hello_catcher() -> AsyncIterator[tuple[int, list[bytes]]]:
    """A TCP server that keeps the first TLS record of each connection, then hangs up."""
    records: list[bytes] = []

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await reader.readexactly(5)
        records.append(head + await reader.readexactly(int.from_bytes(head[3:5], "big")))
        writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    async with server:
        yield server.sockets[0].getsockname()[1], records


async def hello_of(settings: StreamSettings) -> bytes:
    async with hello_catcher() as (port, records):
        with pytest.raises(OSError):
            await dial(settings, "127.0.0.1", port)
    return records[0]


async def test_the_client_hello_is_chromes_not_pythons() -> None:
    browser = parse_hello(await hello_of(CHROME))
    python = parse_hello(stdlib_hello(CHROME))
    # Chrome's sixteen suites (JA4_b 8daaf6152771 is Chrome's, published by FoxIO), GREASE
    # first; and a WebSocket connection offers http/1.1 alone, as Chrome's own do
    assert ja4(browser).startswith("t13d1516h1_8daaf6152771_")
    assert is_grease(browser.ciphers[0])
    assert any(is_grease(e) for e in browser.extensions)
    assert any(is_grease(g) for g in browser.groups)
    assert browser.alpn == ("http/1.1",)
    assert browser.server_name == "localhost"
    # OpenSSL's hello: no GREASE anywhere, more suites, other extensions
    assert not any(map(is_grease, python.ciphers + python.extensions + python.groups))
    assert ja4(python).split("_")[0] == "t13d1812h1"
    assert ja4(python).split("_")[1:] != ja4(browser).split("_")[1:]


async def test_extension_order_changes_per_connection_as_chromes_does() -> None:
    hellos = [parse_hello(await hello_of(CHROME)) for _ in range(3)]
    assert len({hello.extensions for hello in hellos}) > 1  # 16! orders: a repeat is 1 in 2e13
    assert len({ja4(hello) for hello in hellos}) == 1  # JA4 sorts them away


def test_fp_names_a_browser() -> None:
    def fp(value: object) -> str | None:
        return StreamSettings.from_options("proxy", {"network": "ws", "fp": value}).fingerprint

    assert fp("chrome") == "chrome"
    assert fp("Firefox") == "firefox"
    assert fp("") is None
    assert fp("none") is None
    assert StreamSettings.from_options("proxy", {}).fingerprint is None
    with pytest.raises(ConfigError, match=r"outbound \"proxy\": fp 'netscape' is not a browser"):
        fp("netscape")


async def test_without_curl_cffi_our_own_browser_hello_goes_out_with_one_note(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    real_import = builtins.__import__

    def no_curl_cffi(name: str, *args: Any, **kwargs: Any) -> Any:
        if name.startswith(("curl_cffi", "elsewhere.transports.browser_ws")):
            raise ImportError(f"No module named {name!r}")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_curl_cffi)
    browser_module.browser_dialer.cache_clear()
    try:
        with caplog.at_level(logging.INFO, logger="elsewhere.transports"):
            first = parse_hello(await hello_of(CHROME))
            second = parse_hello(await hello_of(CHROME))
    finally:
        browser_module.browser_dialer.cache_clear()
    ours = fingerprints.resolve(["chrome"])  # elsewhere's TLS client, not Python's
    assert ja4(first) == ja4(second) and ja4(first) in ours
    assert ja4(first) != ja4(parse_hello(stdlib_hello(CHROME)))
    notes = [r for r in caplog.records if "curl_cffi is not installed" in r.getMessage()]
    assert len(notes) == 1 and notes[0].levelno == logging.INFO


# -- the stream, against a server made of our own codec ----------------------------------------


class Peer(asyncio.Protocol):
    """One end of a stream as a test watches it."""

    def __init__(self) -> None:
        self.transport: Any = None
        self.data = bytearray()
        self.eof = False
        self.lost: list[Exception | None] = []
        self.paused = False
        self.pauses = 0
        self.received_while_paused = 0
        self.reading = True
        self.written = 0
        self.changed = asyncio.Event()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport
        self.changed.set()

    def data_received(self, data: bytes) -> None:
        if not self.reading:
            self.received_while_paused += len(data)
        self.data += data
        self.changed.set()

    def eof_received(self) -> bool:
        self.eof = True
        self.changed.set()
        return True

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost.append(exc)
        self.changed.set()

    def pause_writing(self) -> None:
        self.paused = True
        self.pauses += 1
        self.changed.set()

    def resume_writing(self) -> None:
        self.paused = False
        self.changed.set()

    def pause_reading(self) -> None:
        self.reading = False
        self.transport.pause_reading()

    def resume_reading(self) -> None:
        self.reading = True
        self.transport.resume_reading()

    async def until(self, condition: Callable[[], bool]) -> None:
        async with asyncio.timeout(20):
            while not condition():
                self.changed.clear()
                await self.changed.wait()

    async def pump(self, payload: bytes) -> None:
        """Write `payload` in chunks, honouring pause_writing as the relay does."""
        for at in range(0, len(payload), CHUNK):
            await self.until(lambda: not self.paused)
            self.transport.write(payload[at : at + CHUNK])
            self.written += len(payload[at : at + CHUNK])
            await asyncio.sleep(0)  # let the loop move bytes between writes


class Upgrade(asyncio.Protocol):
    """The server side: our codec answers the upgrade and hands the stream to a Peer."""

    def __init__(self, peers: asyncio.Queue[Peer]) -> None:
        self.peers = peers
        self.buffer = b""
        self.transport: Any = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        request = websocket.parse_handshake(self.buffer, path=PATH)
        if request is None:
            return
        self.transport.write(websocket.accept_response(request.websocket_key or ""))
        peer = Peer()
        layer = WebSocketLayer(client=False, upper=peer)
        self.transport.set_protocol(layer)
        layer.connection_made(self.transport)
        if rest := self.buffer[request.header_length :]:
            layer.data_received(rest)
        self.peers.put_nowait(peer)


@asynccontextmanager
async def connected(tmp_path: Path) -> AsyncIterator[tuple[Peer, Peer, BrowserWebSocket]]:
    """(client side, server side, the client's stream) of one browser WebSocket."""
    cert, key, _ = self_signed(tmp_path, ["localhost"])
    peers: asyncio.Queue[Peer] = asyncio.Queue()
    loop = asyncio.get_running_loop()
    server = await loop.create_server(
        lambda: Upgrade(peers), "127.0.0.1", 0, ssl=server_context(cert, key)
    )
    async with server:
        port = server.sockets[0].getsockname()[1]
        stream = await dial(CHROME, "127.0.0.1", port)
        assert isinstance(stream, BrowserWebSocket)
        assert stream.get_extra_info("peername") == ("127.0.0.1", port)
        assert stream.get_extra_info("sockname")[0] == "127.0.0.1"
        held = stream.get_protocol()
        client = Peer()
        stream.set_protocol(client)
        client.connection_made(stream)
        assert isinstance(held, Pending) and not held.chunks
        far = await asyncio.wait_for(peers.get(), 10)
        try:
            yield client, far, stream
        finally:
            stream.abort()
            far.transport.abort()


async def test_bytes_cross_both_ways_whole_and_in_order(tmp_path: Path) -> None:
    up, down = os.urandom(3 << 20), os.urandom(3 << 20)
    async with connected(tmp_path) as (client, far, _):
        await asyncio.gather(client.pump(up), far.pump(down))
        await client.until(lambda: len(client.data) >= len(down))
        await far.until(lambda: len(far.data) >= len(up))
    assert bytes(client.data) == down
    assert bytes(far.data) == up


async def test_a_paused_reader_is_handed_nothing_until_resumed(tmp_path: Path) -> None:
    payload = os.urandom(8 << 20)
    async with connected(tmp_path) as (client, far, stream):
        client.pause_reading()
        assert not stream.is_reading()
        pumping = asyncio.ensure_future(far.pump(payload))
        # the server has sent far more than it buffers itself, and waits for the wire
        await far.until(lambda: far.paused and far.written >= STALLED)
        assert client.received_while_paused == 0
        assert len(client.data) == 0
        client.resume_reading()
        await client.until(lambda: len(client.data) >= len(payload))
        await pumping
    assert bytes(client.data) == payload


async def test_a_server_that_stops_reading_pauses_the_writer(tmp_path: Path) -> None:
    payload = os.urandom(32 << 20)
    async with connected(tmp_path) as (client, far, stream):
        stream.set_write_buffer_limits(high=256 * 1024)
        far.pause_reading()
        pumping = asyncio.ensure_future(client.pump(payload))
        await client.until(lambda: client.paused)
        assert stream.get_write_buffer_size() > 256 * 1024
        far.resume_reading()
        await far.until(lambda: len(far.data) >= len(payload))
        await pumping
        assert not client.paused
        assert stream.get_write_buffer_size() == 0
    assert client.pauses >= 1
    assert bytes(far.data) == payload


async def test_write_eof_sends_a_close_after_the_data_and_the_answering_close_ends_it(
    tmp_path: Path,
) -> None:
    """RFC 6455 has no half-close: like WebSocketLayer, write_eof() is our Close, which the
    server's codec answers at once (§5.5.1), and that ends the stream both ways."""
    async with connected(tmp_path) as (client, far, stream):
        assert stream.can_write_eof()
        stream.write(b"the request")
        stream.write_eof()
        stream.write(b"nothing after the Close")
        await far.until(lambda: far.eof)
        await client.until(lambda: bool(client.lost))
    assert bytes(far.data) == b"the request"
    assert client.eof
    assert client.lost == [None]


async def test_the_servers_close_is_an_eof_after_its_last_data(tmp_path: Path) -> None:
    async with connected(tmp_path) as (client, far, _):
        far.transport.write(b"the answer")
        far.transport.close()  # WebSocketLayer sends its Close first
        await client.until(lambda: bool(client.lost))
    assert bytes(client.data) == b"the answer"
    assert client.eof
    assert client.lost == [None]


async def test_a_tls_end_without_a_close_frame_is_an_eof(tmp_path: Path) -> None:
    async with connected(tmp_path) as (client, far, _):
        far.transport.write(b"last words")
        far.transport.lower.close()  # close_notify and FIN, no WebSocket Close
        await client.until(lambda: bool(client.lost))
    assert bytes(client.data) == b"last words"
    assert client.eof
    assert client.lost == [None]


async def test_close_sends_what_was_written_then_a_close(tmp_path: Path) -> None:
    payload = os.urandom(2 << 20)
    async with connected(tmp_path) as (client, far, stream):
        stream.write(payload)
        stream.close()
        assert stream.is_closing()
        await far.until(lambda: far.eof)
        await client.until(lambda: bool(client.lost))
    assert bytes(far.data) == payload
    assert client.lost == [None]


async def test_abort_ends_the_stream_at_once(tmp_path: Path) -> None:
    async with connected(tmp_path) as (client, far, stream):
        stream.write(b"never mind")
        stream.abort()
        stream.abort()
        await client.until(lambda: bool(client.lost))
        await far.until(lambda: bool(far.lost))
        stream.write(b"ignored after the end")
    assert client.lost == [None]
    assert stream.is_closing()


async def test_writing_on_after_the_servers_close_ends_cleanly(tmp_path: Path) -> None:
    """The relay may still be writing when the server's Close arrives: the rest is dropped and
    the stream ends as after any Close, not with an error that would reset the user's side."""
    async with connected(tmp_path) as (client, far, stream):
        pumping = asyncio.ensure_future(client.pump(os.urandom(16 << 20)))
        await far.until(lambda: len(far.data) > 0)
        far.transport.write(b"goodbye")
        far.transport.close()
        await client.until(lambda: bool(client.lost))
        await pumping
    assert bytes(client.data) == b"goodbye"
    assert client.eof
    assert client.lost == [None]
    assert stream.get_write_buffer_size() == 0
