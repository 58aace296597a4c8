"""Bytes that are not TLS on the TLS port, against the server it imitates: Debian's nginx 1.22.1
with `listen ... ssl` (and test_decoy_nginx's site). nginx peeks at the first byte: a handshake
record (0x16) or an SSLv2 hello (high bit set) goes to OpenSSL, anything else is served as HTTP
and ends in 400 "The plain HTTP request was sent to HTTPS port" (or in an earlier error page);
silence and half-sent heads are closed, without a word, client_header_timeout after the accept.
Every probe goes to nginx and to elsewhere's TLS inbound (with the decoy, and with an upstream
fallback, which must not be reached): the answers must be equal byte for byte but for the Date,
and the connection must end the same way at about the same time."""

from __future__ import annotations

import asyncio
import random
import re
import socket
import ssl
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pytest
from test_decoy_nginx import certificate_files, running_tls_nginx, still_reads

from elsewhere.config import from_mapping
from elsewhere.engine import Engine
from ports import free_port

# Needs the Debian package nginx (listed in .ci/apt-packages); never skipped.
# Timing is compared with nginx to 0.3 s: these run one after another on one worker, not beside
# each other (each starts ~100 probing threads).
pytestmark = [pytest.mark.interop, pytest.mark.xdist_group("nginx-timing")]

# client_header_timeout on both sides: nginx's 60 s default, cut short so the test is quick
SHORT = 1.2
# Closing on that timeout may come this much sooner or later on one side than on the other;
# a timer run from the first byte instead of from the accept is late by LATE.
SLACK = 0.3
LATE = 0.6
# Through TLS, how long our server waits for a first request before the decoy gets what came:
# under SHORT, and over SLACK, so that a decoy timing from then, not from the accept, shows
DECIDE = 0.5
START = 5.0
DATE = re.compile(rb"Date: [^\r\n]*\r\n")


@dataclass(frozen=True)
class Probe:
    """What a prober does: send each chunk after its pause (seconds), then perhaps a FIN."""

    name: str
    steps: tuple[tuple[float, bytes], ...]
    fin: bool = False


def probe(name: str, *chunks: bytes | float, fin: bool = False) -> Probe:
    steps: list[tuple[float, bytes]] = []
    pause = 0.0
    for chunk in chunks:
        if isinstance(chunk, float):
            pause += chunk
        else:
            steps.append((pause, chunk))
            pause = 0.0
    return Probe(name, tuple(steps), fin)


def filler(size: int) -> bytes:
    """A GET of `size` bytes, its Host and a header of padding."""
    head = b"GET / HTTP/1.1\r\nHost: x\r\nX: "
    return head + b"a" * (size - len(head) - 4) + b"\r\n\r\n"


