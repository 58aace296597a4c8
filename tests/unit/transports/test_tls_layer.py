"""The server-side TLS layer: on the wire, a failed handshake ends as OpenSSL web servers end it
(OpenSSL's reply and alert, then a FIN) and is reported; past the handshake, plaintext flows
both ways, close_notify goes out on close and comes up as an end of stream, reading paused above
holds records back, a lingering close sends close_notify and a FIN and reads on without
decrypting, and a renewed certificate is picked up through the SNI callback. Flow control
and endings are driven in memory (a client on memory BIOs, a fake TCP transport below)."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import shutil
import ssl
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from elsewhere.control.certs import self_signed
from elsewhere.transports.tls import ServerCertificate, certificate_pin, server_context
from elsewhere.transports.tls_layer import HANDSHAKE_TIMEOUT, READ_CHUNK, TlsServerLayer

TIMEOUT = 5.0
ALERT, HANDSHAKE, CCS, APPLICATION_DATA = 21, 22, 20, 23  # RFC 8446 §5.1 content types


@pytest.fixture
def cert(tmp_path: Path) -> tuple[Path, Path, str]:
    return self_signed(tmp_path / "a", ["localhost", "127.0.0.1"])


def client_context() -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    context.set_alpn_protocols(["h2", "http/1.1"])
    return context


def record_types(data: bytes) -> list[int]:
    kinds, offset = [], 0
    while offset + 5 <= len(data):
        kinds.append(data[offset])
        offset += 5 + int.from_bytes(data[offset + 3 : offset + 5], "big")
    return kinds


class Upper(asyncio.Protocol):
    """The protocol above the layer: keeps what it is told; what it does is set per test."""

    def __init__(self) -> None:
        self.transport: Any = None
        self.received = bytearray()
        self.chunks: list[int] = []
        self.eof = False
        self.lost: list[Exception | None] = []
        self.writing_paused = 0
        self.on_data: Callable[[Upper, bytes], None] | None = None
        self.on_eof: Callable[[Upper], bool] = lambda upper: False
        self.on_made: Callable[[Upper], None] | None = None
        self.changed = asyncio.Event()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport
        if self.on_made is not None:
            self.on_made(self)

    def data_received(self, data: bytes) -> None:
        self.received += data
        self.chunks.append(len(data))
        self.changed.set()
        if self.on_data is not None:
            self.on_data(self, data)

    def eof_received(self) -> bool:
        self.eof = True
        self.changed.set()
        return self.on_eof(self)

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost.append(exc)
        self.changed.set()

    def pause_writing(self) -> None:
        self.writing_paused += 1

    def resume_writing(self) -> None:
        self.writing_paused -= 1

    async def wait(self, done: Callable[[], bool]) -> None:
        async with asyncio.timeout(TIMEOUT):
            while not done():
                self.changed.clear()
                await self.changed.wait()


# on the wire


@contextlib.asynccontextmanager
async def layer_server(
    context: ssl.SSLContext, make_upper: Callable[[], Upper], **options: Any
) -> AsyncIterator[tuple[int, list[BaseException | None], list[Upper]]]:
    """A TCP server whose accepted connections each get a TlsServerLayer; yields the port, the
    failures reported, and the protocols above in the order of accepting."""
    failures: list[BaseException | None] = []
    uppers: list[Upper] = []

    def accepted() -> TlsServerLayer:
        uppers.append(make_upper())
        return TlsServerLayer(context, uppers[-1], on_handshake_failed=failures.append, **options)

    server = await asyncio.get_running_loop().create_server(accepted, "127.0.0.1", 0)
    async with server:
        yield server.sockets[0].getsockname()[1], failures, uppers


async def send_raw(port: int, data: bytes, eof: bool = False) -> tuple[bytes, str]:
    """Plain TCP: send `data` (then a FIN with `eof`), read until the server ends it."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(data)
        if eof:
            writer.write_eof()
        got = b""
        async with asyncio.timeout(TIMEOUT):
            while True:
                try:
                    chunk = await reader.read(65536)
                except ConnectionResetError:
                    return got, "reset"
                if not chunk:
                    return got, "closed"
                got += chunk
    finally:
        writer.close()


