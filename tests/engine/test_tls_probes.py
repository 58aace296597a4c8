"""Active probing of a TLS-family server (issue 4): over a hundred strangers — random bytes,
wrong passwords, Trojan headers with a bad hash, VLESS headers with an unknown UUID, browsers
asking for / and random paths, WebSocket and httpupgrade requests for the wrong path or Host,
TLS without SNI, silence — each get exactly what the fallback web server alone gives the same
bytes: the same answer byte for byte, and the same ending (closed by the server, or left open
and still answering); each is counted in stats.probes. The same with the decoy site against the
decoy served straight. Replays of a real client's recorded bytes, against `openssl s_server`
with our certificate: a ClientHello alone and a whole recording get the same (the whole one:
flight, alert, FIN); handshakes cut short or forged end as nginx ends them, and are counted."""

from __future__ import annotations

import asyncio
import contextlib
import random
import re
import ssl
import threading
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from test_tls_inbound import PASSWORD
from test_tls_inbound import server_config as inbound_server_config

from elsewhere.codecs import http_upgrade, trojan, vless, websocket
from elsewhere.config import from_mapping
from elsewhere.engine import Engine
from elsewhere.session import Destination
from elsewhere.web.decoy_content import default_content
from ports import free_port

WS_PATH, HU_PATH, WS_HOST = "/ws-secret", "/hu-secret", "cdn.example.test"
TIMEOUT = 5.0
# The fallback alone has said all it will for now once it stays quiet this long (its answers
# come in a millisecond on loopback; this is for a loaded machine). Past decide_timeout too.
QUIET = 1.0
# Through our server, once the same bytes are in, nothing more may come for this long either.
STILL = 0.3
DECIDE_TIMEOUT = 0.2
# Sent on a connection the server left open: proves it still answers, and ends it.
FOLLOW_UP = b"GET /after HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"
PAGE = b"<!doctype html><title>Welcome</title><p>It works.</p>\n"


@dataclass(frozen=True)
class Probe:
    kind: str
    data: bytes
    sni: bool = True


@dataclass(frozen=True)
class Seen:
    """What a visitor saw: the answer until the server closed or fell quiet, how that ended
    ("closed", "reset" or "open"), and on an open connection the answer to FOLLOW_UP."""

    answer: bytes
    ending: str
    after: bytes = b""
    after_ending: str = ""


# the fallback web server alone: Python's http.server, a real one with keep-alive, 400s, 404s
# that close, and waiting for the rest of a head


