"""The decoy web site: a sans-I/O HTTP/1.1 server that answers exactly as Debian 12's stock
nginx 1.22.1 serving the same static files would, byte for byte (but for Date), and closes the
connection the same way. A stranger who is not a Trojan/VLESS client lands here (DESIGN.md §4).

The nginx we imitate runs Debian's default nginx.conf (sendfile, `gzip on` with its defaults,
keepalive_timeout 75s, keepalive_requests 1000, client_max_body_size 1m) and one server:

    root <site>; index index.html; error_page 404 /404.html;
    location / { try_files $uri $uri/ =404; }

tests/interop/test_decoy_nginx.py runs that nginx and compares every answer. Reproduced: the
request-line and header state machines of ngx_http_parse.c (what is refused at once with 400,
what is waited for), 0.9 simple requests, complex URIs (%XX, dot segments, merged slashes), Host
validation, duplicate unique headers, Content-Length / Transfer-Encoding rules, TRACE, 405 for
non-GET/HEAD/POST on files, the custom 404 page, If-Modified-Since / If-None-Match (304),
If-Match / If-Unmodified-Since (412, then close), Range (206, multipart, 416), gzip of text/html
(zlib level 1 with nginx's window shrinking, one chunk), Expect: 100-continue, MSIE padding of
error pages, 414 and "Request Header Or Cookie Too Large" limits, keep-alive and pipelining,
request bodies discarded, lingering close (also where nothing more came but nginx cannot know:
its last read filled its buffer, a body read from the socket, a connection that pipelined), and
the timeouts (as `deadline`; which of them end a TLS connection without close_notify).

With `plain_on_https_port`, the site is nginx's `listen ... ssl` port reached by a client that
sent plain HTTP instead of a TLS handshake (ngx_http_ssl_handshake saw a first byte that is
neither a handshake record nor SSLv2): the same parser, the same checks of the head, then every
request that passes them gets the page of nginx's internal code 497, "The plain HTTP request
was sent to HTTPS port", as a 400, and the connection closes.

Not reproduced (documented divergences): the header-buffer limits are modelled exactly only for
the first request of a connection (and whether a read filled them, which decides lingering); a
feed is taken for one arrival, as nginx's reads see it; gzip output of files over 32 KiB may be
chunked differently.
"""

from __future__ import annotations

import calendar
import email.utils
import functools
import hashlib
import itertools
import re
import struct
import zlib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

Buffer = bytes | bytearray | memoryview

SERVER = "nginx/1.22.1"
CLIENT_HEADER_TIMEOUT = 60.0  # nginx default, seconds
KEEPALIVE_TIMEOUT = 75.0  # nginx default (Debian's nginx.conf does not set it)
LINGERING_TIME = 30.0  # nginx defaults for lingering close and body discarding
LINGERING_TIMEOUT = 5.0
KEEPALIVE_REQUESTS = 1000
CLIENT_MAX_BODY_SIZE = 1 << 20
HEADER_BUFFER = 1024  # client_header_buffer_size
LARGE_HEADER_BUFFER = 8192  # large_client_header_buffers 4 8k
LARGE_HEADER_BUFFERS = 4
GZIP_MIN_LENGTH = 20
GZIP_TYPES = frozenset({"text/html"})
# Built at package build time: files shipped in the package carry this date (plus a per-file
# offset of up to two months, so they do not all share one second), not their install time.
SITE_MTIME = 1710410400  # 2024-03-14 10:00:00 UTC
MIME_TYPES = {  # the part of Debian's /etc/nginx/mime.types a small site uses
    "html": "text/html",
    "htm": "text/html",
    "css": "text/css",
    "xml": "text/xml",
    "gif": "image/gif",
    "jpeg": "image/jpeg",
    "jpg": "image/jpeg",
    "js": "application/javascript",
    "txt": "text/plain",
    "png": "image/png",
    "svg": "image/svg+xml",
    "webp": "image/webp",
    "ico": "image/x-icon",
    "woff": "font/woff",
    "woff2": "font/woff2",
    "json": "application/json",
    "pdf": "application/pdf",
}
DEFAULT_TYPE = "application/octet-stream"

REASONS = {
    200: "OK",
    206: "Partial Content",
    304: "Not Modified",
    400: "Bad Request",
    403: "Forbidden",
    404: "Not Found",
    405: "Not Allowed",
    412: "Precondition Failed",
    413: "Request Entity Too Large",
    414: "Request-URI Too Large",
    416: "Requested Range Not Satisfiable",
    494: "Bad Request",  # nginx's internal "Request Header Or Cookie Too Large"
    497: "Bad Request",  # nginx's internal "The plain HTTP request was sent to HTTPS port"
    501: "Not Implemented",
    505: "HTTP Version Not Supported",
}
_TAIL = f"<hr><center>{SERVER}</center>\r\n</body>\r\n</html>\r\n".encode()
_MSIE_PADDING = b"<!-- a padding to disable MSIE and Chrome friendly error page -->\r\n" * 6


# nginx's internal codes that go out as a 400 with a page of their own
_AS_400 = {
    494: b"Request Header Or Cookie Too Large",
    497: b"The plain HTTP request was sent to HTTPS port",
}


def _error_body(status: int) -> bytes:
    if status in _AS_400:
        says = _AS_400[status]
        head = (
            b"<html>\r\n<head><title>400 " + says + b"</title></head>\r\n"
            b"<body>\r\n<center><h1>400 Bad Request</h1></center>\r\n"
            b"<center>" + says + b"</center>\r\n"
        )
    else:
        title = f"{status} {REASONS[status]}".encode()
        head = (
            b"<html>\r\n<head><title>" + title + b"</title></head>\r\n<body>\r\n"
            b"<center><h1>" + title + b"</h1></center>\r\n"
        )
    return head + _TAIL


# the site's content


@dataclass(frozen=True, slots=True)
class StaticFile:
    """One file as nginx's static module describes it."""

    body: bytes
    content_type: str
    mtime: int

    @property
    def etag(self) -> str:
        return f'"{self.mtime:x}-{len(self.body):x}"'  # ngx_http_set_etag: mtime-size in hex

    @property
    def last_modified(self) -> str:
        return _http_date(self.mtime)


