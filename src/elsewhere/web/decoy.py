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

from dataclasses import dataclass

from elsewhere.web.decoy_content import DecoyContent, StaticFile, default_content, http_date
from elsewhere.web.decoy_request import BadRequest, Request, RequestParser
from elsewhere.web.decoy_rules import (
    ChunkedDiscard,
    encode_chunk,
    etag_matches,
    expects_continue,
    gzip_ok,
    nginx_gzip,
    parse_http_time,
    parse_ranges,
)
from elsewhere.web.nginx import (
    AS_400,
    CLIENT_HEADER_TIMEOUT,
    CLIENT_MAX_BODY_SIZE,
    GZIP_MIN_LENGTH,
    GZIP_TYPES,
    KEEPALIVE_REQUESTS,
    KEEPALIVE_TIMEOUT,
    LINGERING_TIME,
    LINGERING_TIMEOUT,
    MSIE_PADDING,
    REASONS,
    SERVER,
    error_body,
)

Buffer = bytes | bytearray | memoryview

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
        self._parser: RequestParser | None = RequestParser()
        self._pos = 0  # how far the parser has read _buf
        self._requests = 0
        self._body_left = 0
        self._chunked: ChunkedDiscard | None = None
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
                except BadRequest:
                    self._finish(linger=False)  # a broken chunked body ends the connection
                    return
                if self._after_body == "keepalive":
                    # what follows a body nginx read from the socket is still in the socket,
                    # not in its header buffer: no pipelined request
                    self._next_request(pipelined=self._body_with_head)
                    continue
                # A body read from the socket ends with a read that filled what was asked
                # for (no more than the body's rest): nginx lingers (see RequestParser.filled).
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
            except BadRequest as error:
                self._filled = parser.filled(len(self._buf))
                self._fail(error, parser.request)
                return
            if not done:
                return
            self._filled = parser.filled(len(self._buf))
            self._body_with_head = True
            self._respond(parser.request)

    def _respond(self, request: Request) -> None:
        self._requests += 1
        self._header_deadline = None
        self._parser = None
        del self._buf[: self._pos]
        self._pos = 0
        try:
            response = self._handle(request)
        except BadRequest as error:
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

    def _fail(self, error: BadRequest, request: Request) -> None:
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
        self._parser = RequestParser()
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

    def _handle(self, request: Request) -> _Response:
        if request.version == 9:
            if self._plain_on_https_port:
                raise BadRequest(497, 0)  # a 0.9 request skips the head's checks
            return self._location(request, keepalive=False)
        headers = request.headers
        if "host" not in headers and request.version > 1000:
            raise BadRequest(400, 0)
        length = -1
        if "content-length" in headers:
            raw = headers["content-length"]
            if not raw.isdigit() or int(raw) >= 1 << 63:
                raise BadRequest(400, 0)
            length = int(raw)
        # From here an error page is followed by reading the body nginx was promised.
        self._body_left = max(length, 0)
        if "transfer-encoding" in headers:
            if request.version < 1001:
                raise BadRequest(400, 0)
            if headers["transfer-encoding"].lower() != b"chunked":
                raise BadRequest(501, 0)
            if length >= 0:
                raise BadRequest(400, 0)
            self._chunked = ChunkedDiscard()
        if request.method == b"TRACE":
            raise BadRequest(405, 0)
        # ngx_http_process_request: after the head's checks, before the 413 and the location
        if self._plain_on_https_port:
            raise BadRequest(497, 0)
        if request.connection is None:
            keepalive = request.version > 1000
        else:
            keepalive = request.connection == "keep-alive"
        if self._requests >= KEEPALIVE_REQUESTS or (request.msie6 and request.method == b"POST"):
            keepalive = False
        if length > CLIENT_MAX_BODY_SIZE:
            return self._special(413, request, keepalive=False)
        return self._location(request, keepalive)

    def _location(self, request: Request, keepalive: bool) -> _Response:
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
        response.continue_first = expects_continue(request)
        return response

    # private: the static module and the header filters

    def _file(self, file: StaticFile, request: Request, status: int, keepalive: bool) -> _Response:
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
                since = parse_http_time(headers["if-unmodified-since"])
                if since is None or since < file.mtime:
                    return self._precondition_failed(request, keepalive)
            if "if-match" in headers and not etag_matches(headers["if-match"], file.etag, False):
                return self._precondition_failed(request, keepalive)
            ims, inm = headers.get("if-modified-since"), headers.get("if-none-match")
            if (ims is not None or inm is not None) and (
                (ims is None or parse_http_time(ims) == file.mtime)
                and (inm is None or etag_matches(inm, file.etag, True))
            ):
                return _Response(304, extra, last_modified=file.last_modified, keepalive=keepalive)
        if (  # ngx_http_gzip_header_filter (which, in 1.22, does not skip HEAD)
            status in (200, 403, 404)
            and file.content_type in GZIP_TYPES
            and len(file.body) >= GZIP_MIN_LENGTH
            and gzip_ok(request)
        ):
            response.body = encode_chunk(nginx_gzip(file.body))
            response.content_length = None
            response.chunked = request.method != b"HEAD"  # the chunked filter skips HEAD
            extra[0] = ("ETag", "W/" + file.etag)
            extra.append(("Content-Encoding", "gzip"))
        elif status == 200 and request.version >= 1000:  # ngx_http_range_header_filter
            ranged = self._ranges(file, request, response)
            if ranged is not None:
                return ranged
        return response

    def _precondition_failed(self, request: Request, keepalive: bool) -> _Response:
        response = self._special(412, request, keepalive=keepalive)
        response.close_after = True  # ngx_http_filter_finalize_request closes after it
        return response

    def _ranges(self, file: StaticFile, request: Request, response: _Response) -> _Response | None:
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
                fresh = parse_http_time(if_range) == file.mtime
            if not fresh:
                response.headers.append(("Accept-Ranges", "bytes"))
                return None
        size = len(file.body)
        parsed = parse_ranges(value[6:], size)
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

    def _special(self, status: int, request: Request, *, keepalive: bool) -> _Response:
        """ngx_http_special_response_handler: nginx's built-in page for `status`."""
        if status in (400, 413, 414, 494, 497, 501):
            keepalive = False
        body = error_body(status)
        if (request.msie or request.chrome) and request.version >= 1000 and status >= 400:
            body += MSIE_PADDING
        return _Response(
            status,
            [],
            body,
            content_type="text/html",
            content_length=len(body),
            keepalive=keepalive,
        )

    def _send(self, response: _Response, request: Request) -> None:
        if response.continue_first:
            self._out += b"HTTP/1.1 100 Continue\r\n\r\n"
        if request.version < 1000:  # a 0.9 answer is the body alone
            self._out += response.body
            return
        lines = [
            f"HTTP/1.1 {400 if response.status in AS_400 else response.status} "
            f"{REASONS[response.status]}",
            f"Server: {SERVER}",
            f"Date: {http_date(self._now)}",
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