def client_hello() -> bytes:
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    client = client_context().wrap_bio(incoming, outgoing, server_hostname="localhost")
    with contextlib.suppress(ssl.SSLWantReadError):
        client.do_handshake()
    return outgoing.read()


def echo() -> Upper:
    upper = Upper()
    upper.on_data = lambda self, data: self.transport.write(data)
    return upper


async def test_plaintext_flows_both_ways_byte_exact_with_alpn_and_peer_passed_through(
    cert: tuple[Path, Path, str],
) -> None:
    async with layer_server(server_context(cert[0], cert[1]), echo) as (port, failures, uppers):
        reader, writer = await asyncio.open_connection(
            "127.0.0.1", port, ssl=client_context(), server_hostname="localhost"
        )
        payload = os.urandom(4 << 20)
        writer.write(payload)
        answer = await asyncio.wait_for(reader.readexactly(len(payload)), TIMEOUT)
        layer = uppers[0].transport
        assert layer.get_extra_info("ssl_object").selected_alpn_protocol() == "http/1.1"
        assert layer.get_extra_info("cipher")[1] == "TLSv1.3"
        assert layer.get_extra_info("peername") == writer.get_extra_info("sockname")
        assert writer.get_extra_info("ssl_object").getpeercert(binary_form=True) is not None
        writer.close()
    assert hashlib.sha256(answer).digest() == hashlib.sha256(payload).digest()
    assert max(uppers[0].chunks) > 16384  # handed up in large chunks, not record by record
    assert failures == []


async def test_a_handshake_that_fails_sends_openssls_alert_then_a_fin_and_is_reported(
    cert: tuple[Path, Path, str],
) -> None:
    async with layer_server(server_context(cert[0], cert[1]), Upper) as (port, failures, uppers):
        answer, ending = await send_raw(port, b"\x16\x03\x01\x00\x05hello")
    assert (record_types(answer), ending) == ([ALERT], "closed")
    assert len(failures) == 1 and isinstance(failures[0], ssl.SSLError)
    assert uppers[0].transport is None  # the protocol above never heard of it


async def test_a_hello_with_a_forged_record_gets_the_servers_flight_and_the_alert(
    cert: tuple[Path, Path, str],
) -> None:
    forged = bytes([APPLICATION_DATA, 3, 3, 0, 32]) + os.urandom(32)
    async with layer_server(server_context(cert[0], cert[1]), Upper) as (port, failures, _):
        answer, ending = await send_raw(port, client_hello() + forged)
    # ServerHello, ChangeCipherSpec, EncryptedExtensions, Certificate, CertificateVerify,
    # Finished, then the alert (encrypted too) — and a FIN, not a reset
    assert (record_types(answer), ending) == ([HANDSHAKE, CCS] + [APPLICATION_DATA] * 5, "closed")
    assert len(failures) == 1 and isinstance(failures[0], ssl.SSLError)


async def test_a_client_that_leaves_mid_handshake_gets_no_alert_and_is_reported(
    cert: tuple[Path, Path, str],
) -> None:
    async with layer_server(server_context(cert[0], cert[1]), Upper) as (port, failures, _):
        answer, ending = await send_raw(port, client_hello(), eof=True)
        assert (record_types(answer), ending) == (
            [HANDSHAKE, CCS] + [APPLICATION_DATA] * 4,
            "closed",
        )
        assert await send_raw(port, b"", eof=True) == (b"", "closed")
    assert len(failures) == 2


async def test_a_handshake_that_never_finishes_is_closed_after_the_timeout_and_reported(
    cert: tuple[Path, Path, str],
) -> None:
    context = server_context(cert[0], cert[1])
    async with layer_server(context, Upper, handshake_timeout=0.2) as (port, failures, _):
        answer, ending = await send_raw(port, client_hello()[:50])
    assert (answer, ending) == (b"", "closed")
    assert len(failures) == 1 and isinstance(failures[0], TimeoutError)


