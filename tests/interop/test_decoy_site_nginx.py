"""A server's own generated decoy site (web.site) against Debian's nginx 1.22.1 serving the
same directory (same bytes, same mtimes, as `elsewhere server` leaves it): every answer equal
byte for byte but for the Date, the connection ending the same way. Pages, the 404 page,
robots.txt, the favicon, the stylesheet, gzip, ranges and conditional GETs."""

from __future__ import annotations

import contextlib
import email.utils
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest
from test_decoy_nginx import CONFIG, TIMEOUT, Pair, nginx_process

from elsewhere.web.decoy_content import DecoyContent
from elsewhere.web.site import generate
from ports import free_port

# Needs the Debian package nginx (listed in .ci/apt-packages); never skipped.
pytestmark = pytest.mark.interop


@contextlib.contextmanager
def nginx_serving(root: Path) -> Iterator[int]:
    """nginx with Debian's defaults (test_decoy_nginx.CONFIG) serving root/site as it is."""
    port = free_port()
    with nginx_process(root, CONFIG.format(dir=root, port=port), port):
        yield port


@pytest.fixture(params=["first", "second", "third"])
def served(tmp_path: Path) -> Iterator[tuple[Pair, DecoyContent]]:
    """A freshly generated site (each a different one), served by nginx and by the decoy."""
    (tmp_path / "site").mkdir()
    generate(tmp_path / "site")
    content = DecoyContent.load(tmp_path / "site")
    with nginx_serving(tmp_path) as port:
        pair = Pair(port)
        pair.content = DecoyContent(content.files)
        yield pair, content


def requests(content: DecoyContent) -> list[bytes]:
    h = b"Host: x\r\n"
    pages = sorted(p for p in content.files if p.endswith(".html"))
    style = next(p for p in content.files if p.endswith(".css"))
    index = content.files["/index.html"]
    since = email.utils.formatdate(index.mtime, usegmt=True).encode()
    earlier = email.utils.formatdate(index.mtime - 86400, usegmt=True).encode()
    etag = index.etag.encode()
    out = [b"GET / HTTP/1.1\r\n" + h + b"\r\n"]
    for page in pages:
        out.append(b"GET " + page.encode() + b" HTTP/1.1\r\n" + h + b"\r\n")
        out.append(
            b"GET " + page.encode() + b" HTTP/1.1\r\n" + h + b"Accept-Encoding: gzip\r\n\r\n"
        )
    return [
        *out,
        b"GET /robots.txt HTTP/1.1\r\n" + h + b"\r\n",
        b"GET /favicon.ico HTTP/1.1\r\n" + h + b"\r\n",
        b"GET " + style.encode() + b" HTTP/1.1\r\n" + h + b"\r\n",
        b"GET " + style.encode() + b" HTTP/1.1\r\n" + h + b"Range: bytes=0-99\r\n\r\n",
        b"HEAD / HTTP/1.1\r\n" + h + b"\r\n",
        # not there: the site's own 404 page
        b"GET /wp-login.php HTTP/1.1\r\n" + h + b"\r\n",
        b"GET /about/ HTTP/1.1\r\n" + h + b"Accept-Encoding: gzip, deflate, br\r\n\r\n",
        b"GET /.env HTTP/1.1\r\n" + h + b"Connection: close\r\n\r\n",
        # conditional GETs: unchanged (304), changed (200), and by ETag, strong and weak
        b"GET / HTTP/1.1\r\n" + h + b"If-Modified-Since: " + since + b"\r\n\r\n",
        b"GET / HTTP/1.1\r\n" + h + b"If-Modified-Since: " + earlier + b"\r\n\r\n",
        b"GET / HTTP/1.1\r\n" + h + b"If-None-Match: " + etag + b"\r\n\r\n",
        b"GET / HTTP/1.1\r\n" + h + b'If-None-Match: "0-0"\r\n\r\n',
        b"GET / HTTP/1.1\r\n"
        + h
        + b"Accept-Encoding: gzip\r\nIf-None-Match: W/"
        + etag
        + b"\r\n\r\n",
        b"GET /index.html HTTP/1.1\r\n" + h + b"If-None-Match: " + etag + b"\r\n"
        b"If-Modified-Since: " + since + b"\r\n\r\n",
        b"GET / HTTP/1.1\r\n" + h + b"If-Unmodified-Since: " + earlier + b"\r\n\r\n",
    ]


def test_a_generated_site_gets_what_nginx_gives(served: tuple[Pair, DecoyContent]) -> None:
    pair, content = served
    for request in requests(content):
        pair.check(request)


def test_conditional_gets_of_a_generated_site_are_answered_not_modified(
    served: tuple[Pair, DecoyContent],
) -> None:
    """The comparison above would pass if both sides ignored the conditions: check the 304s."""
    pair, content = served
    index = content.files["/index.html"]
    since = email.utils.formatdate(index.mtime, usegmt=True)
    for header in (f"If-Modified-Since: {since}", f"If-None-Match: {index.etag}"):
        request = f"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n{header}\r\n\r\n".encode()
        with socket.create_connection(("127.0.0.1", pair.port), timeout=TIMEOUT) as conn:
            conn.sendall(request)
            answer = b""
            while data := conn.recv(65536):
                answer += data
        assert answer.startswith(b"HTTP/1.1 304 Not Modified\r\n"), answer
        assert f"ETag: {index.etag}\r\n".encode() in answer
        pair.check(request)
