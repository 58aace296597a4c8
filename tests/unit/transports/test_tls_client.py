"""The client stack's `tls` layer (elsewhere's own TLS 1.3 client) through transports.dial, on
loopback against OpenSSL servers (transports.tls.server_context, what elsewhere's servers run):
a browser's hello for each `fp`, data both ways, the ends, and certificates checked as strictly
as the stdlib's client did: chain and name, or the pin; expired, wrong name, self-signed without
a pin and a wrong pin refused with one line each."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import ssl
import time
from collections.abc import AsyncIterator

import pytest

from elsewhere.codecs import reality
from elsewhere.codecs.tls_hello import parse_client_hello
from elsewhere.errors import ConfigError
from elsewhere.lab import fingerprints
from elsewhere.lab.clienthello import ja4
from elsewhere.transports import tls13_layer
from elsewhere.transports.dial import dial
from elsewhere.transports.layer import Layer, Pending
from elsewhere.transports.settings import StreamSettings
from elsewhere.transports.tls import PinMismatchError, server_context
from tls13_pki import Leaf, Pki

TIMEOUT = 5.0


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return Pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture
def trusted(pki: Pki, monkeypatch: pytest.MonkeyPatch) -> Pki:
    """The test root as the system's only trusted root (OpenSSL's SSL_CERT_FILE)."""
    monkeypatch.setenv("SSL_CERT_FILE", str(pki.ca_file))
    tls13_layer.system_roots.cache_clear()
    yield pki  # type: ignore[misc]
    tls13_layer.system_roots.cache_clear()


@contextlib.asynccontextmanager
async def echo_server(
    leaf: Leaf, alpn: tuple[str, ...] = ("http/1.1",), tls12_only: bool = False
) -> AsyncIterator[int]:
    """An OpenSSL TLS server that echoes, then closes with close_notify when the client does
    (elsewhere's server context, or a bare one for certificates it would refuse to load)."""
    try:
        context = server_context(leaf.cert, leaf.key, alpn=alpn)
    except ConfigError:  # expired: a careless server may still send one
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(leaf.cert, leaf.key)
        context.set_alpn_protocols(list(alpn))
    if tls12_only:
        context.maximum_version = ssl.TLSVersion.TLSv1_2

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(ConnectionError, ssl.SSLError):
            while data := await reader.read(1 << 16):
                writer.write(data)
                await writer.drain()
        writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0, ssl=context)
    async with server:
        yield server.sockets[0].getsockname()[1]


@contextlib.asynccontextmanager
async def hello_catcher() -> AsyncIterator[tuple[int, list[bytes]]]:
    """A plain TCP listener that keeps the first record a client sends, then closes."""
    records: list[bytes] = []

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await reader.readexactly(5)
        records.append(head + await reader.readexactly(int.from_bytes(head[3:5], "big")))
        writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    async with server:
        yield server.sockets[0].getsockname()[1], records


def settings(**options: object) -> StreamSettings:
    return StreamSettings.from_options("proxy", {"sni": "localhost", **options})


async def round_trip(stream: Layer, payload: bytes) -> bytes:
    """Write `payload`, read as much back."""
    loop = asyncio.get_running_loop()
    got = bytearray()
    done = loop.create_future()

    class Collect(asyncio.Protocol):
        def data_received(self, data: bytes) -> None:
            got.extend(data)
            if len(got) >= len(payload) and not done.done():
                done.set_result(None)

        def eof_received(self) -> bool:
            if not done.done():
                done.set_result(None)
            return False

    held = stream.get_protocol()
    collect = Collect()
    stream.set_protocol(collect)
    if isinstance(held, Pending):
        for chunk in held.chunks:
            collect.data_received(chunk)
    stream.write(payload)
    await asyncio.wait_for(done, TIMEOUT)
    return bytes(got)


@pytest.mark.parametrize("fp", ["chrome", "firefox"])
async def test_each_fp_sends_that_browsers_hello(fp: str) -> None:
    async with hello_catcher() as (port, records):
        with pytest.raises((OSError, ssl.SSLError)):
            await dial(settings(fp=fp, pin="00" * 32), "127.0.0.1", port)
    assert ja4(parse_client_hello(records[0])) in fingerprints.resolve([fp])


async def test_without_fp_the_hello_is_chromes() -> None:
    async with hello_catcher() as (port, records):
        with pytest.raises((OSError, ssl.SSLError)):
            await dial(settings(pin="00" * 32), "127.0.0.1", port)
    assert ja4(parse_client_hello(records[0])) in fingerprints.resolve(["chrome"])


async def test_a_trusted_chain_for_the_name_carries_data_both_ways(trusted: Pki) -> None:
    async with echo_server(trusted.leaf("ok")) as port:
        stream = await dial(settings(), "127.0.0.1", port)
        try:
            payload = os.urandom(1 << 20)
            assert await round_trip(stream, payload) == payload
            assert stream.get_extra_info("alpn") == "http/1.1"
        finally:
            stream.close()