async def test_a_renewed_certificate_is_served_through_the_sni_callback(
    tmp_path: Path, cert: tuple[Path, Path, str]
) -> None:
    holder = ServerCertificate(cert[0], cert[1], check_every=0)
    renewed = self_signed(tmp_path / "b", ["localhost", "127.0.0.1"])

    async def pin() -> tuple[str, str | None]:
        _, writer = await asyncio.open_connection(
            "127.0.0.1", port, ssl=client_context(), server_hostname="localhost"
        )
        sslobj = writer.get_extra_info("ssl_object")
        writer.close()
        return certificate_pin(
            sslobj.getpeercert(binary_form=True)
        ), sslobj.selected_alpn_protocol()

    async with layer_server(holder.context, Upper) as (port, failures, _):
        assert await pin() == (cert[2], "http/1.1")
        for new, old in ((renewed[0], cert[0]), (renewed[1], cert[1])):
            shutil.copyfile(new, old.with_suffix(".staged"))
            os.replace(old.with_suffix(".staged"), old)
        assert await pin() == (renewed[2], "http/1.1")
    assert failures == []


# in memory: a client on memory BIOs, a fake TCP transport below the layer


class FakeTcp(asyncio.Transport):
    def __init__(self) -> None:
        super().__init__()
        self.sent = bytearray()
        self.eof_written = False
        self.closed = False
        self.aborted = False
        self.reading = True
        self.limits: tuple[int | None, int | None] = (None, None)

    def write(self, data: Any) -> None:
        self.sent += data

    def write_eof(self) -> None:
        self.eof_written = True

    def can_write_eof(self) -> bool:
        return True

    def close(self) -> None:
        self.closed = True

    def abort(self) -> None:
        self.aborted = True

    def is_closing(self) -> bool:
        return self.closed or self.aborted

    def pause_reading(self) -> None:
        self.reading = False

    def resume_reading(self) -> None:
        self.reading = True

    def is_reading(self) -> bool:
        return self.reading

    def set_write_buffer_limits(self, high: int | None = None, low: int | None = None) -> None:
        self.limits = (high, low)

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return ("192.0.2.1", 40000) if name == "peername" else default


Plain = tuple[asyncio.Transport, bytes, float]


class Wire:
    """A TLS client on memory BIOs, joined to a TlsServerLayer over a FakeTcp."""

    def __init__(self, context: ssl.SSLContext, upper: Upper, **options: Any) -> None:
        self.upper = upper
        self.failures: list[BaseException | None] = []
        self.plain: list[Plain] = []
        self.layer = TlsServerLayer(
            context,
            upper,
            on_handshake_failed=self.failures.append,
            on_plain=lambda *taken: self.plain.append(taken),
            **options,
        )
        self.tcp = FakeTcp()
        self.layer.connection_made(self.tcp)
        self.incoming, self.outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
        self.client = client_context().wrap_bio(
            self.incoming, self.outgoing, server_hostname="localhost"
        )
        self.close_notified = False

    def to_server(self) -> None:
        if self.outgoing.pending:
            self.layer.data_received(self.outgoing.read())

    def handshake(self) -> None:
        for _ in range(4):
            try:
                self.client.do_handshake()
            except ssl.SSLWantReadError:
                self.to_server()
                self.incoming.write(bytes(self.tcp.sent))
                self.tcp.sent.clear()
            else:
                self.to_server()
                return
        raise AssertionError("the handshake did not finish")

    def send(self, data: bytes) -> None:
        self.client.write(data)
        self.to_server()

    def send_close_notify(self) -> None:
        with contextlib.suppress(ssl.SSLWantReadError):
            self.client.unwrap()
        self.to_server()

    def receive(self) -> bytes:
        """The plaintext the server sent so far; notes its close_notify."""
        self.incoming.write(bytes(self.tcp.sent))
        self.tcp.sent.clear()
        got = bytearray()
        while True:
            try:
                chunk = self.client.read(65536)
            except ssl.SSLWantReadError:
                return bytes(got)
            except ssl.SSLZeroReturnError:
                self.close_notified = True
                return bytes(got)
            if not chunk:
                self.close_notified = True
                return bytes(got)
            got += chunk


@pytest.fixture
def context(cert: tuple[Path, Path, str]) -> ssl.SSLContext:
    return server_context(cert[0], cert[1])