@dataclass(slots=True)
class DecoyContent:
    """The files of a site (URI path -> file) and the state nginx shares across connections:
    its counter of multipart range boundaries."""

    files: Mapping[str, StaticFile]
    index: str = "index.html"
    not_found_page: str | None = "/404.html"
    _boundaries: Iterator[int] = field(default_factory=lambda: itertools.count(1))

    @classmethod
    def load(cls, directory: Path | None = None) -> DecoyContent:
        """The files of a flat directory (sub-directories are not served). Without one, the
        site shipped in the package, dated SITE_MTIME; a given directory keeps its mtimes."""
        entries: list[tuple[str, bytes, int | None]]
        if directory is None:
            root = resources.files("elsewhere") / "data" / "decoy"
            entries = [(e.name, e.read_bytes(), None) for e in root.iterdir() if e.is_file()]
        else:
            entries = [
                (p.name, p.read_bytes(), int(p.stat().st_mtime))
                for p in Path(directory).iterdir()
                if p.is_file()
            ]
        files = {
            "/" + name: StaticFile(body, _mime_type(name), packaged_mtime(name) if t is None else t)
            for name, body, t in entries
        }
        return cls(files)

    def next_boundary(self) -> int:
        return next(self._boundaries)


def packaged_mtime(name: str) -> int:
    """The fixed mtime a packaged file is served with (and that the nginx test gives it)."""
    offset = int.from_bytes(hashlib.sha256(name.encode()).digest()[:4], "big")
    return SITE_MTIME - offset % (60 * 86400)


@functools.lru_cache(maxsize=1)
def default_content() -> DecoyContent:
    return DecoyContent.load()


def _mime_type(name: str) -> str:
    _, dot, ext = name.rpartition(".")
    return MIME_TYPES.get(ext.lower(), DEFAULT_TYPE) if dot else DEFAULT_TYPE


def _http_date(t: float) -> str:
    return email.utils.formatdate(int(t), usegmt=True)


# the request parser: ngx_http_parse_request_line and ngx_http_parse_header_line


def _usual_table() -> bytes:
    # ngx_http_parse.c `usual`: bytes that need no attention inside a URI.
    special = set(range(0x21)) | {0x23, 0x25, 0x2B, 0x2E, 0x2F, 0x3F, 0x7F}
    return bytes(0 if b in special else 1 for b in range(256))


_USUAL = _usual_table()
_USUAL_RUN = re.compile(rb"[^\x00-\x20#%+./?\x7f]+")
# In 1.22 only spaces surround a value; a tab is part of it.
_VALUE_RUN = re.compile(rb"[^ \r\n\x00]+")
_METHOD_RUN = re.compile(rb"[A-Z_-]+")
_HEX = b"0123456789abcdefABCDEF"
CR, LF, SP = 13, 10, 32

# request-line states
(
    L_START,
    L_METHOD,
    L_SPACES_BEFORE_URI,
    L_SCHEMA,
    L_SCHEMA_SLASH,
    L_SCHEMA_SLASH_SLASH,
    L_HOST_START,
    L_HOST,
    L_HOST_END,
    L_HOST_IP_LITERAL,
    L_PORT,
    L_AFTER_SLASH_IN_URI,
    L_CHECK_URI,
    L_URI,
    L_HTTP_09,
    L_HTTP_H,
    L_HTTP_HT,
    L_HTTP_HTT,
    L_HTTP_HTTP,
    L_FIRST_MAJOR,
    L_MAJOR,
    L_FIRST_MINOR,
    L_MINOR,
    L_SPACES_AFTER_DIGIT,
    L_ALMOST_DONE,
) = range(25)
# header-line states
H_START, H_NAME, H_SPACE_BEFORE_VALUE, H_VALUE, H_SPACE_AFTER_VALUE, H_ALMOST_DONE, H_DONE = range(
    7
)

_KNOWN_METHODS = {
    b"GET",
    b"PUT",
    b"POST",
    b"COPY",
    b"MOVE",
    b"LOCK",
    b"HEAD",
    b"MKCOL",
    b"PATCH",
    b"TRACE",
    b"DELETE",
    b"UNLOCK",
    b"OPTIONS",
    b"PROPFIND",
    b"PROPPATCH",
}
# Headers nginx 1.22 refuses to see twice (ngx_http_process_unique_header_line).
_UNIQUE = frozenset(
    {
        "if-modified-since",
        "if-unmodified-since",
        "if-match",
        "if-none-match",
        "content-length",
        "content-range",
        "if-range",
        "transfer-encoding",
        "expect",
        "authorization",
    }
)
# Headers whose first occurrence counts (ngx_http_process_header_line); the rest are ignored.
_FIRST = frozenset({"range", "accept-encoding", "via", "keep-alive", "user-agent"})


class _BadRequest(Exception):
    """The request ends here with nginx's built-in page for `status`. `consumed` is how far
    nginx had read the buffer: bytes past it make it close lingering. None: it always lingers
    (a byte-level parse error leaves at least that byte unread)."""

    def __init__(self, status: int, consumed: int | None = None) -> None:
        super().__init__(status)
        self.status = status
        self.consumed = consumed


@dataclass(slots=True)
class _Request:
    method: bytes = b""
    # major * 1000 + minor; 9 for a 0.9 simple request; nginx assumes 1.0 until the line ends
    version: int = 1000
    uri: bytes = b"/"  # decoded path, without arguments
    headers: dict[str, bytes] = field(default_factory=dict)
    connection: str | None = None  # "close" | "keep-alive"
    msie: bool = False
    msie6: bool = False
    chrome: bool = False


