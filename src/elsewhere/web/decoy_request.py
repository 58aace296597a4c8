"""The decoy's request parser: nginx 1.22.1's ngx_http_parse_request_line and
ngx_http_parse_header_line state machines, byte for byte (what is refused at once with 400,
what is waited for), with its header buffers, complex URIs and Host validation."""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from elsewhere.web.nginx import HEADER_BUFFER, LARGE_HEADER_BUFFER, LARGE_HEADER_BUFFERS

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


class BadRequest(Exception):
    """The request ends here with nginx's built-in page for `status`. `consumed` is how far
    nginx had read the buffer: bytes past it make it close lingering. None: it always lingers
    (a byte-level parse error leaves at least that byte unread)."""

    def __init__(self, status: int, consumed: int | None = None) -> None:
        super().__init__(status)
        self.status = status
        self.consumed = consumed


@dataclass(slots=True)
class Request:
    method: bytes = b""
    # major * 1000 + minor; 9 for a 0.9 simple request; nginx assumes 1.0 until the line ends
    version: int = 1000
    uri: bytes = b"/"  # decoded path, without arguments
    headers: dict[str, bytes] = field(default_factory=dict)
    connection: str | None = None  # "close" | "keep-alive"
    msie: bool = False
    msie6: bool = False
    chrome: bool = False


class RequestParser:
    """Incremental request-head parser with nginx's states and header buffers."""

    def __init__(self) -> None:
        self.request = Request()
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
        Raises BadRequest."""
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
            raise BadRequest(494) if self.in_headers else BadRequest(414, pos)
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
                    raise BadRequest(400)
                state = L_METHOD
            elif state == L_METHOD:
                run = _METHOD_RUN.match(buf, pos, limit)
                if run:
                    pos = run.end()
                    continue
                if ch != SP:
                    raise BadRequest(400)
                self.request.method = bytes(buf[self.request_start : pos])
                state = L_SPACES_BEFORE_URI
            elif state == L_SPACES_BEFORE_URI:
                if ch == 0x2F:
                    self.uri_start = pos
                    state = L_AFTER_SLASH_IN_URI
                elif 0x61 <= ch | 0x20 <= 0x7A:
                    state = L_SCHEMA
                elif ch != SP:
                    raise BadRequest(400)
            elif state == L_SCHEMA:
                if ch == 0x3A:
                    self.schema_end = pos
                    state = L_SCHEMA_SLASH
                elif not (0x61 <= ch | 0x20 <= 0x7A or 0x30 <= ch <= 0x39 or ch in b"+-."):
                    raise BadRequest(400)
            elif state in (L_SCHEMA_SLASH, L_SCHEMA_SLASH_SLASH):
                if ch != 0x2F:
                    raise BadRequest(400)
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
                    raise BadRequest(400)
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
                        raise BadRequest(400)
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
                        raise BadRequest(400)
                    else:
                        state = L_CHECK_URI
                elif ch == 0x2F:
                    state = L_AFTER_SLASH_IN_URI
                elif ch == 0x2E:
                    pass
                elif ch < 0x20 or ch == 0x7F:
                    raise BadRequest(400)
            elif state == L_HTTP_09:
                if ch in (CR, LF):
                    self.minor = 9
                    if ch == LF:
                        return self._line_done(buf, pos)
                    state = L_ALMOST_DONE
                elif ch == 0x48:  # 'H'
                    state = L_HTTP_H
                elif ch != SP:
                    raise BadRequest(400)
            elif state in (L_HTTP_H, L_HTTP_HT, L_HTTP_HTT, L_HTTP_HTTP):
                if ch != b"TTP/"[state - L_HTTP_H]:
                    raise BadRequest(400)
                state += 1
            elif state == L_FIRST_MAJOR:
                if not 0x31 <= ch <= 0x39:
                    raise BadRequest(400)
                self.major = ch - 0x30
                if self.major > 1:
                    raise BadRequest(505)
                state = L_MAJOR
            elif state == L_MAJOR:
                if ch == 0x2E:
                    state = L_FIRST_MINOR
                elif not 0x30 <= ch <= 0x39:
                    raise BadRequest(400)
                else:
                    self.major = self.major * 10 + ch - 0x30
                    if self.major > 1:
                        raise BadRequest(505)
            elif state == L_FIRST_MINOR:
                if not 0x30 <= ch <= 0x39:
                    raise BadRequest(400)
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
                    raise BadRequest(400)
                else:
                    self.minor = self.minor * 10 + ch - 0x30
            elif state == L_SPACES_AFTER_DIGIT:
                if ch == CR:
                    state = L_ALMOST_DONE
                elif ch == LF:
                    return self._line_done(buf, pos)
                elif ch != SP:
                    raise BadRequest(400)
            elif state == L_ALMOST_DONE:
                if ch != LF:
                    raise BadRequest(400)
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
        raise BadRequest(400)

    def _line_done(self, buf: bytearray, pos: int) -> tuple[int, bool]:
        """The request line is whole: nginx checks the method of a 0.9 request, the URI and a
        host written in the line right away, before any header arrives."""
        request = self.request
        request.version = self.major * 1000 + self.minor
        end = pos + 1
        if request.version == 9 and request.method != b"GET":
            raise BadRequest(400, end)
        # "GET http://host HTTP/1.1" has no path: it means "/"
        raw = b"/" if self.uri_start < 0 else bytes(buf[self.uri_start : self.uri_end])
        if self.complex_uri or self.quoted_uri or self.empty_path:
            request.uri = _complex_uri(raw, self.empty_path, end)
        else:
            request.uri = raw.split(b"?", 1)[0]
        if self.host_start and not _valid_host(bytes(buf[self.host_start : self.host_end])):
            raise BadRequest(400, end)
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
                            raise BadRequest(400)
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
                    raise BadRequest(400)
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
                    raise BadRequest(400)
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
                    raise BadRequest(400)
            elif state == H_ALMOST_DONE:
                if ch == LF:
                    self._header_line(buf, pos + 1)
                    state = H_START
                elif ch != CR:
                    raise BadRequest(400)
            elif state == H_DONE:
                if ch != LF:
                    raise BadRequest(400)
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
                raise BadRequest(400, end)
            headers[name] = value
        elif name == "connection":
            lowered = value.lower()
            if b"close" in lowered:
                request.connection = "close"
            elif b"keep-alive" in lowered:
                request.connection = "keep-alive"
        elif name in _UNIQUE:
            if name in headers:
                raise BadRequest(400, end)
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
    dot segments; cut at '?' and '#'. Raises BadRequest(400, consumed)."""
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
                raise BadRequest(400, consumed)
            if state == quoted_second:
                if ch not in _HEX:
                    raise BadRequest(400, consumed)
                ch = (decoded << 4) + int(chr(ch), 16)
                if ch in (0x25, 0x23, 0x3F):  # a decoded '%', '#' or '?' is plain data
                    out.append(ch)
                    state = usual
                    break
                if ch == 0:
                    raise BadRequest(400, consumed)
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
        raise BadRequest(400, consumed)
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
            raise BadRequest(400, consumed)
        if out[cut] == 0x2F:
            del out[cut + 1 :]
            return
        cut -= 1
