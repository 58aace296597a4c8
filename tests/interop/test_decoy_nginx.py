"""The decoy against the server it imitates: Debian's nginx 1.22.1 with Debian's defaults,
serving the decoy's own files (same bytes, same mtimes). Every request here goes to both; the
answers must be equal byte for byte, but for the Date, and the connection must end the same way:
left open, closed, or closed lingering (nginx reads on after its FIN; a closed socket would
answer more bytes with a RST).
"""

from __future__ import annotations

import contextlib
import email.utils
import fcntl
import os
import random
import re
import select
import shutil
import socket
import struct
import subprocess
import termios
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from elsewhere.control.certs import self_signed
from elsewhere.web.decoy import DecoySite
from elsewhere.web.decoy_content import DecoyContent, default_content
from ports import free_port

# Needs the Debian package nginx (listed in .ci/apt-packages); never skipped.
pytestmark = pytest.mark.interop

TIMEOUT = 3.0
# Sent after the server's FIN: more than a segment, so a reader's ACK is not delayed
MORE = b"x" * 65536
DATE = re.compile(rb"Date: [^\r\n]*\r\n")
FOLLOW_UP = b"GET /robots.txt HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
CONFIG = """
worker_processes 1;
daemon off;
master_process off;
pid {dir}/nginx.pid;
error_log {dir}/error.log info;
events {{ worker_connections 64; }}
http {{
    # Debian 12's /etc/nginx/nginx.conf, minus logging and the include of other sites
    sendfile on;
    tcp_nopush on;
    types_hash_max_size 2048;
    include /etc/nginx/mime.types;
    default_type application/octet-stream;
    access_log off;
    gzip on;
    client_body_temp_path {dir}/body;
    proxy_temp_path {dir}/proxy;
    fastcgi_temp_path {dir}/fastcgi;
    uwsgi_temp_path {dir}/uwsgi;
    scgi_temp_path {dir}/scgi;
    server {{
        listen 127.0.0.1:{port} default_server;
        root {dir}/site;
        index index.html;
        server_name _;
        error_page 404 /404.html;
        location / {{ try_files $uri $uri/ =404; }}
    }}
}}
"""