class _Parser:
    """Incremental request-head parser with nginx's states and header buffers."""

    def __init__(self) -> None:
        self.request = _Request()
        self.in_headers = False
        self.state = L_START
        self.request_start = 0
        self.line_start = 0  # r->header_name_start
        self.buf_begin = 0
        self.buf_size = HEADER_BUFFER
        self.large_buffers = 0
        # request-line bookkeeping
        self.uri_start = 0
        self.uri_end = 0
        self.host_start = 0
        self.host_end = 0
        self.schema_end = 0
        self.args_start = 0
        self.complex_uri = False
        self.quoted_uri = False
        self.empty_path = False
        self.major = 0
        self.minor = 0
        # header-line bookkeeping
        self.name_end = 0
        self.value_start = 0
        self.value_end = 0
        self.invalid_header = False

    def run(self, buf: bytearray, pos: int) -> tuple[int, bool]:
        """Parse from `pos`; return the new position and whether the head is complete.
        Raises _BadRequest."""
        while True:
            limit = min(len(buf), self.buf_begin + self.buf_size)
            if self.in_headers:
                pos, done = self._headers(buf, pos, limit)
            else:
                pos, done = self._request_line(buf, pos, limit)
                if done and self.request.version != 9:
                    continue  # go on with the headers
            if done:
                return pos, True
            if pos < self.buf_begin + self.buf_size:
                return pos, False
            self._grow(pos)

    def filled(self, received: int) -> bool:
        """Whether, with `received` bytes in, nginx's last read filled its header buffer: the
        socket then still counts as readable and a close lingers, though nothing more came
        (ngx_unix_recv leaves rev->ready set; ngx_http_finalize_connection lingers on it)."""
        return received >= self.buf_begin + self.buf_size

    def _grow(self, pos: int) -> None:
        # ngx_http_alloc_large_header_buffer: the buffer is full and the head is not done.
        if not self.in_headers and self.state == L_START:
            self.buf_begin = pos  # the client filled the buffer with CRLFs; start over
            return
        old = self.line_start if self.in_headers else self.request_start
        mid_line = self.state != (H_START if self.in_headers else L_START)
        if (mid_line and pos - old >= LARGE_HEADER_BUFFER) or (
            self.large_buffers >= LARGE_HEADER_BUFFERS
        ):
            # 494 sets r->lingering_close; 414 lingers only if more bytes wait
            raise _BadRequest(494) if self.in_headers else _BadRequest(414, pos)
        self.large_buffers += 1
        self.buf_begin = old
        self.buf_size = LARGE_HEADER_BUFFER

    # ngx_http_parse_request_line

    def _request_line(self, buf: bytearray, pos: int, limit: int) -> tuple[int, bool]:
        state = self.state
        while pos < limit:
            ch = buf[pos]
            if state == L_START:
                if ch in (CR, LF):
                    pos += 1
                    continue
                self.request_start = pos
                if not (0x41 <= ch <= 0x5A or ch in (0x5F, 0x2D)):
                    raise _BadRequest(400)
                state = L_METHOD
            elif state == L_METHOD:
                run = _METHOD_RUN.match(buf, pos, limit)
                if run:
                    pos = run.end()
                    continue
                if ch != SP:
                    raise _BadRequest(400)
                self.request.method = bytes(buf[self.request_start : pos])
                state = L_SPACES_BEFORE_URI
            elif state == L_SPACES_BEFORE_URI:
                if ch == 0x2F:
                    self.uri_start = pos
                    state = L_AFTER_SLASH_IN_URI
                elif 0x61 <= ch | 0x20 <= 0x7A:
                    state = L_SCHEMA
                elif ch != SP:
                    raise _BadRequest(400)
            elif state == L_SCHEMA:
                if ch == 0x3A:
                    self.schema_end = pos
                    state = L_SCHEMA_SLASH
                elif not (0x61 <= ch | 0x20 <= 0x7A or 0x30 <= ch <= 0x39 or ch in b"+-."):
                    raise _BadRequest(400)
            elif state in (L_SCHEMA_SLASH, L_SCHEMA_SLASH_SLASH):
                if ch != 0x2F:
                    raise _BadRequest(400)
                state = L_SCHEMA_SLASH_SLASH if state == L_SCHEMA_SLASH else L_HOST_START
            elif state in (L_HOST_START, L_HOST, L_HOST_END):
                if state == L_HOST_START:
                    self.host_start = pos
                    if ch == 0x5B:
                        state = L_HOST_IP_LITERAL
                        pos += 1
                        continue
                    state = L_HOST
                if state == L_HOST and (
                    0x61 <= ch | 0x20 <= 0x7A or 0x30 <= ch <= 0x39 or ch in b".-"
                ):
                    pos += 1
                    continue
                if ch == 0x3A:
                    state = L_PORT
                    pos += 1
                    continue
                self.host_end = pos
                state = self._after_host(ch, pos)
            elif state == L_HOST_IP_LITERAL:
                if ch == 0x5D:
                    state = L_HOST_END
                elif not (
                    0x30 <= ch <= 0x39 or 0x61 <= ch | 0x20 <= 0x7A or ch in b":-._~!$&'()*+,;="
                ):
                    raise _BadRequest(400)
            elif state == L_PORT:
                if not 0x30 <= ch <= 0x39:
                    self.host_end = pos
                    state = self._after_host(ch, pos)
            elif state in (L_AFTER_SLASH_IN_URI, L_CHECK_URI, L_URI):
                run = _USUAL_RUN.match(buf, pos, limit)
                if run:
                    pos = run.end()
                    if state == L_AFTER_SLASH_IN_URI:
                        state = L_CHECK_URI
                    continue
                if ch == SP:
                    self.uri_end = pos
                    state = L_HTTP_09
                elif ch in (CR, LF):
                    self.uri_end = pos
                    self.minor = 9
                    if ch == LF:
                        return self._line_done(buf, pos)
                    state = L_ALMOST_DONE
                elif ch == 0x23:  # '#'
                    self.complex_uri = True
                    state = L_URI
                elif state == L_URI:
                    if ch < 0x20 or ch == 0x7F:
                        raise _BadRequest(400)
                elif ch == 0x25:  # '%'
                    self.quoted_uri = True
                    state = L_URI
                elif ch == 0x3F:  # '?'
                    self.args_start = pos + 1
                    state = L_URI
                elif ch == 0x2B:  # '+'
                    pass
                elif state == L_AFTER_SLASH_IN_URI:
                    if ch in (0x2E, 0x2F):  # "/." and "//"
                        self.complex_uri = True
                        state = L_URI
                    elif ch < 0x20 or ch == 0x7F:
                        raise _BadRequest(400)
                    else:
                        state = L_CHECK_URI
                elif ch == 0x2F:
                    state = L_AFTER_SLASH_IN_URI
                elif ch == 0x2E:
                    pass
                elif ch < 0x20 or ch == 0x7F:
                    raise _BadRequest(400)
            elif state == L_HTTP_09:
                if ch in (CR, LF):
                    self.minor = 9
                    if ch == LF:
                        return self._line_done(buf, pos)
                    state = L_ALMOST_DONE
                elif ch == 0x48:  # 'H'
                    state = L_HTTP_H
                elif ch != SP:
                    raise _BadRequest(400)
            elif state in (L_HTTP_H, L_HTTP_HT, L_HTTP_HTT, L_HTTP_HTTP):
                if ch != b"TTP/"[state - L_HTTP_H]:
                    raise _BadRequest(400)
                state += 1
            elif state == L_FIRST_MAJOR:
                if not 0x31 <= ch <= 0x39:
                    raise _BadRequest(400)
                self.major = ch - 0x30
                if self.major > 1:
                    raise _BadRequest(505)
                state = L_MAJOR
            elif state == L_MAJOR:
                if ch == 0x2E:
                    state = L_FIRST_MINOR
                elif not 0x30 <= ch <= 0x39:
                    raise _BadRequest(400)
                else:
                    self.major = self.major * 10 + ch - 0x30
                    if self.major > 1:
                        raise _BadRequest(505)
            elif state == L_FIRST_MINOR:
                if not 0x30 <= ch <= 0x39:
                    raise _BadRequest(400)
                self.minor = ch - 0x30
                state = L_MINOR
            elif state == L_MINOR:
                if ch == CR:
                    state = L_ALMOST_DONE
                elif ch == LF:
                    return self._line_done(buf, pos)
                elif ch == SP:
                    state = L_SPACES_AFTER_DIGIT
                elif not 0x30 <= ch <= 0x39 or self.minor > 99:
                    raise _BadRequest(400)
                else:
                    self.minor = self.minor * 10 + ch - 0x30
            elif state == L_SPACES_AFTER_DIGIT:
                if ch == CR:
                    state = L_ALMOST_DONE
                elif ch == LF:
                    return self._line_done(buf, pos)
                elif ch != SP:
                    raise _BadRequest(400)
            elif state == L_ALMOST_DONE:
                if ch != LF:
                    raise _BadRequest(400)
                return self._line_done(buf, pos)
            pos += 1
        self.state = state
        return pos, False

    def _after_host(self, ch: int, pos: int) -> int:
        if ch == 0x2F:
            self.uri_start = pos
            return L_AFTER_SLASH_IN_URI
        if ch == 0x3F:
            self.uri_start = pos
            self.args_start = pos + 1
            self.empty_path = True
            return L_URI
        if ch == SP:
            self.uri_start = self.uri_end = -1  # the URI is "/"
            return L_HTTP_09
        raise _BadRequest(400)

    def _line_done(self, buf: bytearray, pos: int) -> tuple[int, bool]:
        """The request line is whole: nginx checks the method of a 0.9 request, the URI and a
        host written in the line right away, before any header arrives."""
        request = self.request
        request.version = self.major * 1000 + self.minor
        end = pos + 1
        if request.version == 9 and request.method != b"GET":
            raise _BadRequest(400, end)
        # "GET http://host HTTP/1.1" has no path: it means "/"
        raw = b"/" if self.uri_start < 0 else bytes(buf[self.uri_start : self.uri_end])
        if self.complex_uri or self.quoted_uri or self.empty_path:
            request.uri = _complex_uri(raw, self.empty_path, end)
        else:
            request.uri = raw.split(b"?", 1)[0]
        if self.host_start and not _valid_host(bytes(buf[self.host_start : self.host_end])):
            raise _BadRequest(400, end)
        self.state = H_START
        self.in_headers = True
        self.line_start = end
        return end, True

    # ngx_http_parse_header_line

    def _headers(self, buf: bytearray, pos: int, limit: int) -> tuple[int, bool]:
        state = self.state
        while pos < limit:
            ch = buf[pos]
            if state == H_START:
                self.line_start = pos
                self.invalid_header = False
                if ch == CR:
                    state = H_DONE
                elif ch == LF:
                    self.state = H_START
                    return pos + 1, True
                else:
                    state = H_NAME
                    if not _name_char(ch):
                        if ch <= 0x20 or ch == 0x7F or ch == 0x3A:
                            raise _BadRequest(400)
                        self.invalid_header = True
            elif state == H_NAME:
                if _name_char(ch):
                    pass
                elif ch == 0x3A:
                    self.name_end = pos
                    state = H_SPACE_BEFORE_VALUE
                elif ch in (CR, LF):
                    self.name_end = self.value_start = self.value_end = pos
                    if ch == LF:
                        self._header_line(buf, pos + 1)
                        state = H_START
                    else:
                        state = H_ALMOST_DONE
                elif ch <= 0x20 or ch == 0x7F:
                    raise _BadRequest(400)
                else:
                    self.invalid_header = True
            elif state == H_SPACE_BEFORE_VALUE:
                if ch == SP:
                    pass
                elif ch in (CR, LF):
                    self.value_start = self.value_end = pos
                    if ch == LF:
                        self._header_line(buf, pos + 1)
                        state = H_START
                    else:
                        state = H_ALMOST_DONE
                elif ch == 0:
                    raise _BadRequest(400)
                else:
                    self.value_start = pos
                    state = H_VALUE
                    continue
            elif state in (H_VALUE, H_SPACE_AFTER_VALUE):
                run = _VALUE_RUN.match(buf, pos, limit)
                if run:
                    pos = run.end()
                    state = H_VALUE
                    continue
                if ch == SP:
                    if state == H_VALUE:
                        self.value_end = pos
                    state = H_SPACE_AFTER_VALUE
                elif ch in (CR, LF):
                    if state == H_VALUE:
                        self.value_end = pos
                    if ch == LF:
                        self._header_line(buf, pos + 1)
                        state = H_START
                    else:
                        state = H_ALMOST_DONE
                else:  # NUL
                    raise _BadRequest(400)
            elif state == H_ALMOST_DONE:
                if ch == LF:
                    self._header_line(buf, pos + 1)
                    state = H_START
                elif ch != CR:
                    raise _BadRequest(400)
            elif state == H_DONE:
                if ch != LF:
                    raise _BadRequest(400)
                self.state = H_START
                return pos + 1, True
            pos += 1
        self.state = state
        return pos, False

    def _header_line(self, buf: bytearray, end: int) -> None:
        """ngx_http_process_request_headers for one complete line ending before `end`."""
        if self.invalid_header:
            return  # ignore_invalid_headers
        name = bytes(buf[self.line_start : self.name_end]).decode("latin-1").lower()
        value = bytes(buf[self.value_start : self.value_end])
        request = self.request
        headers = request.headers
        if name == "host":
            if "host" in headers or not _valid_host(value):
                raise _BadRequest(400, end)
            headers[name] = value
        elif name == "connection":
            lowered = value.lower()
            if b"close" in lowered:
                request.connection = "close"
            elif b"keep-alive" in lowered:
                request.connection = "keep-alive"
        elif name in _UNIQUE:
            if name in headers:
                raise _BadRequest(400, end)
            headers[name] = value
        elif name in _FIRST and name not in headers:
            headers[name] = value
            if name == "user-agent":
                self._user_agent(value)

    def _user_agent(self, ua: bytes) -> None:
        # ngx_http_process_user_agent: the browser flags that change a response.
        request = self.request
        msie = ua.find(b"MSIE ")
        if msie >= 0 and msie + 7 < len(ua):
            request.msie = True
            if ua[msie + 6 : msie + 7] == b"." and (
                ua[msie + 5 : msie + 6] in (b"4", b"5")
                or (ua[msie + 5 : msie + 6] == b"6" and ua.find(b"SV1", msie + 8) < 0)
            ):
                request.msie6 = True
        if b"Opera" in ua:
            request.msie = request.msie6 = False
        elif not request.msie and b"Gecko/" not in ua and b"Chrome/" in ua:
            request.chrome = True  # Chrome gets MSIE's error-page padding too