async def test_close_sends_close_notify_after_what_was_written(context: ssl.SSLContext) -> None:
    def say_bye(upper: Upper) -> None:
        upper.transport.write(b"bye")
        upper.transport.close()

    upper = Upper()
    upper.on_made = say_bye
    wire = Wire(context, upper)
    wire.handshake()
    assert wire.receive() == b"bye"
    assert wire.close_notified and wire.tcp.closed
    upper.transport.write(b"after the close")  # dropped, not an error
    assert wire.receive() == b""


async def test_the_peers_close_notify_comes_up_as_eof_and_the_answer_may_still_go_out(
    context: ssl.SSLContext,
) -> None:
    upper = Upper()
    upper.on_eof = lambda self: True  # keep the stream open to answer
    wire = Wire(context, upper)
    wire.handshake()
    wire.send(b"question")
    wire.send_close_notify()
    assert upper.received == b"question" and upper.eof
    assert not wire.tcp.closed
    upper.transport.write(b"answer")
    upper.transport.close()
    assert wire.receive() == b"answer"
    assert wire.close_notified and wire.tcp.closed


async def test_a_protocol_that_does_not_keep_the_stream_open_closes_it_on_eof(
    context: ssl.SSLContext,
) -> None:
    wire = Wire(context, Upper())
    wire.handshake()
    wire.send_close_notify()
    assert wire.upper.eof and wire.tcp.closed


async def test_a_tcp_fin_without_close_notify_is_an_end_of_stream_too(
    context: ssl.SSLContext,
) -> None:
    wire = Wire(context, Upper())
    wire.handshake()
    wire.send(b"last words")
    assert wire.layer.eof_received() is False  # the protocol above let it close
    assert wire.upper.received == b"last words" and wire.upper.eof


# nginx's lingering close over TLS: close_notify and a FIN, then read and drop


def lingering(context: ssl.SSLContext) -> Wire:
    """A connection whose protocol above answered "answer" and closed lingering."""

    def answer_and_linger(upper: Upper, data: bytes) -> None:
        upper.transport.write(b"answer")
        upper.transport.close_lingering()

    upper = Upper()
    upper.on_data = answer_and_linger
    wire = Wire(context, upper)
    wire.handshake()
    wire.receive()  # the session tickets
    wire.send(b"question")
    return wire


async def test_a_lingering_close_sends_close_notify_after_the_answer_then_a_fin(
    context: ssl.SSLContext,
) -> None:
    wire = lingering(context)
    assert record_types(bytes(wire.tcp.sent)) == [APPLICATION_DATA, APPLICATION_DATA]
    assert wire.receive() == b"answer"
    assert wire.close_notified and wire.tcp.eof_written
    assert not wire.tcp.closed and not wire.upper.transport.is_closing()  # still reading
    wire.upper.transport.write(b"after the close_notify")  # dropped, not an error
    wire.upper.transport.close_lingering()  # again: nothing more goes out
    assert wire.tcp.sent == b""


async def test_what_comes_while_lingering_is_read_undecrypted_and_draws_no_alert(
    context: ssl.SSLContext,
) -> None:
    """nginx reads the socket itself once its close_notify is out: a late request, garbage
    and the peer's own close_notify are all taken in without a reply."""
    wire = lingering(context)
    wire.receive()
    wire.upper.on_data = None
    wire.client.write(b"a late request")
    late_record = wire.outgoing.read()
    garbage = bytes([APPLICATION_DATA, 3, 3, 0, 32]) + os.urandom(32)
    for data in (late_record, garbage, b"not even a record"):
        wire.layer.data_received(data)
    assert wire.upper.received == b"question" + late_record + garbage + b"not even a record"
    before = len(wire.upper.received)
    wire.send_close_notify()
    assert record_types(bytes(wire.upper.received[before:])) == [APPLICATION_DATA]  # TLS 1.3
    assert not wire.upper.eof  # the peer's close_notify is bytes to drop too; its FIN ends it
    assert wire.tcp.sent == b""
    assert not wire.tcp.closed and not wire.tcp.aborted