def probes() -> list[Probe]:
    rng = random.Random(497)
    h = b"Host: x\r\n"
    chrome = b"User-Agent: Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 Chrome/120\r\n"
    # SSLv2-format ClientHello (RFC 6101 appendix E.2) for TLS 1.2: 7 cipher specs, challenge
    sslv2_hello = bytes.fromhex("802e0103030015000000100100800300800700c006004002008004008000002f")
    sslv2_hello += rng.randbytes(16)
    post = b"POST / HTTP/1.1\r\n" + h + b"Content-Length: 3\r\n\r\n"
    huge = b"PUT / HTTP/1.1\r\n" + h + b"Content-Length: 9999999\r\n\r\n"
    gzipped = b"GET / HTTP/1.1\r\n" + h + b"Transfer-Encoding: gzip\r\n\r\n"
    trojan = b"d63dc919e201d7bc4c825630d2cf25fdc93d4b2f0d46706d29038d01\r\n\x01\x01"
    tls_record_start = b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03"
    return [
        # plain HTTP: 497, or the error nginx finds first
        probe("GET with Host", b"GET / HTTP/1.1\r\n" + h + b"\r\n"),
        probe("HTTP/1.0 without Host", b"GET / HTTP/1.0\r\n\r\n"),
        probe("HTTP/1.1 without Host", b"GET / HTTP/1.1\r\n\r\n"),
        probe("a browser", b"GET /about.html HTTP/1.1\r\n" + h + chrome + b"\r\n"),
        probe("HEAD", b"HEAD / HTTP/1.1\r\n" + h + b"\r\n"),
        probe("HTTP/0.9 GET", b"GET /\r\n"),
        probe("HTTP/0.9 HEAD", b"HEAD /\r\n"),
        probe("POST with a body", post + b"abc"),
        # (late by more than a loaded machine may take to answer: the answer must come first)
        probe("POST, its body later", post, 0.5, b"abc"),
        probe("POST, its body and more later", post, 0.5, b"abcdef"),
        probe("too large a body, then FIN", huge, fin=True),
        probe("pipelined", (b"GET / HTTP/1.1\r\n" + h + b"\r\n") * 2),
        probe("head in pieces", b"GET / HT", 0.2, b"TP/1.1\r\n" + h, 0.2, b"\r\n"),
        probe("TRACE", b"TRACE / HTTP/1.1\r\n" + h + b"\r\n"),
        probe("Transfer-Encoding gzip", gzipped),
        probe("HTTP/2.0 in the line", b"GET / HTTP/2.0\r\n" + h + b"\r\n"),
        probe("an HTTP/2 preface", b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"),
        probe("CONNECT", b"CONNECT example.com:443 HTTP/1.1\r\n" + h + b"\r\n"),
        probe("a long URI", b"GET /" + b"a" * 9000 + b" HTTP/1.1\r\n\r\n"),
        probe("two Hosts", b"GET / HTTP/1.1\r\n" + h + h + b"\r\n"),
        # a head that fills nginx's 1 KiB header buffer exactly, and one a byte short of it
        probe("a head of 1024 bytes", filler(1024)),
        probe("a head of 1023 bytes", filler(1023)),
        probe("HTTP/0.9 of 1024 bytes", b"GET /" + b"a" * 1017 + b"\r\n"),
        # other protocols and garbage that does not start like TLS
        probe("lowercase get", b"get / HTTP/1.1\r\n" + h + b"\r\n"),
        probe("SSH banner", b"SSH-2.0-OpenSSH_9.2p1 Debian-2\r\n"),
        probe("binary from 0x00", bytes(range(16))),
        probe("printable words", b"hello world\r\n\r\n"),
        probe("random printable", bytes(rng.choice(range(0x21, 0x7F)) for _ in range(200))),
        probe("a Trojan header without TLS", trojan),
        probe("JSON", b'{"jsonrpc":"2.0","method":"x"}\n'),
        # a first byte that TLS accepts: OpenSSL decides
        probe("high bit, 8 bytes", bytes(range(0x80, 0x88))),
        probe("0xff and random", b"\xff" + rng.randbytes(40)),
        probe("an SSLv2 hello", sslv2_hello),
        probe("a TLS record header, then FIN", tls_record_start, fin=True),
        # nothing, or not enough: closed silently, on the client's FIN or on the timeout
        probe("FIN at once", fin=True),
        probe("request line, then FIN", b"GET / HTTP/1.1\r\n", fin=True),
        probe("silence"),
        probe("request line, then silence", b"GET / HTTP/1.1\r\n"),
        probe("half a head, then silence", b"GET /about.html HTTP/1.1\r\nHo"),
        probe("CRLF, then silence", b"\r\n"),
        probe("one byte late, then silence", LATE, b"G"),
        probe("a request line late, then silence", LATE, b"GET / HTTP/1.1\r\n"),
        probe("half a TLS record, then silence", b"\x16\x03\x01\x02"),
        probe("a high-bit byte, then silence", b"\x80"),
    ]


@dataclass(frozen=True)
class Seen:
    """The answer (Date blanked) and how the connection ended: "closed" (a FIN; a byte sent
    after it draws a RST; inside TLS, a FIN without close_notify), "lingering" (a FIN, and the
    server reads on), "close_notify" (inside TLS), "reset" or "open"."""

    answer: bytes
    ending: str
    after: float  # seconds from connect to the end


def visit(port: int, probe: Probe) -> Seen:
    with socket.create_connection(("127.0.0.1", port), timeout=START) as conn:
        return _exchange(conn, probe, time.monotonic())


def visit_tls(port: int, probe: Probe) -> Seen:
    """The probe inside TLS; "closed" is then a FIN without close_notify, "close_notify" the
    other ending (a lingering close is told apart in test_tls_endings_nginx)."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    with socket.create_connection(("127.0.0.1", port), timeout=START) as raw:
        start = time.monotonic()
        conn = context.wrap_socket(raw, server_hostname="localhost", suppress_ragged_eofs=False)
        return _exchange(conn, probe, start)


def _exchange(conn: socket.socket, probe: Probe, start: float) -> Seen:
    tls = isinstance(conn, ssl.SSLSocket)
    for pause, data in probe.steps:
        if pause:
            time.sleep(pause)  # the prober's own pace, part of the probe
        try:
            conn.sendall(data)
        except (BrokenPipeError, ConnectionResetError):
            break
    if probe.fin:
        conn.shutdown(socket.SHUT_WR)
    answer = b""
    deadline = start + SHORT + 2 * SLACK + LATE
    ending = "open"
    while (left := deadline - time.monotonic()) > 0:
        conn.settimeout(left)
        try:
            data = conn.recv(65536)
        except TimeoutError:
            break
        except ssl.SSLEOFError:
            ending = "closed"
            break
        except ConnectionResetError:
            ending = "reset"
            break
        if not data:
            ending = "close_notify" if tls else "closed"
            break
        answer += data
    after = time.monotonic() - start
    if ending == "closed" and not probe.fin and not tls and still_reads(conn):
        ending = "lingering"
    return Seen(DATE.sub(b"Date: -\r\n", answer), ending, after)


@pytest.fixture(scope="module")
def tls_files(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    return certificate_files(tmp_path_factory.mktemp("cert"))


@pytest.fixture(scope="module")
def nginx(tmp_path_factory: pytest.TempPathFactory, tls_files: tuple[Path, Path]) -> Iterator[int]:
    """nginx's TLS port, serving test_decoy_nginx's site, client_header_timeout SHORT."""
    with running_tls_nginx(
        tmp_path_factory.mktemp("nginx"),
        tls_files,
        f"        client_header_timeout {round(SHORT * 1000)}ms;\n",
    ) as port:
        yield port


def inbound(cert: Path, key: str | Path, fallback: str) -> dict:
    return {
        "type": "tls",
        "listen": "127.0.0.1",
        "port": 0,
        "cert": str(cert),
        "key": str(key),
        "trojan": [{"id": "tom", "password": "a password"}],
        "fallback": fallback,
        "client_header_timeout": SHORT,
        "decide_timeout": DECIDE,
    }


async def visit_all(
    visit: Callable[[int, Probe], Seen], ports: list[int], cases: list[Probe]
) -> dict[str, list[Seen]]:
    """Every probe to every port at once (so the timeouts run side by side): what each saw,
    by probe name, in the order of `ports`."""
    loop = asyncio.get_running_loop()
    with ThreadPoolExecutor(len(cases) * len(ports)) as pool:
        seen = await asyncio.gather(
            *(loop.run_in_executor(pool, visit, port, case) for case in cases for port in ports)
        )
    return {case.name: seen[i * len(ports) : (i + 1) * len(ports)] for i, case in enumerate(cases)}


def differences(seen: dict[str, list[Seen]]) -> list[tuple[str, Seen, Seen]]:
    """Where ours (every port but the first) saw other bytes or another ending than nginx (the
    first), or the end came more than SLACK sooner or later."""
    found = []
    for name, (theirs, *ours) in seen.items():
        for mine in ours:
            if (mine.answer, mine.ending) != (theirs.answer, theirs.ending) or (
                abs(mine.after - theirs.after) > SLACK
            ):
                found.append((name, mine, theirs))
    return found


def explain(found: list[tuple[str, Seen, Seen]]) -> str:
    """One line per difference: what differed, ours against nginx's."""
    lines = []
    for name, mine, theirs in found:
        same = "same bytes" if mine.answer == theirs.answer else "OTHER BYTES"
        lines.append(
            f"{name}: {same}; ending {mine.ending} vs {theirs.ending}; "
            f"after {mine.after:.3f} vs {theirs.after:.3f} s"
        )
    return "\n".join(lines)


async def test_bytes_that_are_not_tls_get_what_nginx_gives_them_and_end_the_same_way(
    nginx: int, tls_files: tuple[Path, Path]
) -> None:
    nowhere = free_port()  # an upstream fallback nobody listens on: it must not be asked
    config = {
        "inbounds": [
            inbound(*tls_files, "decoy"),
            inbound(*tls_files, f"127.0.0.1:{nowhere}"),
        ],
        "outbounds": [{"type": "direct"}],
    }
    cases = probes()
    async with Engine(from_mapping(config)) as engine:
        seen = await visit_all(visit, [nginx] + [each.port for each in engine.inbounds], cases)
        assert engine.stats.probes == len(cases) * 2
        assert engine.stats.sessions == 0
    assert not (found := differences(seen)), explain(found)
    # the comparison means something: nginx gave its plain-HTTP page, other pages, OpenSSL's
    # alert and silence; it closed at once, lingered, and closed on the timeout from the accept
    nginx_saw = {name: each[0] for name, each in seen.items()}
    assert b"The plain HTTP request was sent to HTTPS port" in nginx_saw["GET with Host"].answer
    assert nginx_saw["HTTP/1.1 without Host"].answer.startswith(b"HTTP/1.1 400 Bad Request\r\n")
    assert nginx_saw["an SSLv2 hello"].answer[:1] == b"\x15"  # an alert record
    assert {seen.ending for seen in nginx_saw.values()} == {"closed", "lingering"}
    assert SHORT - SLACK < nginx_saw["silence"].after < SHORT + SLACK
    assert SHORT - SLACK < nginx_saw["one byte late, then silence"].after < SHORT + SLACK


async def test_inside_tls_the_head_timeout_runs_from_the_accept_and_ends_as_nginx_ends_it(
    nginx: int, tls_files: tuple[Path, Path]
) -> None:
    """nginx's client_header_timeout covers the TLS handshake and the first request head
    together; a connection idle after the handshake ends with close_notify, a head begun and
    not finished without it (nginx marks it timed out and shuts TLS down quietly)."""
    cases = [
        probe("silence"),
        probe("one byte, then silence", b"G"),
        probe("one byte late, then silence", LATE, b"G"),
        probe("CRLF, then silence", b"\r\n"),
        probe("half a head, then silence", b"GET /about.html HTTP/1.1\r\nHo"),
        probe("a request, then close", b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"),
        probe("garbage", b"\x00\x01"),
    ]
    config = {"inbounds": [inbound(*tls_files, "decoy")], "outbounds": [{"type": "direct"}]}
    async with Engine(from_mapping(config)) as engine:
        seen = await visit_all(visit_tls, [nginx, engine.inbounds[0].port], cases)
    assert not (found := differences(seen)), explain(found)
    nginx_saw = {name: each[0] for name, each in seen.items()}
    assert {seen.ending for seen in nginx_saw.values()} == {"closed", "close_notify"}
    assert SHORT - SLACK < nginx_saw["one byte late, then silence"].after < SHORT + SLACK