def _name_char(ch: int) -> bool:
    """nginx's `lowcase` table: letters, digits and '-' make a header name."""
    return 0x30 <= ch <= 0x39 or 0x61 <= (ch | 0x20) <= 0x7A or ch == 0x2D


def _valid_host(host: bytes) -> bool:
    """ngx_http_validate_host."""
    dot_pos = length = len(host)
    literal = rest = False
    for i, ch in enumerate(host):
        if ch == 0x2E:
            if dot_pos == i - 1:
                return False
            dot_pos = i
        elif ch == 0x3A:
            if not literal and not rest:
                length, rest = i, True
        elif ch == 0x5B:
            if i == 0:
                literal = True
        elif ch == 0x5D:
            if literal and not rest:
                length, rest = i + 1, True
        elif ch == 0x2F or ch <= 0x20 or ch == 0x7F:
            return False
    if dot_pos == length - 1:
        length -= 1
    return length > 0


def _complex_uri(raw: bytes, empty_path: bool, consumed: int) -> bytes:
    """ngx_http_parse_complex_uri with merge_slashes on: decode %XX, merge slashes, resolve
    dot segments; cut at '?' and '#'. Raises _BadRequest(400, consumed)."""
    usual, slash, dot, dot_dot, quoted, quoted_second = range(6)
    out = bytearray(b"/" if empty_path else b"")
    state = quoted_state = usual
    decoded = 0
    i = 0
    n = len(raw)
    while i < n:
        ch = raw[i]
        i += 1
        while True:  # one pass per byte; `continue` re-dispatches a decoded byte
            if state == quoted:
                if ch in _HEX:
                    decoded = int(chr(ch), 16)
                    state = quoted_second
                    break
                raise _BadRequest(400, consumed)
            if state == quoted_second:
                if ch not in _HEX:
                    raise _BadRequest(400, consumed)
                ch = (decoded << 4) + int(chr(ch), 16)
                if ch in (0x25, 0x23, 0x3F):  # a decoded '%', '#' or '?' is plain data
                    out.append(ch)
                    state = usual
                    break
                if ch == 0:
                    raise _BadRequest(400, consumed)
                state = quoted_state
                continue
            if _USUAL[ch]:
                out.append(ch)
                state = usual
                break
            if ch == 0x25:
                quoted_state = state
                state = quoted
                break
            if ch in (0x3F, 0x23):  # '?' args, '#' fragment: the path ends
                if state == dot:
                    out.pop()
                elif state == dot_dot:
                    _up(out, consumed)
                return bytes(out)
            if state == usual:
                if ch == 0x2F:
                    state = slash
                out.append(ch)
            elif state == slash:
                if ch == 0x2E:
                    state = dot
                    out.append(ch)
                elif ch != 0x2F:
                    state = usual
                    out.append(ch)
            elif state == dot:
                if ch == 0x2F:
                    state = slash
                    out.pop()
                elif ch == 0x2E:
                    state = dot_dot
                    out.append(ch)
                else:
                    state = usual
                    out.append(ch)
            elif state == dot_dot:
                if ch == 0x2F:
                    _up(out, consumed)
                    state = slash
                else:
                    state = usual
                    out.append(ch)
            break
    if state in (quoted, quoted_second):
        raise _BadRequest(400, consumed)
    if state == dot:
        out.pop()
    elif state == dot_dot:
        _up(out, consumed)
    return bytes(out)