async def test_records_read_and_not_yet_decrypted_when_lingering_begins_are_dropped(
    context: ssl.SSLContext,
) -> None:
    """Reading paused above: a record that would not decrypt waits in the BIO; the close
    drops it rather than let OpenSSL answer it with an alert after the close_notify."""
    upper = Upper()
    upper.on_data = lambda self, data: self.transport.pause_reading()
    wire = Wire(context, upper)
    wire.handshake()
    wire.receive()  # the session tickets
    wire.send(b"question")
    wire.layer.data_received(bytes([APPLICATION_DATA, 3, 3, 0, 32]) + os.urandom(32))
    upper.transport.close_lingering()
    assert record_types(bytes(wire.tcp.sent)) == [APPLICATION_DATA]  # the close_notify only
    assert wire.receive() == b"" and wire.close_notified
    assert not wire.tcp.aborted


async def test_the_peers_fin_ends_a_lingering_close_and_close_ends_it_without_a_byte(
    context: ssl.SSLContext,
) -> None:
    wire = lingering(context)
    wire.receive()
    assert wire.layer.eof_received() is False
    assert wire.upper.eof and wire.tcp.closed
    wire.layer.connection_lost(None)
    assert wire.upper.lost == [None]

    wire = lingering(context)
    wire.receive()
    wire.upper.transport.close()  # the lingering time is over
    assert wire.tcp.closed and wire.tcp.sent == b"" and not wire.upper.eof


async def test_a_lingering_close_before_the_handshake_is_done_does_nothing(
    context: ssl.SSLContext,
) -> None:
    wire = Wire(context, Upper())
    wire.layer.close_lingering()
    assert wire.tcp.sent == b"" and not wire.tcp.eof_written and not wire.tcp.closed
    wire.handshake()  # and the handshake goes on
    assert wire.upper.transport is wire.layer


async def test_reading_paused_above_holds_records_until_resumed(context: ssl.SSLContext) -> None:
    upper = Upper()
    upper.on_data = lambda self, data: self.transport.pause_reading()
    wire = Wire(context, upper)
    wire.handshake()
    payload = os.urandom(3 * READ_CHUNK)
    wire.client.write(payload)
    wire.send_close_notify()  # all of it, and the end, arrive in one read
    assert upper.chunks == [READ_CHUNK] and not upper.eof
    assert not wire.tcp.reading
    seen = 1

    def moved() -> bool:
        return upper.eof or len(upper.chunks) > seen

    while not upper.eof:
        seen = len(upper.chunks)
        upper.transport.resume_reading()
        assert len(upper.chunks) == seen  # handed up from the loop, not inside the call
        await upper.wait(moved)
        assert len(upper.chunks) == seen + (not upper.eof)  # one chunk per resume
    assert upper.chunks == [READ_CHUNK] * 3
    assert upper.received == payload
    assert wire.tcp.reading


async def test_write_pressure_below_reaches_the_protocol_above_even_before_it_is_connected(
    context: ssl.SSLContext,
) -> None:
    upper = Upper()
    wire = Wire(context, upper)
    wire.layer.pause_writing()  # the socket's buffer filled during the handshake
    wire.handshake()
    assert upper.writing_paused == 1
    wire.layer.resume_writing()
    assert upper.writing_paused == 0
    upper.transport.set_write_buffer_limits(512 * 1024, 128 * 1024)
    assert wire.tcp.limits == (512 * 1024, 128 * 1024)
    assert upper.transport.get_extra_info("peername") == ("192.0.2.1", 40000)
    assert not upper.transport.can_write_eof()


async def test_a_record_that_does_not_decrypt_cuts_the_connection(
    context: ssl.SSLContext,
) -> None:
    wire = Wire(context, Upper())
    wire.handshake()
    wire.layer.data_received(bytes([APPLICATION_DATA, 3, 3, 0, 32]) + os.urandom(32))
    assert wire.tcp.aborted
    assert wire.failures == []  # the handshake itself had succeeded
    wire.layer.connection_lost(None)
    assert wire.upper.lost == [None]


