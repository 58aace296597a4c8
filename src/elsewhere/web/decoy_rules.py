"""nginx's rules for what a static answer looks like: 100-continue, discarded chunked bodies,
gzip (zlib level 1, one chunk), ETag and If-* dates, Range (206, 416)."""

from __future__ import annotations

import calendar
import re
import struct
import zlib

from elsewhere.web.decoy_request import SP, BadRequest, Request


def expects_continue(request: Request) -> bool:
    """ngx_http_test_expect, reached when the static module discards a GET/HEAD body."""
    expect = request.headers.get("expect")
    return request.version >= 1001 and expect is not None and expect.lower() == b"100-continue"


class ChunkedDiscard:
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
                    raise BadRequest(400)
                return pos, False
            pos = match.end()
            size = int(match.group(1), 16)
            if size:
                self._left = size + 2
            else:
                self._trailers = True


def gzip_ok(request: Request) -> bool:
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


def nginx_gzip(body: bytes) -> bytes:
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


def encode_chunk(data: bytes) -> bytes:
    return b"%x\r\n" % len(data) + data + b"\r\n0\r\n\r\n"


def etag_matches(header: bytes, etag: str, weak: bool) -> bool:
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


def parse_http_time(value: bytes) -> int | None:
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


def parse_ranges(spec: bytes, size: int) -> list[tuple[int, int]] | str | None:
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