def _up(out: bytearray, consumed: int) -> None:
    """Remove "<segment>/.." from the end of `out` (which ends in "/..")."""
    cut = len(out) - 4
    while True:
        if cut < 0:
            raise _BadRequest(400, consumed)
        if out[cut] == 0x2F:
            del out[cut + 1 :]
            return
        cut -= 1


# responses


@dataclass(slots=True)
class _Response:
    status: int
    headers: list[tuple[str, str]]  # after Connection, in nginx's order
    body: bytes = b""
    content_type: str | None = None
    content_length: int | None = None
    last_modified: str | None = None
    chunked: bool = False
    keepalive: bool = False
    close_after: bool = False  # nginx closes although the header said keep-alive (412)
    continue_first: bool = False  # "100 Continue" goes out before it


class DecoySite:
    """One connection to the decoy web site.

    feed() what the client sent with the time it arrived, write data_to_send(), then look at:
    `half_closed` - shut down our write side but keep reading and feeding (nginx's lingering
    close); `closed` - close the socket now, reading nothing more first (so that bytes the
    client sent after our answer draw the RST a real nginx's close would); `deadline` - close
    silently once it passes (nginx's timeouts answer nothing; over TLS without close_notify
    when `times_out_quietly`). Call eof() when the client closes its side.

    `now` is when the connection was accepted: nginx's client_header_timeout (`header_timeout`)
    runs from then for the first request, through a TLS handshake or a plain-HTTP peek alike.
    `plain_on_https_port`: plain HTTP that came to nginx's TLS port (see the module's doc)."""

    def __init__(
        self,
        content: DecoyContent | None = None,
        *,
        now: float,
        header_timeout: float = CLIENT_HEADER_TIMEOUT,
        plain_on_https_port: bool = False,
    ) -> None:
        self._content = content or default_content()
        self._header_timeout = header_timeout
        self._plain_on_https_port = plain_on_https_port
        self._now = now
        self._buf = bytearray()
        self._out = bytearray()
        self._parser: _Parser | None = _Parser()
        self._pos = 0  # how far the parser has read _buf
        self._requests = 0
        self._body_left = 0
        self._chunked: _ChunkedDiscard | None = None
        self._after_body = "keepalive"  # then "linger" or "close" (lingering if bytes are left)
        # nginx's reads of the head filled its buffer: a close after this head lingers
        self._filled = False
        self._pipelined = False  # a request came pipelined: every close from then on lingers
        # the body being discarded came with its head: nginx read none of it from the socket
        self._body_with_head = False
        self._discard_since = 0.0
        self._last_read = now
        self._header_deadline: float | None = now + header_timeout
        self._idle_deadline: float | None = None
        self._linger_since: float | None = None
        self.half_closed = False
        self.closed = False

    @property
    def deadline(self) -> float | None:
        """When to close without a word if nothing else has happened."""
        if self.closed:
            return None
        if self._linger_since is not None:
            return min(self._last_read + LINGERING_TIMEOUT, self._linger_since + LINGERING_TIME)
        if self._discarding:
            return min(self._last_read + LINGERING_TIMEOUT, self._discard_since + LINGERING_TIME)
        if self._header_deadline is not None:
            return self._header_deadline
        return self._idle_deadline

    @property
    def times_out_quietly(self) -> bool:
        """Whether passing `deadline` now times out a request (a head begun and not finished,
        a body not all sent) rather than ends an idle connection: nginx then marks it timed out
        and shuts TLS down quietly, a FIN without close_notify (measured)."""
        if self.closed or self._linger_since is not None:
            return False
        return self._discarding or (self._parser is not None and bool(self._buf))

    def feed(self, data: Buffer, now: float) -> None:
        if self.closed or not data:
            return
        self._now = self._last_read = now
        if self._linger_since is not None:
            return  # lingering close reads and drops
        if self._header_deadline is None and not self._discarding:
            self._header_deadline = now + self._header_timeout  # the next request begins
        self._buf += data
        self._body_with_head = False
        self._advance()

    def eof(self) -> None:
        """The client closed its side: nginx closes too, without another byte."""
        self.closed = True

    def data_to_send(self) -> bytes:
        out = bytes(self._out)
        self._out.clear()
        return out

    # private: the connection

    @property
    def _discarding(self) -> bool:
        return self._body_left > 0 or self._chunked is not None

    def _advance(self) -> None:
        while not self.closed and self._linger_since is None:
            if self._discarding:
                try:
                    if not self._discard():
                        return
                except _BadRequest:
                    self._finish(linger=False)  # a broken chunked body ends the connection
                    return
                if self._after_body == "keepalive":
                    # what follows a body nginx read from the socket is still in the socket,
                    # not in its header buffer: no pipelined request
                    self._next_request(pipelined=self._body_with_head)
                    continue
                # A body read from the socket ends with a read that filled what was asked
                # for (no more than the body's rest): nginx lingers (see _Parser.filled).
                self._finish(
                    linger=self._after_body == "linger"
                    or bool(self._buf)
                    or self._readable
                    or not self._body_with_head
                )
                return
            parser = self._parser
            if parser is None or self._pos >= len(self._buf):
                return
            try:
                self._pos, done = parser.run(self._buf, self._pos)
            except _BadRequest as error:
                self._filled = parser.filled(len(self._buf))
                self._fail(error, parser.request)
                return
            if not done:
                return
            self._filled = parser.filled(len(self._buf))
            self._body_with_head = True
            self._respond(parser.request)

    def _respond(self, request: _Request) -> None:
        self._requests += 1
        self._header_deadline = None
        self._parser = None
        del self._buf[: self._pos]
        self._pos = 0
        try:
            response = self._handle(request)
        except _BadRequest as error:
            self._fail(error, request)
            return
        self._send(response, request)
        if request.version == 9:
            self._finish(linger=bool(self._buf) or self._readable)
        elif response.close_after:
            self._finish(linger=False)
        elif self._discarding:
            self._discard_since = self._now
            self._after_body = "keepalive" if response.keepalive else "linger"
        elif response.keepalive:
            self._next_request()
        else:
            self._finish(linger=bool(self._buf) or self._readable)

    def _fail(self, error: _BadRequest, request: _Request) -> None:
        """A request nginx answers with a built-in error page and then closes: at once, or
        once it has read the body it was told of (an error found after the headers)."""
        self._send(self._special(error.status, request, keepalive=False), request)
        if self._discarding:
            self._discard_since = self._now
            self._after_body = "close"
            return
        consumed = error.consumed
        self._finish(linger=consumed is None or len(self._buf) > consumed or self._readable)

    @property
    def _readable(self) -> bool:
        """Whether nginx, closing, still takes the socket for readable and so lingers
        (ngx_http_finalize_connection: rev->ready, or c->pipeline)."""
        return self._filled or self._pipelined

    def _next_request(self, pipelined: bool = True) -> None:
        if self._buf and pipelined:
            self._pipelined = True  # ngx_http_set_keepalive: "pipelined request"
        self._parser = _Parser()
        self._pos = 0
        self._header_deadline = self._now + self._header_timeout if self._buf else None
        self._idle_deadline = self._now + KEEPALIVE_TIMEOUT

    def _finish(self, *, linger: bool) -> None:
        self._parser = None
        self._body_left, self._chunked = 0, None
        if linger:
            self.half_closed = True
            self._linger_since = self._now
            self._buf.clear()
        else:
            self.closed = True

    def _discard(self) -> bool:
        """Drop request-body bytes; True once the body is over."""
        if self._chunked is not None:
            used, done = self._chunked.feed(self._buf)
            del self._buf[:used]
            if done:
                self._chunked = None
            return done
        take = min(self._body_left, len(self._buf))
        del self._buf[:take]
        self._body_left -= take
        return self._body_left == 0

    # private: ngx_http_process_request_header, ngx_http_handler, the location

    def _handle(self, request: _Request) -> _Response:
        if request.version == 9:
            if self._plain_on_https_port:
                raise _BadRequest(497, 0)  # a 0.9 request skips the head's checks
            return self._location(request, keepalive=False)
        headers = request.headers
        if "host" not in headers and request.version > 1000:
            raise _BadRequest(400, 0)
        length = -1
        if "content-length" in headers:
            raw = headers["content-length"]
            if not raw.isdigit() or int(raw) >= 1 << 63:
                raise _BadRequest(400, 0)
            length = int(raw)
        # From here an error page is followed by reading the body nginx was promised.
        self._body_left = max(length, 0)
        if "transfer-encoding" in headers:
            if request.version < 1001:
                raise _BadRequest(400, 0)
            if headers["transfer-encoding"].lower() != b"chunked":
                raise _BadRequest(501, 0)
            if length >= 0:
                raise _BadRequest(400, 0)
            self._chunked = _ChunkedDiscard()
        if request.method == b"TRACE":
            raise _BadRequest(405, 0)
        # ngx_http_process_request: after the head's checks, before the 413 and the location
        if self._plain_on_https_port:
            raise _BadRequest(497, 0)
        if request.connection is None:
            keepalive = request.version > 1000
        else:
            keepalive = request.connection == "keep-alive"
        if self._requests >= KEEPALIVE_REQUESTS or (request.msie6 and request.method == b"POST"):
            keepalive = False
        if length > CLIENT_MAX_BODY_SIZE:
            return self._special(413, request, keepalive=False)
        return self._location(request, keepalive)

    def _location(self, request: _Request, keepalive: bool) -> _Response:
        """try_files $uri $uri/ =404, index index.html, error_page 404 /404.html."""
        content = self._content
        uri = request.uri
        method = request.method
        if uri == b"/":
            file = content.files.get("/" + content.index)
            if file is None:  # a directory without its index
                forbidden = method in (b"GET", b"HEAD", b"POST")
                return self._special(403 if forbidden else 405, request, keepalive=keepalive)
        elif uri.endswith(b"/"):
            file = None  # the site is flat: no other directory exists
        else:
            file = content.files.get(uri.decode("latin-1"))
        if file is None:
            page = content.files.get(content.not_found_page or "")
            if page is None:
                return self._special(404, request, keepalive=keepalive)
            return self._file(page, request, 404, keepalive)
        if method not in (b"GET", b"HEAD", b"POST") or method == b"POST":
            return self._special(405, request, keepalive=keepalive)
        response = self._file(file, request, 200, keepalive)
        response.continue_first = _expects_continue(request)
        return response

    # private: the static module and the header filters

    def _file(self, file: StaticFile, request: _Request, status: int, keepalive: bool) -> _Response:
        headers = request.headers
        extra: list[tuple[str, str]] = [("ETag", file.etag)]
        response = _Response(
            status,
            extra,
            file.body,
            content_type=file.content_type,
            content_length=len(file.body),
            last_modified=file.last_modified if status == 200 else None,
            keepalive=keepalive,
        )
        if status == 200 and request.version != 9:  # ngx_http_not_modified_filter
            if "if-unmodified-since" in headers:
                since = _parse_http_time(headers["if-unmodified-since"])
                if since is None or since < file.mtime:
                    return self._precondition_failed(request, keepalive)
            if "if-match" in headers and not _etag_matches(headers["if-match"], file.etag, False):
                return self._precondition_failed(request, keepalive)
            ims, inm = headers.get("if-modified-since"), headers.get("if-none-match")
            if (ims is not None or inm is not None) and (
                (ims is None or _parse_http_time(ims) == file.mtime)
                and (inm is None or _etag_matches(inm, file.etag, True))
            ):
                return _Response(304, extra, last_modified=file.last_modified, keepalive=keepalive)
        if (  # ngx_http_gzip_header_filter (which, in 1.22, does not skip HEAD)
            status in (200, 403, 404)
            and file.content_type in GZIP_TYPES
            and len(file.body) >= GZIP_MIN_LENGTH
            and _gzip_ok(request)
        ):
            response.body = _chunk(_nginx_gzip(file.body))
            response.content_length = None
            response.chunked = request.method != b"HEAD"  # the chunked filter skips HEAD
            extra[0] = ("ETag", "W/" + file.etag)
            extra.append(("Content-Encoding", "gzip"))
        elif status == 200 and request.version >= 1000:  # ngx_http_range_header_filter
            ranged = self._ranges(file, request, response)
            if ranged is not None:
                return ranged
        return response

    def _precondition_failed(self, request: _Request, keepalive: bool) -> _Response:
        response = self._special(412, request, keepalive=keepalive)
        response.close_after = True  # ngx_http_filter_finalize_request closes after it
        return response

    def _ranges(self, file: StaticFile, request: _Request, response: _Response) -> _Response | None:
        """None: no ranges (the response gets Accept-Ranges); else the 206 or 416."""
        value = request.headers.get("range")
        if value is None or len(value) < 7 or value[:6].lower() != b"bytes=":
            response.headers.append(("Accept-Ranges", "bytes"))
            return None
        if_range = request.headers.get("if-range")
        if if_range is not None:
            if len(if_range) >= 2 and if_range.endswith(b'"'):
                fresh = if_range == file.etag.encode()
            else:
                fresh = _parse_http_time(if_range) == file.mtime
            if not fresh:
                response.headers.append(("Accept-Ranges", "bytes"))
                return None
        size = len(file.body)
        parsed = _parse_ranges(value[6:], size)
        if parsed is None:
            response.headers.append(("Accept-Ranges", "bytes"))
            return None
        if isinstance(parsed, str):
            special = self._special(416, request, keepalive=response.keepalive)
            special.headers.append(("Content-Range", f"bytes */{size}"))
            return special
        response.status = 206
        if len(parsed) == 1:
            start, end = parsed[0]
            response.headers.append(("Content-Range", f"bytes {start}-{end - 1}/{size}"))
            response.content_length = end - start
            response.body = file.body[start:end]
            return response
        boundary = f"{self._content.next_boundary():020d}"
        part = f"\r\n--{boundary}\r\nContent-Type: {file.content_type}\r\nContent-Range: bytes "
        response.body = (
            b"".join(
                (part + f"{s}-{e - 1}/{size}\r\n\r\n").encode() + file.body[s:e] for s, e in parsed
            )
            + f"\r\n--{boundary}--\r\n".encode()
        )
        response.content_type = f"multipart/byteranges; boundary={boundary}"
        response.content_length = len(response.body)
        return response

    def _special(self, status: int, request: _Request, *, keepalive: bool) -> _Response:
        """ngx_http_special_response_handler: nginx's built-in page for `status`."""
        if status in (400, 413, 414, 494, 497, 501):
            keepalive = False
        body = _error_body(status)
        if (request.msie or request.chrome) and request.version >= 1000 and status >= 400:
            body += _MSIE_PADDING
        return _Response(
            status,
            [],
            body,
            content_type="text/html",
            content_length=len(body),
            keepalive=keepalive,
        )

    def _send(self, response: _Response, request: _Request) -> None:
        if response.continue_first:
            self._out += b"HTTP/1.1 100 Continue\r\n\r\n"
        if request.version < 1000:  # a 0.9 answer is the body alone
            self._out += response.body
            return
        lines = [
            f"HTTP/1.1 {400 if response.status in _AS_400 else response.status} "
            f"{REASONS[response.status]}",
            f"Server: {SERVER}",
            f"Date: {_http_date(self._now)}",
        ]
        if response.content_type is not None:
            lines.append(f"Content-Type: {response.content_type}")
        if response.content_length is not None:
            lines.append(f"Content-Length: {response.content_length}")
        if response.last_modified is not None:
            lines.append(f"Last-Modified: {response.last_modified}")
        if response.chunked:
            lines.append("Transfer-Encoding: chunked")
        lines.append("Connection: keep-alive" if response.keepalive else "Connection: close")
        lines += [f"{k}: {v}" for k, v in response.headers]
        self._out += ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
        if request.method != b"HEAD":
            self._out += response.body