async def test_the_handshake_is_driven_by_what_arrives_in_any_split(
    context: ssl.SSLContext,
) -> None:
    upper = echo()
    wire = Wire(context, upper)
    hello = client_hello_from(wire)
    for byte in range(len(hello)):
        wire.layer.data_received(hello[byte : byte + 1])
    assert record_types(bytes(wire.tcp.sent))[:2] == [HANDSHAKE, CCS]
    assert wire.failures == [] and upper.transport is None


def client_hello_from(wire: Wire) -> bytes:
    with contextlib.suppress(ssl.SSLWantReadError):
        wire.client.do_handshake()
    return wire.outgoing.read()


# a first byte that starts no TLS (nginx: ngx_http_ssl_handshake's peek)


def test_a_handshake_may_take_nginxs_client_header_timeout_by_default() -> None:
    assert HANDSHAKE_TIMEOUT == 60.0


@pytest.mark.parametrize(
    "first", [b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", b"SSH-2.0-OpenSSH_9.2\r\n", b"\x00", b"\x7f"]
)
async def test_bytes_that_start_no_tls_are_handed_over_with_the_connection_below(
    context: ssl.SSLContext, first: bytes
) -> None:
    before = time.time()
    wire = Wire(context, Upper())
    wire.layer.data_received(first)
    [(transport, received, since)] = wire.plain
    assert transport is wire.tcp and received == first
    assert before <= since <= time.time()  # the accept, from which nginx's timeout runs
    assert wire.layer.get_extra_info("accepted_at") == since
    assert not wire.tcp.reading  # paused for whoever takes it
    assert wire.tcp.sent == b"" and not wire.tcp.closed  # OpenSSL never saw a byte
    assert wire.failures == [] and wire.upper.transport is None
    wire.layer.data_received(b"more")  # whatever still reaches the layer is not its business
    wire.layer.connection_lost(None)
    assert wire.failures == [] and wire.upper.lost == [] and len(wire.plain) == 1


@pytest.mark.parametrize("first", [b"\x16\x03\x01\x00\x05hello", b"\x80\x2e\x01\x03\x03"])
async def test_a_handshake_record_or_an_sslv2_hello_goes_to_openssl(
    context: ssl.SSLContext, first: bytes
) -> None:
    wire = Wire(context, Upper())
    wire.layer.data_received(first)
    wire.layer.eof_received()
    assert wire.plain == []
    assert len(wire.failures) == 1 and wire.tcp.closed


async def test_only_the_first_byte_decides(context: ssl.SSLContext) -> None:
    wire = Wire(context, echo())
    hello = client_hello_from(wire)
    wire.layer.data_received(hello[:1])
    wire.layer.data_received(hello[1:])  # not a 0x16 at the start of this read: still TLS
    assert wire.plain == [] and record_types(bytes(wire.tcp.sent))[:2] == [HANDSHAKE, CCS]


async def test_the_handshake_timer_stops_when_the_connection_is_handed_over(
    context: ssl.SSLContext,
) -> None:
    wire = Wire(context, Upper(), handshake_timeout=0.01)
    wire.layer.data_received(b"G")
    await asyncio.sleep(0.05)  # five times the timeout: a live timer would have closed it
    assert not wire.tcp.closed and wire.failures == []


async def test_without_on_plain_openssl_answers_everything(cert: tuple[Path, Path, str]) -> None:
    async with layer_server(server_context(cert[0], cert[1]), Upper) as (port, failures, _):
        # OpenSSL sees an HTTP request and hangs up without a word (what nginx never does)
        assert await send_raw(port, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n") == (b"", "closed")
    assert len(failures) == 1 and isinstance(failures[0], ssl.SSLError)


async def test_on_the_wire_plain_bytes_get_whatever_the_taker_serves(
    cert: tuple[Path, Path, str],
) -> None:
    def serve(transport: asyncio.Transport, received: bytes, since: float) -> None:
        transport.set_protocol(asyncio.Protocol())
        transport.write(b"you sent " + received)
        transport.close()

    context = server_context(cert[0], cert[1])
    async with layer_server(context, Upper, on_plain=serve) as (port, failures, uppers):
        assert await send_raw(port, b"hello") == (b"you sent hello", "closed")
    assert failures == [] and uppers[0].transport is None