class Pair:
    """A running nginx and the content our decoy serves, sharing nginx's per-server state
    (the multipart boundary counter) by seeing the same requests in the same order."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.content = DecoyContent(default_content().files)

    def check(self, request: bytes, *later: bytes) -> None:
        """Send `request`, then each of `later` once the answer so far is in."""
        with socket.create_connection(("127.0.0.1", self.port), timeout=TIMEOUT) as conn:
            ours = DecoySite(self.content, now=time.time())
            self._exchange(conn, ours, request)
            for more in later:
                self._exchange(conn, ours, more)
            if not (ours.closed or ours.half_closed):
                # Both still open (answered and waiting, or mid-request): one more request
                # shows the connection is in the same state on both sides.
                self._exchange(conn, ours, FOLLOW_UP)
            if ours.closed or ours.half_closed:
                rest, eof = _read(conn, None)
                assert (rest, eof) == (b"", True), f"nginx kept open what we closed: {request!r}"
                assert still_reads(conn) == ours.half_closed, f"lingering differs: {request!r}"

    def _exchange(self, conn: socket.socket, ours: DecoySite, data: bytes) -> None:
        ours.feed(data, time.time())
        expected = ours.data_to_send()
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            conn.sendall(data)
        got, _ = _read(conn, len(expected))
        assert _normal(got) == _normal(expected), f"for {data!r}"


def _read(conn: socket.socket, size: int | None) -> tuple[bytes, bool]:
    """Read `size` bytes, or (None) up to EOF, for at most TIMEOUT; and whether EOF came."""
    out = b""
    deadline = time.monotonic() + TIMEOUT
    while size is None or len(out) < size:
        conn.settimeout(max(0.01, deadline - time.monotonic()))
        try:
            data = conn.recv(65536)
        except TimeoutError:
            return out, False
        except ConnectionResetError:
            return out, True
        if not data:
            return out, True
        out += data
    return out, False


def still_reads(conn: socket.socket) -> bool:
    """After the server's FIN: is it still reading (nginx's lingering close), or closed? A
    byte sent to it is acknowledged in the one case and draws a RST in the other, each at once
    on loopback; the check polls for whichever comes first."""
    try:
        conn.sendall(MORE)
    except (BrokenPipeError, ConnectionResetError):
        return False
    reset = select.poll()
    reset.register(conn, 0)  # POLLERR and POLLHUP only: a RST; the FIN alone is POLLIN
    deadline = time.monotonic() + TIMEOUT
    while time.monotonic() < deadline:
        if reset.poll(1):
            return False
        unacked = struct.unpack("i", fcntl.ioctl(conn, termios.TIOCOUTQ, b"\0" * 4))[0]
        if unacked == 0:  # a RST empties the queue too, after setting the error it polls
            return not reset.poll(0)
    raise AssertionError("a byte sent after the FIN was neither acknowledged nor reset")


def _normal(response: bytes) -> bytes:
    return DATE.sub(b"Date: -\r\n", response)


def certificate_files(directory: Path) -> tuple[Path, Path]:
    """A self-signed certificate and key for localhost, for nginx and elsewhere alike."""
    cert, key, _ = self_signed(directory, ["localhost", "127.0.0.1"])
    return cert, key


@contextlib.contextmanager
def running_tls_nginx(root: Path, files: tuple[Path, Path], directives: str) -> Iterator[int]:
    """running_nginx on an `ssl` port: elsewhere's TLS versions (1.2 and 1.3; Debian's
    nginx.conf also lists 1.0 and 1.1, which OpenSSL 3 refuses anyway), the certificate
    `files`, and `directives` (timeouts) added to the server block. Yields the port."""
    port = free_port()
    plain_listen = f"listen 127.0.0.1:{port} default_server;"
    config = CONFIG.format(dir=root, port=port)
    assert plain_listen in config
    tls = (
        f"\n        ssl_certificate {files[0]};\n        ssl_certificate_key {files[1]};"
        f"\n        ssl_protocols TLSv1.2 TLSv1.3;\n{directives}"
    )
    config = config.replace(plain_listen, f"listen 127.0.0.1:{port} ssl default_server;{tls}")
    with running_nginx(root, config, port):
        yield port


@contextlib.contextmanager
def running_nginx(root: Path, config: str, port: int) -> Iterator[None]:
    """nginx with `config` (CONFIG, formatted for `root` and `port`), serving the decoy's own
    files (same bytes, same mtimes) from root/site, until the block ends."""
    site = root / "site"
    site.mkdir()
    for path, file in default_content().files.items():
        target = site / path.lstrip("/")
        target.write_bytes(file.body)
        os.utime(target, (file.mtime, file.mtime))
    with nginx_process(root, config, port):
        yield


@contextlib.contextmanager
def nginx_process(root: Path, config: str, port: int) -> Iterator[None]:
    """Debian's nginx run with `config` in `root` until the block ends; waits (bounded) until
    it accepts on `port`."""
    binary = shutil.which("nginx") or "/usr/sbin/nginx"
    conf = root / "nginx.conf"
    conf.write_text(config)
    log = root / "stdout.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [binary, "-c", str(conf), "-p", str(root), "-e", str(root / "error.log")],
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        deadline = time.monotonic() + TIMEOUT
        while True:
            if proc.poll() is not None:
                pytest.fail(f"nginx exited: {log.read_text(errors='replace')}")
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                break
            except OSError:
                if time.monotonic() > deadline:
                    pytest.fail(f"nginx never listened on {port}")
                time.sleep(0.02)  # poll interval while nginx starts, not synchronisation
        yield
    finally:
        proc.kill()
        proc.wait(timeout=TIMEOUT)


@pytest.fixture(scope="module")
def nginx(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pair]:
    root = tmp_path_factory.mktemp("nginx")
    port = free_port()
    with running_nginx(root, CONFIG.format(dir=root, port=port), port):
        yield Pair(port)


def _requests() -> list[bytes]:
    content = default_content()
    style = content.files["/style.css"]
    about = content.files["/about.html"]
    since = email.utils.formatdate(style.mtime, usegmt=True).encode()
    chrome = b"Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/1"
    ie6 = b"Mozilla/4.0 (compatible; MSIE 6.0; Windows NT 5.1)"
    h = b"Host: x\r\n"
    return [
        # what browsers, crawlers and scanners send
        b"GET / HTTP/1.1\r\n" + h + b"\r\n",
        b"GET /about.html HTTP/1.1\r\n" + h + b"Accept-Encoding: gzip, deflate, br\r\n\r\n",
        b"GET /journal.html HTTP/1.1\r\n" + h + b"User-Agent: " + chrome + b"\r\n\r\n",
        b"GET /favicon.ico HTTP/1.1\r\n" + h + b"\r\n",
        b"GET /robots.txt HTTP/1.1\r\n" + h + b"Accept-Encoding: gzip\r\n\r\n",
        b"GET /wp-login.php HTTP/1.1\r\n" + h + b"\r\n",
        b"GET /.env HTTP/1.1\r\n" + h + b"Accept-Encoding: gzip\r\n\r\n",
        b"POST /xmlrpc.php HTTP/1.1\r\n" + h + b"Content-Length: 3\r\n\r\nabc",
        b"HEAD / HTTP/1.1\r\n" + h + b"\r\n",
        b"HEAD /about.html HTTP/1.1\r\n" + h + b"Accept-Encoding: gzip\r\n\r\n",
        b"OPTIONS / HTTP/1.1\r\n" + h + b"\r\n",
        b"PUT /about.html HTTP/1.1\r\n" + h + b"Content-Length: 1\r\n\r\nx",
        b"TRACE / HTTP/1.1\r\n" + h + b"\r\n",
        b"FOO / HTTP/1.1\r\n" + h + b"\r\n",
        b"POST / HTTP/1.1\r\n" + h + b"User-Agent: " + chrome + b"\r\n\r\n",
        b"POST / HTTP/1.1\r\n" + h + b"User-Agent: " + ie6 + b"\r\n\r\n",
        b"GET / HTTP/1.0\r\n\r\n",
        b"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n",
        b"GET / HTTP/1.1\r\n" + h + b"Connection: close\r\n\r\n",
        b"GET /\r\n",
        b"HEAD /\r\n",
        b"GET /nope\r\n",
        # probes: garbage, other protocols, half-sent headers
        b"garbage\r\n\r\n",
        b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03",
        b"\x00\x00\x00",
        b"d63dc919e201d7bc4c825630d2cf25fdc93d4b2f0d46706d29038d01\r\n\x01\x01\x01\x02\x03\x04",
        b"\x00" + bytes(range(16)) + b"\x00\x01\x01\xbb\x01\x7f\x00\x00\x01",
        b"SSH-2.0-OpenSSH_9.2\r\n",
        b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
        b"CONNECT example.com:443 HTTP/1.1\r\n" + h + b"\r\n",
        b"GET http://example.com/about.html HTTP/1.1\r\n" + h + b"\r\n",
        b"GET / HTTP/2.0\r\n" + h + b"\r\n",
        b"GET / HTTP/1.1\r\n\r\n",
        b"GET",
        b"GET /about.html HTTP/1.1\r\nHo",
        b"GET /ws HTTP/1.1\r\n" + h + b"Upgrade: websocket\r\nConnection: Upgrade\r\n"
        b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
        b"get / HTTP/1.1\r\n" + h + b"\r\n",
        # URIs
        b"GET /%69ndex.html HTTP/1.1\r\n" + h + b"\r\n",
        b"GET /a/./b/../../about.html?x=1#f HTTP/1.1\r\n" + h + b"\r\n",
        b"GET //about.html HTTP/1.1\r\n" + h + b"\r\n",
        b"GET /../etc/passwd HTTP/1.1\r\n" + h + b"\r\n",
        b"GET /%2e%2e/ HTTP/1.1\r\n" + h + b"\r\n",
        b"GET /%00 HTTP/1.1\r\n" + h + b"\r\n",
        b"GET /%zz HTTP/1.1\r\n",
        b"GET /a%3fb HTTP/1.1\r\n" + h + b"\r\n",
        b"GET /a\x01b HTTP/1.1\r\n" + h + b"\r\n",
        b"GET /about.html/ HTTP/1.1\r\n" + h + b"\r\n",
        b"GET http://[::1]:80/ HTTP/1.1\r\n" + h + b"\r\n",
        b"GET http://a..b/ HTTP/1.1\r\n",
        b"GET /" + b"a" * 8187,
        b"GET /" + b"a" * 9000 + b" HTTP/1.1\r\n\r\n",
        # headers
        b"GET / HTTP/1.1\r\nHost: a b\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: x\t\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: x\r\nHost: y\r\n\r\n",
        b"GET / HTTP/1.1\r\n" + h + b"bad header\r\n\r\n",
        b"GET / HTTP/1.1\r\n" + h + b"X_Y: 1\r\nNoColon\r\n\r\n",
        b"GET / HTTP/1.1\r\n" + h + b" folded\r\n\r\n",
        b"GET / HTTP/1.1\r\n" + h + b"X: a\x00b\r\n\r\n",
        b"GET / HTTP/1.1\r\n" + h + b"If-None-Match: a\r\nIf-None-Match: b\r\n\r\n",
        b"GET / HTTP/1.1\r\n" + h + b"Transfer-Encoding: gzip\r\n\r\n",
        b"GET / HTTP/1.1\r\n" + h + b"Transfer-Encoding: chunked\r\nContent-Length: 1\r\n\r\nx",
        b"GET / HTTP/1.1\r\n" + h + b"Transfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n",
        b"GET / HTTP/1.1\r\n" + h + b"Content-Length: abc\r\n\r\n",
        b"GET / HTTP/1.1\r\n" + h + b"Content-Length: 9999999\r\n\r\n",
        b"GET / HTTP/1.1\r\n" + h + b"X: " + b"a" * 9000 + b"\r\n\r\n",
        b"GET / HTTP/1.1\r\n" + h + b"Expect: 100-continue\r\n\r\n",
        b"GET /nope HTTP/1.1\r\n" + h + b"Expect: 100-continue\r\n\r\n",
        # caches and ranges
        b"GET /style.css HTTP/1.1\r\n" + h + b"If-None-Match: " + style.etag.encode() + b"\r\n\r\n",
        b"GET /style.css HTTP/1.1\r\n" + h + b"If-Modified-Since: " + since + b"\r\n\r\n",
        b"GET /about.html HTTP/1.1\r\n" + h + b"Accept-Encoding: gzip\r\n"
        b'If-None-Match: W/"x", W/' + about.etag.encode() + b"\r\n\r\n",
        b"GET /style.css HTTP/1.1\r\n" + h + b'If-Match: "nope"\r\n\r\n',
        b"GET /style.css HTTP/1.1\r\n" + h + b"If-Unmodified-Since: " + since + b"\r\n\r\n",
        b"GET /style.css HTTP/1.1\r\n" + h + b"Range: bytes=0-9\r\n\r\n",
        b"GET /style.css HTTP/1.1\r\n" + h + b"Range: bytes=-5\r\n\r\n",
        b"GET /style.css HTTP/1.1\r\n" + h + b"Range: bytes=0-1,5-9\r\n\r\n",
        b"GET /style.css HTTP/1.1\r\n" + h + b"Range: bytes=99999-\r\n\r\n",
        b"GET /style.css HTTP/1.1\r\n" + h + b"Range: bytes=abc\r\n\r\n",
        b"GET /style.css HTTP/1.1\r\n" + h + b'Range: bytes=0-1\r\nIf-Range: "x"\r\n\r\n',
        b"GET /about.html HTTP/1.1\r\n" + h + b"Accept-Encoding: gzip;q=0\r\n\r\n",
        b"GET /about.html HTTP/1.1\r\n" + h + b"Accept-Encoding: deflate, gzip;q=0.5\r\n\r\n",
        b"GET /about.html HTTP/1.1\r\n" + h + b"Accept-Encoding: gzip\r\nVia: 1.1 cdn\r\n\r\n",
        # heads that fill nginx's 1 KiB header buffer, exactly or not (a close then lingers)
        _filling(1023),
        _filling(1024),
        _filling(1025),
        b"GET /" + b"a" * 1017 + b"\r\n",
        # pipelining
        b"GET / HTTP/1.1\r\n"
        + h
        + b"\r\nGET /nope HTTP/1.1\r\n"
        + h
        + b"\r\nHEAD / HTTP/1.1\r\n\r\n",
    ]


def _filling(size: int) -> bytes:
    head = b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\nX: "
    return head + b"a" * (size - len(head) - 4) + b"\r\n\r\n"


def test_every_request_gets_what_nginx_gives_and_ends_the_same_way(nginx: Pair) -> None:
    for request in _requests():
        nginx.check(request)


def test_a_body_sent_after_the_answer_is_read_as_nginx_reads_it(nginx: Pair) -> None:
    head = b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n"
    for status_header in (b"Transfer-Encoding: gzip\r\n", b"Connection: close\r\n", b""):
        nginx.check(head + status_header + b"\r\n", b"abc")
        nginx.check(head + status_header + b"\r\na", b"bc")
        nginx.check(head + status_header + b"\r\n", b"abc" + FOLLOW_UP)
        nginx.check(head + status_header + b"\r\n", b"ab", b"c")


def test_mutated_requests_get_what_nginx_gives(nginx: Pair) -> None:
    rng = random.Random(20240314)
    seeds = [r for r in _requests() if len(r) < 400]
    alphabet = b'\r\n \t:/%.?#-_azAZ09\x00\x7f\x80;=,"HTTP/1.1GET'
    for _ in range(300):
        data = bytearray(rng.choice(seeds))
        for _ in range(rng.randint(1, 4)):
            i = rng.randrange(len(data) + 1)
            op = rng.randrange(3)
            if op == 0 and data:
                del data[min(i, len(data) - 1)]
            elif op == 1:
                data[i:i] = bytes((rng.choice(alphabet),))
            elif data:
                data[min(i, len(data) - 1)] = rng.choice(alphabet)
        nginx.check(bytes(data))