def _expects_continue(request: _Request) -> bool:
    """ngx_http_test_expect, reached when the static module discards a GET/HEAD body."""
    expect = request.headers.get("expect")
    return request.version >= 1001 and expect is not None and expect.lower() == b"100-continue"


class _ChunkedDiscard:
    """Reads and drops a chunked request body (after ngx_http_parse_chunked)."""

    _SIZE = re.compile(rb"([0-9A-Fa-f]{1,15})[ \t]*(?:;[^\r\n]*)?\r?\n")

    def __init__(self) -> None:
        self._left = 0  # bytes left of the current chunk, its CRLF included
        self._trailers = False

    def feed(self, buf: bytearray) -> tuple[int, bool]:
        """How many bytes of `buf` belonged to the body, and whether it is over."""
        pos = 0
        while True:
            if self._left:
                take = min(self._left, len(buf) - pos)
                pos += take
                self._left -= take
                if self._left:
                    return pos, False
            if self._trailers:
                end = buf.find(b"\n", pos)
                if end < 0:
                    return pos, False
                line = bytes(buf[pos:end]).rstrip(b"\r")
                pos = end + 1
                if not line:
                    return pos, True
                continue
            match = self._SIZE.match(buf, pos)
            if match is None:
                if buf.find(b"\n", pos) >= 0 or len(buf) - pos > 4096:
                    raise _BadRequest(400)
                return pos, False
            pos = match.end()
            size = int(match.group(1), 16)
            if size:
                self._left = size + 2
            else:
                self._trailers = True