async def test_the_pinned_self_signed_certificate_is_accepted(pki: Pki) -> None:
    leaf = pki.leaf("pinned", self_signed=True)
    async with echo_server(leaf) as port:
        stream = await dial(settings(pin=hashlib.sha256(leaf.der).hexdigest()), "127.0.0.1", port)
        try:
            assert await round_trip(stream, b"pinned") == b"pinned"
        finally:
            stream.close()


@pytest.mark.parametrize(("options", "error", "reason"), [
    ({"expired": True}, ssl.SSLCertVerificationError, "expired on"),
    ({"names": ("other.test",)}, ssl.SSLCertVerificationError, "for other.test, not localhost"),
    ({"self_signed": True}, ssl.SSLCertVerificationError, "self-signed and no pin"),
])
async def test_bad_certificates_fail_the_dial_with_one_line(
    trusted: Pki, options: dict[str, object], error: type[Exception], reason: str
) -> None:
    leaf = trusted.leaf("bad" + "".join(map(str, options)), **options)  # type: ignore[arg-type]
    async with echo_server(leaf) as port:
        with pytest.raises(error, match=reason):
            await dial(settings(), "127.0.0.1", port)


async def test_a_wrong_pin_fails_the_dial(pki: Pki) -> None:
    async with echo_server(pki.leaf("unpinned", self_signed=True)) as port:
        with pytest.raises(PinMismatchError, match="does not match the pin"):
            await dial(settings(pin="ab" * 32), "127.0.0.1", port)


async def test_insecure_takes_any_certificate(pki: Pki) -> None:
    async with echo_server(pki.leaf("any", self_signed=True, expired=True)) as port:
        stream = await dial(settings(insecure=True), "127.0.0.1", port)
        stream.close()


async def test_a_tls12_only_server_is_refused_in_one_line(pki: Pki) -> None:
    async with echo_server(pki.leaf("old"), tls12_only=True) as port:
        with pytest.raises(ssl.SSLError, match=r"does not speak TLS 1\.3"):
            await dial(settings(insecure=True), "127.0.0.1", port)


async def test_the_servers_close_notify_reaches_the_protocol_above(pki: Pki) -> None:
    async with echo_server(pki.leaf("closing")) as port:
        stream = await dial(settings(insecure=True), "127.0.0.1", port)
        ended = asyncio.get_running_loop().create_future()

        class Watch(asyncio.Protocol):
            def eof_received(self) -> bool:
                ended.set_result("eof")
                return False

            def connection_lost(self, exc: Exception | None) -> None:
                if not ended.done():
                    ended.set_result("lost")

        stream.set_protocol(Watch())
        stream.close()  # our close_notify: the echo server ends its side
        assert await asyncio.wait_for(ended, TIMEOUT) in ("eof", "lost")


# security = reality


def reality_settings(public_key: bytes, **options: object) -> StreamSettings:
    return StreamSettings.from_options("proxy", {
        "security": "reality", "sni": "www.example.com", "pbk": reality.encode_key(public_key),
        "sid": "0123456789abcdef", **options,
    })


@pytest.mark.parametrize("fp", ["chrome", "firefox"])
async def test_the_reality_hello_is_the_browsers_and_opens_with_the_servers_key(fp: str) -> None:
    private = reality.generate_private_key()
    async with hello_catcher() as (port, records):
        with pytest.raises((OSError, ssl.SSLError)):
            await dial(reality_settings(reality.public_key(private), fp=fp), "127.0.0.1", port)
    hello = parse_client_hello(records[0])
    assert ja4(hello) in fingerprints.resolve([fp])
    assert hello.alpn == ("h2", "http/1.1") and hello.server_name == "www.example.com"
    keys = reality.RealityKeys(
        private_key=private, short_ids=frozenset({reality.parse_short_id("0123456789abcdef")}),
        server_names=frozenset({"www.example.com"}), max_time_diff=60,
    )
    assert isinstance(reality.authenticate(hello, keys, time.time()), reality.Authenticated)


async def test_a_server_that_does_not_authenticate_ends_the_dial_in_one_line(pki: Pki) -> None:
    """Where a REALITY server splices a hello it cannot open: dest's own TLS answers."""
    dest = pki.leaf("dest", names=("www.example.com",))
    async with echo_server(dest) as port:
        settings = reality_settings(reality.public_key(reality.generate_private_key()))
        with pytest.raises(ssl.SSLCertVerificationError, match="did not authenticate"):
            await dial(settings, "127.0.0.1", port)


async def test_reality_without_pbk_is_a_persons_mistake_in_one_line() -> None:
    settings = StreamSettings.from_options("proxy", {"security": "reality", "sni": "a.test"})
    async with hello_catcher() as (port, records):
        with pytest.raises(ConfigError, match="pbk"):
            await dial(settings, "127.0.0.1", port)
    assert records == []  # nothing was sent