class Site(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    timeout = 30

    def do_GET(self) -> None:
        if self.path != "/":
            self.send_error(404)
            return
        self.send_response(200)
        self.send_header("Content-Type", "text/html")
        self.send_header("Content-Length", str(len(PAGE)))
        self.end_headers()
        if self.command == "GET":
            self.wfile.write(PAGE)

    do_HEAD = do_GET

    def date_time_string(self, timestamp: float | None = None) -> str:
        return "Wed, 25 Nov 2026 05:00:00 GMT"  # so two visits can be compared byte for byte

    def log_message(self, format: str, *args: object) -> None:
        pass


class Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 128  # not socketserver's 5: every probe connects at once


@contextlib.contextmanager
def web_site() -> Iterator[int]:
    httpd = Server(("127.0.0.1", 0), Site)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield httpd.server_address[1]
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(TIMEOUT)


@pytest.fixture(scope="module")
def site() -> Iterator[int]:
    """The fallback web site's port, one process for the whole module."""
    with web_site() as port:
        yield port


# the probes


def swapped(digits: str) -> str:
    """The first two neighbouring digits that differ, swapped."""
    i = next(i for i in range(len(digits) - 1) if digits[i] != digits[i + 1])
    return digits[:i] + digits[i + 1] + digits[i] + digits[i + 2 :]


def probes(rng: random.Random) -> list[Probe]:
    def path() -> str:
        return "/" + "".join(rng.choices("abcdefghijklmnopqrstuvwxyz0123456789-_", k=12))

    def dest() -> Destination:
        return rng.choice(
            [Destination("example.com", 443), Destination("10.1.2.3", 80), Destination("::1", 22)]
        )

    def key() -> str:
        return websocket.new_key()

    payload = b"GET / HTTP/1.1\r\nHost: example.com\r\n\r\n"
    good = trojan.password_hash(PASSWORD).decode()
    found: list[Probe] = []
    for size in [1, 2, 3, 7, 16, 17, 31, 56, 57, 58, 64, 100, 255, 256, 300, 517, 1000, 1400]:
        found.append(Probe("random bytes", rng.randbytes(size)))
    for size in [4, 60, 200, 2000, 9000, 20000]:  # random bytes with no line break in them
        found.append(
            Probe("random bytes", bytes(rng.choice(b"\x00\xffZq~ \t") for _ in range(size)))
        )
    for i in range(8):
        header = trojan.encode_request(
            trojan.password_hash(f"guess-{i}"), trojan.CMD_CONNECT, dest(), payload
        )
        found.append(Probe("wrong password", header))
    bad_hashes = [
        good[:-1] + ("0" if good[-1] != "0" else "1"),  # one hex digit off
        swapped(good),  # two digits swapped
        good.upper(),  # not how any client writes it
        good[:55],  # one digit short
        good + "a",  # one digit long
        good[:30] + "g" + good[31:],  # not hex
        rng.randbytes(28).hex(),
        rng.randbytes(28).hex(),
    ]
    for bad in bad_hashes:
        found.append(Probe("bad hash", bad.encode() + b"\r\n\x01\x01\x7f\x00\x00\x01\x00\x50\r\n"))
    found.append(Probe("bad hash", good[:40].encode()))  # half a header, then nothing
    for i in range(10):
        command = vless.CMD_UDP if i % 3 == 0 else vless.CMD_TCP
        found.append(
            Probe(
                "unknown uuid", vless.encode_request(uuid.uuid4().bytes, command, dest(), payload)
            )
        )
    found.append(Probe("unknown uuid", b"\x00" + uuid.uuid4().bytes[:9]))  # half a header
    browser = "GET {} HTTP/1.1\r\nHost: {}\r\nUser-Agent: Mozilla/5.0\r\nAccept: */*\r\n\r\n"
    for host in ["localhost", WS_HOST, "example.com", "127.0.0.1"]:
        found.append(Probe("http /", browser.format("/", host).encode()))
    found += [
        Probe("http /", b"GET / HTTP/1.0\r\n\r\n"),
        Probe("http /", b"HEAD / HTTP/1.1\r\nHost: localhost\r\n\r\n"),
        Probe("http /", b"GET / HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"),
        Probe("http /", b"POST / HTTP/1.1\r\nHost: localhost\r\nContent-Length: 3\r\n\r\nabc"),
        Probe("http /", b"OPTIONS * HTTP/1.1\r\nHost: localhost\r\n\r\n"),
        Probe("http /", b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"),  # an HTTP/2 preface
        Probe("http /", b"GET / HTTP/1.1\r\nHost: localhost\r\n"),  # head not finished
        Probe("http /", b"GET"),
        Probe("http /", browser.format("/", "localhost").encode() * 2),  # pipelined
    ]
    for _ in range(10):
        found.append(Probe("http random path", browser.format(path(), "localhost").encode()))
    for known in [WS_PATH, HU_PATH, WS_PATH + "/", WS_PATH.upper()]:
        found.append(Probe("http random path", browser.format(known, WS_HOST).encode()))
    for _ in range(8):
        found.append(Probe("ws wrong path", websocket.handshake_request(WS_HOST, path(), key())))
    found += [
        Probe("ws wrong path", websocket.handshake_request(WS_HOST, "/", key(), b"\x00" * 40)),
        Probe("ws wrong host", websocket.handshake_request("example.com", WS_PATH, key())),
        Probe("ws wrong host", websocket.handshake_request("localhost", WS_PATH, key())),
        Probe("ws wrong host", http_upgrade.request_head("example.com", HU_PATH, key())),
        Probe("ws wrong path", http_upgrade.request_head(WS_HOST, path(), key())),
        Probe("ws wrong path", http_upgrade.request_head(WS_HOST, path(), key())),
    ]
    without_sni = [
        browser.format("/", "localhost").encode(),
        browser.format(path(), "localhost").encode(),
        b"GET / HTTP/1.0\r\n\r\n",
        websocket.handshake_request(WS_HOST, path(), key()),
        rng.randbytes(100),
        rng.randbytes(20),
        trojan.encode_request(trojan.password_hash("x"), trojan.CMD_CONNECT, dest(), payload),
        vless.encode_request(uuid.uuid4().bytes, vless.CMD_TCP, dest(), payload),
        bad_hashes[0].encode() + b"\r\n",
        b"",
    ]
    found += [Probe("no sni", data, sni=False) for data in without_sni]
    found += [Probe("silence", b""), Probe("silence", b"")]
    return found


PROBES = probes(random.Random(4))


# visiting


async def read_on(reader: asyncio.StreamReader, quiet: float, want: int = 0) -> tuple[bytes, str]:
    """What the server sends until it closes, or (once `want` bytes are in) stays quiet for
    `quiet` seconds; and how that ended."""
    got = b""
    while True:
        try:
            wait = quiet if len(got) >= want else TIMEOUT
            data = await asyncio.wait_for(reader.read(65536), wait)
        except TimeoutError:
            return got, "open"
        except (ConnectionResetError, ssl.SSLError):
            return got, "reset"
        if not data:
            return got, "closed"
        got += data


async def visit(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, data: bytes, like: Seen | None
) -> Seen:
    """Send the probe and read the answer; on a connection left open, send FOLLOW_UP and read
    that answer too. With `like` (what the fallback alone did), wait for as many bytes as it
    sent, then for a close as long as it takes, or for STILL to see nothing more come."""

    async def answer(want: Seen | None, after: bool) -> tuple[bytes, str]:
        if want is None:
            return await read_on(reader, QUIET)
        size, ending = (
            (len(want.after), want.after_ending) if after else (len(want.answer), want.ending)
        )
        return await read_on(reader, STILL if ending == "open" else TIMEOUT, size)

    try:
        if data:
            writer.write(data)
        first, ending = await answer(like, after=False)
        if ending != "open":
            return Seen(first, ending)
        writer.write(FOLLOW_UP)
        after, after_ending = await answer(like, after=True)
        return Seen(first, ending, after, after_ending)
    finally:
        writer.close()


def client_tls() -> ssl.SSLContext:
    # not create_default_context(): loading the system CAs costs 18 ms of event loop a time
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    context.set_alpn_protocols(["h2", "http/1.1"])  # as a browser offers
    return context


async def through_server(port: int, probe: Probe, like: Seen) -> Seen:
    reader, writer = await asyncio.open_connection(
        "127.0.0.1", port, ssl=client_tls(), server_hostname="localhost" if probe.sni else None
    )
    return await visit(reader, writer, probe.data, like)


async def straight_to(port: int, probe: Probe) -> Seen:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    return await visit(reader, writer, probe.data, None)


def server_config(tmp: Path, fallback: str) -> dict:
    """test_tls_inbound's server (both protocols, WS_PATH and HU_PATH), for WS_HOST only, with
    `fallback` behind it."""
    config = inbound_server_config(tmp, 0)
    config["inbounds"][0].update(host=WS_HOST, fallback=fallback, decide_timeout=DECIDE_TIMEOUT)
    return config


async def compare_all(
    port: int, fallback_port: int, normalize: Callable[[Seen], Seen] = lambda seen: seen
) -> list[tuple[Probe, Seen, Seen]]:
    """Every probe straight to the fallback, then through our server; the pairs that differ.
    The probes go at once, so their quiet periods overlap."""
    gate = asyncio.Semaphore(64)

    async def both(probe: Probe) -> tuple[Probe, Seen, Seen]:
        async with gate:
            alone = await straight_to(fallback_port, probe)
            ours = await through_server(port, probe, alone)
        return probe, normalize(ours), normalize(alone)

    pairs = await asyncio.gather(*(both(probe) for probe in PROBES))
    return [(probe, ours, alone) for probe, ours, alone in pairs if ours != alone]


def test_there_are_over_a_hundred_probes_of_every_kind_in_the_issue() -> None:
    assert len(PROBES) >= 100
    kinds = {probe.kind for probe in PROBES}
    assert kinds >= {"random bytes", "wrong password", "bad hash", "unknown uuid", "http /"}
    assert kinds >= {"http random path", "ws wrong path", "ws wrong host", "no sni"}


async def test_every_stranger_gets_what_the_fallback_alone_gives(tmp_path: Path, site: int) -> None:
    async with Engine(from_mapping(server_config(tmp_path, f"127.0.0.1:{site}"))) as engine:
        differ = await compare_all(engine.inbounds[0].port, site)
        assert differ == []
        assert engine.stats.probes == len(PROBES)
        assert engine.stats.sessions == 0


async def test_the_endings_seen_are_both_kinds(site: int) -> None:
    """The comparison above means something only if the fallback both closes and keeps open."""
    endings = await asyncio.gather(*(straight_to(site, p) for p in PROBES[::5]))
    assert {seen.ending for seen in endings} >= {"closed", "open"}
    assert any(seen.answer.startswith(b"HTTP/1.1 200") for seen in endings)
    assert any(seen.answer.startswith(b"HTTP/1.1 400") for seen in endings)


# the decoy site as the fallback, against the decoy served straight

DATE = re.compile(rb"\r\nDate: [^\r]*\r\n")


def undated(seen: Seen) -> Seen:
    """The decoy stamps the current second in Date, the only byte allowed to differ."""
    drop = b"\r\nDate: -\r\n"
    return Seen(
        DATE.sub(drop, seen.answer), seen.ending, DATE.sub(drop, seen.after), seen.after_ending
    )


@contextlib.asynccontextmanager
async def decoy_alone() -> AsyncIterator[int]:
    from elsewhere.inbounds.decoy_site import DecoyProtocol

    content = default_content()

    class Serve(asyncio.Protocol):
        def connection_made(self, transport: asyncio.BaseTransport) -> None:
            DecoyProtocol(content, transport, b"")

    server = await asyncio.get_running_loop().create_server(Serve, "127.0.0.1", 0)
    async with server:
        yield server.sockets[0].getsockname()[1]


async def test_with_the_decoy_every_stranger_gets_what_the_decoy_alone_gives(
    tmp_path: Path,
) -> None:
    async with (
        decoy_alone() as decoy,
        Engine(from_mapping(server_config(tmp_path, "decoy"))) as engine,
    ):
        differ = await compare_all(engine.inbounds[0].port, decoy, undated)
        assert differ == []
        assert engine.stats.probes == len(PROBES)


# replays: a censor records a real client's connection and plays its bytes back. What a web
# server does then is OpenSSL's doing (nginx, Apache, Caddy's Go aside), so the server alone
# here is `openssl s_server` with our certificate and ALPN.


@contextlib.asynccontextmanager
async def recorder(port: int) -> AsyncIterator[tuple[int, bytearray]]:
    """A TCP relay to `port` that keeps every byte the client sent, as a censor on the path."""
    sent = bytearray()

    async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter, keep: bool) -> None:
        with contextlib.suppress(ConnectionError):
            while data := await src.read(65536):
                if keep:
                    sent.extend(data)
                dst.write(data)
        dst.close()

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", port)
        await asyncio.gather(pipe(reader, up_writer, True), pipe(up_reader, writer, False))

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    async with server:
        yield server.sockets[0].getsockname()[1], sent


async def recorded_client(port: int, site: int) -> bytes:
    """Everything a real Trojan client sent on the wire for one request."""
    async with recorder(port) as (relay, sent):
        reader, writer = await asyncio.open_connection(
            "127.0.0.1", relay, ssl=client_tls(), server_hostname="localhost"
        )
        hello = b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n"
        secret = trojan.password_hash(PASSWORD)
        writer.write(
            trojan.encode_request(secret, trojan.CMD_CONNECT, Destination("127.0.0.1", site), hello)
        )
        assert (await asyncio.wait_for(reader.readuntil(PAGE), TIMEOUT)).endswith(PAGE)
        writer.close()
    return bytes(sent)


@contextlib.asynccontextmanager
async def openssl_server(tmp_path: Path) -> AsyncIterator[int]:
    port = free_port()
    args = ["openssl", "s_server", "-accept", f"127.0.0.1:{port}", "-www", "-alpn", "http/1.1"]
    args += ["-cert", str(tmp_path / "cert.pem"), "-key", str(tmp_path / "key.pem")]
    process = await asyncio.create_subprocess_exec(
        *args, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT
    )
    try:
        assert process.stdout is not None
        async with asyncio.timeout(TIMEOUT):
            while not (line := await process.stdout.readline()).startswith(b"ACCEPT"):
                if not line:
                    pytest.fail("openssl s_server did not start")
        yield port
    finally:
        process.kill()
        await process.wait()


def record_types(data: bytes) -> list[int]:
    """The content type of each TLS record (RFC 8446 §5.1): handshake 22, change_cipher_spec
    20, application_data 23 (everything encrypted, alerts too). Lengths are left out: an ECDSA
    signature's DER length varies from one handshake to the next."""
    kinds, offset = [], 0
    while offset + 5 <= len(data):
        kinds.append(data[offset])
        offset += 5 + int.from_bytes(data[offset + 3 : offset + 5], "big")
    return kinds


async def replay(port: int, data: bytes, eof: bool = False) -> tuple[list[int], str]:
    """The record types sent back to `data` (then a FIN from us with `eof`), and the ending."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(data)
        if eof:
            writer.write_eof()
        answer, ending = await read_on(reader, QUIET)
    finally:
        writer.close()
    return record_types(answer), ending


@pytest.mark.interop  # needs the openssl command (Debian package openssl)
async def test_a_replayed_client_hello_gets_what_an_openssl_web_server_sends(
    tmp_path: Path, site: int
) -> None:
    async with Engine(from_mapping(server_config(tmp_path, f"127.0.0.1:{site}"))) as engine:
        port = engine.inbounds[0].port
        recording = await recorded_client(port, site)
        hello = recording[: 5 + int.from_bytes(recording[3:5], "big")]
        async with openssl_server(tmp_path) as alone:
            ours = await replay(port, hello)
            assert ours == await replay(alone, hello)
        assert ours == ([22, 20, 23, 23, 23, 23], "open")  # its flight, then waiting
        assert engine.stats.sessions == 1  # the recorded one; the replay never got in


@pytest.mark.interop  # needs the openssl command (Debian package openssl)
async def test_a_replayed_recording_gets_what_an_openssl_web_server_sends(
    tmp_path: Path, site: int
) -> None:
    async with Engine(from_mapping(server_config(tmp_path, f"127.0.0.1:{site}"))) as engine:
        port = engine.inbounds[0].port
        recording = await recorded_client(port, site)
        async with openssl_server(tmp_path) as alone:
            # the flight, then an encrypted alert (its Finished does not verify), then close
            assert await replay(alone, recording) == ([22, 20, 23, 23, 23, 23, 23], "closed")
            assert await replay(port, recording) == await replay(alone, recording)
        assert engine.stats.probes == 1  # the failed handshake, counted before the close
        assert engine.stats.sessions == 1


NGINX_TLS = """
worker_processes 1;
daemon off;
master_process off;
pid {dir}/nginx.pid;
events {{ worker_connections 64; }}
http {{
    access_log off;
    client_body_temp_path {dir}/body;
    proxy_temp_path {dir}/proxy;
    fastcgi_temp_path {dir}/fastcgi;
    uwsgi_temp_path {dir}/uwsgi;
    scgi_temp_path {dir}/scgi;
    server {{
        listen 127.0.0.1:{port} ssl;
        ssl_certificate {dir}/cert.pem;
        ssl_certificate_key {dir}/key.pem;
        ssl_protocols TLSv1.2 TLSv1.3;  # as Debian's nginx.conf, less what OpenSSL 3 refuses
        location / {{ return 200 "It works.\\n"; }}
    }}
}}
"""


@contextlib.asynccontextmanager
async def nginx_server(tmp_path: Path) -> AsyncIterator[int]:
    """Debian's nginx serving TLS with our certificate (from server_config's make_cert)."""
    port = free_port()
    conf = tmp_path / "nginx.conf"
    conf.write_text(NGINX_TLS.format(dir=tmp_path, port=port))
    args = ["-c", str(conf), "-p", str(tmp_path), "-e", str(tmp_path / "error.log")]
    process = await asyncio.create_subprocess_exec(
        "nginx", *args, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL
    )
    try:
        async with asyncio.timeout(TIMEOUT):
            while True:
                try:
                    _, writer = await asyncio.open_connection("127.0.0.1", port)
                except OSError:
                    if process.returncode is not None:
                        pytest.fail(f"nginx exited: {(tmp_path / 'error.log').read_text()}")
                    await asyncio.sleep(0.02)  # poll interval while nginx starts
                    continue
                writer.close()
                break
        yield port
    finally:
        process.kill()
        await process.wait()


@pytest.mark.interop  # needs nginx (Debian package nginx)
async def test_handshakes_cut_short_or_forged_end_as_nginx_ends_them_and_are_counted(
    tmp_path: Path, site: int
) -> None:
    async with Engine(from_mapping(server_config(tmp_path, f"127.0.0.1:{site}"))) as engine:
        port = engine.inbounds[0].port
        recording = await recorded_client(port, site)
        hello = recording[: 5 + int.from_bytes(recording[3:5], "big")]
        forged = bytes([23, 3, 3, 0, 32]) + random.Random(5).randbytes(32)
        cases = {
            "a hello, then FIN": (hello, True),
            "half a hello, then FIN": (hello[: len(hello) // 2], True),
            "a FIN at once": (b"", True),
            "a hello and a forged record": (hello + forged, False),
            "the whole recording": (recording, False),
        }
        async with nginx_server(tmp_path) as alone:
            for name, (data, eof) in cases.items():
                theirs = await replay(alone, data, eof)
                assert await replay(port, data, eof) == theirs, name
                assert theirs[1] == "closed", name
        # nginx (OpenSSL 3, SSL_OP_IGNORE_UNEXPECTED_EOF) sends no alert to a FIN
        assert await replay(port, hello, eof=True) == ([22, 20, 23, 23, 23, 23], "closed")
        assert engine.stats.probes == len(cases) + 1
        assert engine.stats.sessions == 1