def _gzip_ok(request: _Request) -> bool:
    """ngx_http_gzip_ok with Debian's defaults (gzip_http_version 1.1, gzip_proxied off)."""
    value = request.headers.get("accept-encoding")
    if value is None or len(value) < 4:
        return False
    if not value.startswith(b"gzip,") and not _accepts_gzip(value):
        return False
    if request.version < 1001:
        return False
    return "via" not in request.headers


def _accepts_gzip(value: bytes) -> bool:
    lowered = value.lower()
    start = 0
    while True:
        at = lowered.find(b"gzip", start)
        if at < 0:
            return False
        if at == 0 or value[at - 1] in b", ":
            break
        start = at + 4
    rest = value[at + 4 :]
    i = 0
    while i < len(rest):
        ch = rest[i]
        i += 1
        if ch == 0x2C:
            return True
        if ch == 0x3B:
            break
        if ch != SP:
            return False
    else:
        return True
    while i < len(rest):  # after ';': optional spaces, then q
        ch = rest[i]
        i += 1
        if ch in b"qQ":
            break
        if ch != SP:
            return False
    else:
        return True
    if i + 2 > len(rest) or rest[i] != 0x3D:
        return False
    return _quantity(rest[i + 1 :]) != 0


def _quantity(q: bytes) -> int:
    """ngx_http_gzip_quantity, quirks included."""
    if not q or q[0] not in b"01":
        return 0
    value = (q[0] - 0x30) * 100
    if len(q) == 1 or q[1] in b", ":
        return value
    if q[1] != 0x2E:
        return 0
    digits = 0
    for ch in q[2:]:
        if ch in b", ":
            break
        if not 0x30 <= ch <= 0x39:
            return 0
        value += ch - 0x30
        digits += 1
    if value > 100 or digits > 3:
        return 0
    return value


def _nginx_gzip(body: bytes) -> bytes:
    """What ngx_http_gzip_filter_module writes for a body it gets in one buffer: level 1, the
    window and hash shrunk to the body's size, its own 10-byte header (XFL 4, OS 3)."""
    wbits, memlevel = 15, 8
    while len(body) < (1 << (wbits - 1)) - 262:
        wbits -= 1
        memlevel -= 1
    memlevel = max(memlevel, 1)
    compressor = zlib.compressobj(1, zlib.DEFLATED, -wbits, memlevel, zlib.Z_DEFAULT_STRATEGY)
    data = compressor.compress(body) + compressor.flush(zlib.Z_FINISH)
    trailer = struct.pack("<II", zlib.crc32(body), len(body) & 0xFFFFFFFF)
    return b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x04\x03" + data + trailer


def _chunk(data: bytes) -> bytes:
    return b"%x\r\n" % len(data) + data + b"\r\n0\r\n\r\n"


def _etag_matches(header: bytes, etag: str, weak: bool) -> bool:
    """ngx_http_test_if_match."""
    if header == b"*":
        return True
    tag = etag.encode()
    start, end = 0, len(header)
    while start < end:
        if weak and end - start > 2 and header[start : start + 2] == b"W/":
            start += 2
        if len(tag) > end - start:
            return False
        if header[start : start + len(tag)] == tag:
            rest = start + len(tag)
            while rest < end and header[rest] in b" \t":
                rest += 1
            if rest == end or header[rest] == 0x2C:
                return True
        while start < end and header[start] != 0x2C:
            start += 1
        while start < end and header[start] in b" \t,":
            start += 1
    return False


_MONTHS = {
    m.encode(): i
    for i, m in enumerate(
        ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"), 1
    )
}
_HTTP_TIME = (
    re.compile(rb"[^,]*, *(\d\d) ([A-Z][a-z][a-z]) (\d{4}) (\d\d):(\d\d):(\d\d)"),  # RFC 1123
    re.compile(rb"[^,]*, *(\d\d)-([A-Z][a-z][a-z])-(\d\d) (\d\d):(\d\d):(\d\d)"),  # RFC 850
    re.compile(rb"[^ ,]* +([A-Z][a-z][a-z]) +(\d\d?) (\d\d):(\d\d):(\d\d) (\d{4})"),  # asctime
)


def _parse_http_time(value: bytes) -> int | None:
    """ngx_parse_http_time for the three HTTP date forms (the zone is not read)."""
    for form, pattern in enumerate(_HTTP_TIME):
        match = pattern.match(value)
        if match is None:
            continue
        groups = match.groups()
        if form == 2:
            month_name, day, hour, minute, second, year = groups
        else:
            day, month_name, year, hour, minute, second = groups
        month = _MONTHS.get(month_name)
        if month is None:
            return None
        y = int(year)
        if form == 1:
            y += 2000 if y < 70 else 1900
        d, h, mi, s = int(day), int(hour), int(minute), int(second)
        if h > 23 or mi > 59 or s > 59 or d < 1 or d > calendar.monthrange(y, month)[1]:
            return None
        return calendar.timegm((y, month, d, h, mi, s, 0, 0, 0))
    return None


def _parse_ranges(spec: bytes, size: int) -> list[tuple[int, int]] | str | None:
    """ngx_http_range_parse: ranges as [start, end); "unsatisfiable"; or None to ignore."""
    ranges: list[tuple[int, int]] = []
    total = 0
    i, n = 0, len(spec)

    def at(k: int) -> int:
        return spec[k] if k < n else 0

    def number() -> int | None:
        nonlocal i
        if not 0x30 <= at(i) <= 0x39:
            return None
        start = i
        while 0x30 <= at(i) <= 0x39:
            i += 1
        value = int(spec[start:i])
        return value if value < (1 << 63) else None

    while True:
        while at(i) == SP:
            i += 1
        if at(i) != 0x2D:
            start = number()
            if start is None:
                return "unsatisfiable"
            while at(i) == SP:
                i += 1
            if at(i) != 0x2D:
                return "unsatisfiable"
            i += 1
            while at(i) == SP:
                i += 1
            if at(i) in (0x2C, 0):
                end = size
            else:
                last = number()
                if last is None:
                    return "unsatisfiable"
                while at(i) == SP:
                    i += 1
                if at(i) not in (0x2C, 0):
                    return "unsatisfiable"
                end = size if last >= size else last + 1
        else:
            i += 1
            suffix = number()
            if suffix is None:
                return "unsatisfiable"
            while at(i) == SP:
                i += 1
            if at(i) not in (0x2C, 0):
                return "unsatisfiable"
            start = size - suffix if suffix < size else 0
            end = size
        if start < end:
            ranges.append((start, end))
            total += end - start
        elif start == 0:
            return None
        if at(i) != 0x2C:
            break
        i += 1
    if not ranges:
        return "unsatisfiable"
    if total > size:
        return None
    return ranges
