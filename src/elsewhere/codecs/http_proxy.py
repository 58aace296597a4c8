"""The HTTP proxy request head as a sans-I/O codec: CONNECT tunnels (RFC 9110 §9.3.6) and
absolute-form requests rewritten for the origin (RFC 9112 §3.2, RFC 9110 §7.6.1), with Basic
proxy authentication (RFC 9110 §11.7, RFC 7617). Only the head is parsed: the body, or the tunnel,
passes through unchanged after it."""

from __future__ import annotations

import base64
import binascii
import hmac
import ipaddress
import re
from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from enum import Enum, auto
from http import HTTPStatus

from elsewhere.session import Destination

MAX_HEAD = 64 * 1024  # larger heads get 431 (RFC 6585 §5)
DEFAULT_PORT = 80
REALM = "elsewhere"
CONNECT_ESTABLISHED = b"HTTP/1.1 200 Connection established\r\n\r\n"

# RFC 9110 §5.6.2 token; §5.5 field-value: VCHAR, obs-text, SP and HTAB (never CR, LF or NUL).
_TOKEN = rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]+"
_REQUEST_LINE = re.compile(rb"(" + _TOKEN + rb") ([\x21-\x7e]+) HTTP/([0-9])\.([0-9])")
_FIELD_LINE = re.compile(rb"(" + _TOKEN + rb"):([\t\x20-\x7e\x80-\xff]*)")
# absolute-URI with an authority (RFC 3986 §3); a fragment is never part of a request-target.
_ABSOLUTE_URI = re.compile(rb"([A-Za-z][A-Za-z0-9+.\-]*)://([^/?#]*)([^#]*)")
# RFC 3986 §3.2.2 host, narrowed to what can name a destination: an IP literal in brackets, or
# a reg-name of unreserved characters (no percent-encoding, no IPvFuture, no zone ids).
_AUTHORITY = re.compile(rb"(?:\[([0-9A-Fa-f:.]+)\]|([A-Za-z0-9\-._~]+))(?::([0-9]*))?")
_LEADING_EMPTY_LINES = re.compile(rb"(?:\r\n)*")

# RFC 9110 §7.6.1: fields that only describe this hop, removed before forwarding.
_HOP_BY_HOP = frozenset({b"connection", b"proxy-connection", b"keep-alive", b"te", b"upgrade"})
# Credentials for us, never for the origin (RFC 9110 §11.7.2).
_FOR_THE_PROXY = frozenset({b"proxy-authorization"})
# Framing of the body, which we pass through byte for byte: a Connection option naming these
# must not change how the origin delimits it (that would be request smuggling).
_FRAMING = frozenset({b"host", b"content-length", b"transfer-encoding"})


@dataclass(frozen=True, slots=True)
class Connect:
    """`CONNECT host:port`: open a tunnel, then send CONNECT_ESTABLISHED (or an error)."""

    destination: Destination
    username: str | None = None


@dataclass(frozen=True, slots=True)
class Forward:
    """An absolute-form request: send `head` (origin-form, hop-by-hop fields removed,
    `Connection: close`) to `destination`, then relay `trailing()` and the rest both ways."""

    destination: Destination
    head: bytes
    username: str | None = None


@dataclass(frozen=True, slots=True)
class Failed:
    """The request cannot be served: send `response`, then close."""

    reason: str
    response: bytes


Event = Connect | Forward | Failed


def error_response(
    status: int, reason: str | None = None, headers: Sequence[tuple[str, str]] = ()
) -> bytes:
    """A complete response that closes the connection, with a short text body. `reason` is the
    reason phrase (the standard one by default); nothing the client sent is echoed."""
    phrase = reason if reason is not None else HTTPStatus(status).phrase
    body = f"{status} {phrase}\n".encode()
    lines = [
        f"HTTP/1.1 {status} {phrase}",
        "Content-Type: text/plain; charset=utf-8",
        f"Content-Length: {len(body)}",
        "Connection: close",
        *(f"{name}: {value}" for name, value in headers),
    ]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


class _Reject(Exception):
    """Internal: the head is refused with this status."""

    def __init__(self, status: int, reason: str, headers: Sequence[tuple[str, str]] = ()) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason
        self.headers = headers


class _State(Enum):
    HEAD = auto()
    DONE = auto()
    FAILED = auto()


@dataclass(frozen=True, slots=True)
class _Field:
    name: bytes  # lower-cased
    value: bytes  # without surrounding whitespace
    line: bytes  # as received


class HttpProxyServer:
    """The server side of one HTTP proxy connection, up to the end of the first request head.

    With `users`, every request needs `Proxy-Authorization: Basic` for one of them (else 407).
    `feed()` bytes, then `next_event()` yields one Connect, Forward or Failed; `trailing()` holds
    the bytes after the head (request body or tunnel data). Because each Forward says
    `Connection: close`, a request for another host comes on a new connection."""

    def __init__(self, users: Mapping[str, str] | None = None) -> None:
        self._users = dict(users) if users is not None else None
        self._state = _State.HEAD
        self._buffer = bytearray()
        self._scanned = 0  # the head's end is not before this offset
        self._events: deque[Event] = deque()

    # public API

    def feed(self, data: bytes) -> None:
        if self._state is _State.FAILED:
            return
        self._buffer += data
        if self._state is _State.HEAD:
            self._parse_head()

    def next_event(self) -> Event | None:
        return self._events.popleft() if self._events else None

    def trailing(self) -> bytes:
        """Bytes after the head, to relay to the destination; taken once."""
        if self._state is not _State.DONE:
            return b""
        data = bytes(self._buffer)
        self._buffer.clear()
        return data

    # private

    def _parse_head(self) -> None:
        buf = self._buffer
        if self._scanned == 0:
            # RFC 9112 §2.2: a server SHOULD ignore empty lines before the request-line.
            skip = _LEADING_EMPTY_LINES.match(buf)
            if skip is not None and skip.end():
                del buf[: skip.end()]
            if buf in (b"", b"\r"):
                return
        end = buf.find(b"\r\n\r\n", self._scanned)
        if end < 0:
            if len(buf) > MAX_HEAD:
                self._fail(431, "request head is larger than 64 KiB")
            else:
                self._scanned = max(1, len(buf) - 3)
            return
        if end + 4 > MAX_HEAD:
            self._fail(431, "request head is larger than 64 KiB")
            return
        head = bytes(buf[:end])
        del buf[: end + 4]
        try:
            event = self._parse(head)
        except _Reject as reject:
            self._fail(reject.status, reject.reason, reject.headers)
            return
        self._events.append(event)
        self._state = _State.DONE

    def _fail(self, status: int, reason: str, headers: Sequence[tuple[str, str]] = ()) -> None:
        self._events.append(Failed(reason, error_response(status, headers=headers)))
        self._state = _State.FAILED
        self._buffer.clear()

    def _parse(self, head: bytes) -> Event:
        lines = head.split(b"\r\n")
        request = _REQUEST_LINE.fullmatch(lines[0])
        if request is None:
            raise _Reject(400, "malformed request line")
        method, target, major, minor = request.groups()
        if major != b"1":
            raise _Reject(505, f"HTTP/{major.decode()}.{minor.decode()} is not supported")
        # RFC 9110 §2.5: a higher minor version is handled as the highest we implement.
        version = b"HTTP/1.0" if minor == b"0" else b"HTTP/1.1"
        fields = [_parse_field(line) for line in lines[1:]]
        username = self._authenticate(fields)
        if method == b"CONNECT":
            # RFC 9110 §9.3.6: authority-form, and the port is required.
            return Connect(_parse_authority(target, default_port=None), username)
        destination, authority, origin_target = _parse_absolute_form(method, target)
        _check_framing(fields, version)
        request_line = b"%s %s %s" % (method, origin_target, version)
        return Forward(destination, _rewrite(request_line, authority, fields), username)

    def _authenticate(self, fields: list[_Field]) -> str | None:
        if self._users is None:
            return None
        challenge = (("Proxy-Authenticate", f'Basic realm="{REALM}"'),)
        credentials = [f.value for f in fields if f.name == b"proxy-authorization"]
        if len(credentials) != 1:
            raise _Reject(407, "proxy credentials missing", challenge)
        scheme, _, token = credentials[0].partition(b" ")
        if scheme.lower() != b"basic":
            raise _Reject(407, "proxy credentials are not Basic", challenge)
        try:
            # RFC 7617 §2: user-id ":" password, base64; UTF-8 is what clients send today.
            decoded = base64.b64decode(token.strip(b" "), validate=True).decode()
        except (binascii.Error, UnicodeDecodeError):
            raise _Reject(407, "proxy credentials are not valid base64", challenge) from None
        username, colon, password = decoded.partition(":")
        expected = self._users.get(username)
        # Compare even for unknown users so timing does not reveal which names exist.
        same = hmac.compare_digest((expected or "\0").encode(), password.encode())
        if not colon or expected is None or not same:
            raise _Reject(407, "wrong proxy username or password", challenge)
        return username


def _parse_field(line: bytes) -> _Field:
    if line[:1] in (b" ", b"\t"):
        # RFC 9112 §5.2: obs-fold in a request is rejected with 400.
        raise _Reject(400, "obsolete line folding in a header field")
    match = _FIELD_LINE.fullmatch(line)
    if match is None:
        # Also catches whitespace before the colon (RFC 9112 §5.1) and CR, LF or NUL in values.
        raise _Reject(400, "malformed header field")
    return _Field(match[1].lower(), match[2].strip(b" \t"), line)


def _parse_authority(authority: bytes, default_port: int | None) -> Destination:
    if b"@" in authority:
        # RFC 9110 §4.2.4: userinfo in an http URI is treated as an error.
        raise _Reject(400, "userinfo in the request-target")
    match = _AUTHORITY.fullmatch(authority)
    if match is None:
        raise _Reject(400, "malformed host in the request-target")
    literal, name, port_text = match.groups()
    if literal is not None:
        try:
            host = str(ipaddress.IPv6Address(literal.decode()))
        except ValueError:
            raise _Reject(400, "malformed IPv6 address in the request-target") from None
    else:
        host = name.decode()
    if not port_text:
        if default_port is None:
            raise _Reject(400, "CONNECT target has no port")
        return Destination(host, default_port)
    port = int(port_text) if len(port_text) <= 5 else 0
    if not 0 < port <= 0xFFFF:
        raise _Reject(400, "port out of range in the request-target")
    return Destination(host, port)


def _parse_absolute_form(method: bytes, target: bytes) -> tuple[Destination, bytes, bytes]:
    """Destination, authority (for Host) and origin-form target of an absolute-form request."""
    if target.startswith(b"/") or target == b"*":
        raise _Reject(400, "not a proxy request: the request-target is not an absolute URI")
    match = _ABSOLUTE_URI.fullmatch(target)
    if match is None:
        raise _Reject(400, "malformed absolute URI")
    scheme, authority, rest = match.groups()
    scheme = scheme.lower()
    if scheme == b"https":
        raise _Reject(400, "https URIs must be tunnelled with CONNECT")
    if scheme != b"http":
        raise _Reject(400, f"scheme {scheme.decode()!r} is not supported")
    destination = _parse_authority(authority, DEFAULT_PORT)
    if not rest:
        # RFC 9112 §3.2.4: an empty path is "*" for OPTIONS and "/" otherwise.
        origin = b"*" if method == b"OPTIONS" else b"/"
    elif rest.startswith(b"?"):
        origin = b"/" + rest
    else:
        origin = rest
    return destination, authority, origin


def _tokens(fields: list[_Field], name: bytes) -> list[bytes]:
    """The comma-separated list values of every `name` field, lower-cased (RFC 9110 §5.6.1)."""
    found = (t.strip(b" \t").lower() for f in fields if f.name == name for t in f.value.split(b","))
    return [t for t in found if t]


def _check_framing(fields: list[_Field], version: bytes) -> None:
    """Refuse heads whose body length an origin could read differently from us (RFC 9112 §6)."""
    if sum(f.name == b"host" for f in fields) > 1:
        raise _Reject(400, "more than one Host field")  # RFC 9112 §3.2
    lengths = set(_tokens(fields, b"content-length"))
    codings = _tokens(fields, b"transfer-encoding")
    if codings:
        if lengths:
            raise _Reject(400, "both Transfer-Encoding and Content-Length")  # §6.1
        if version == b"HTTP/1.0":
            raise _Reject(400, "Transfer-Encoding in an HTTP/1.0 request")  # §6.1
        if codings[-1] != b"chunked":
            raise _Reject(400, "chunked is not the final transfer coding")  # §6.3
    if len(lengths) > 1 or any(not value.isdigit() for value in lengths):
        raise _Reject(400, "invalid Content-Length")  # §6.3


def _rewrite(request_line: bytes, authority: bytes, fields: list[_Field]) -> bytes:
    """The head for the origin (RFC 9110 §7.6.1, RFC 9112 §3.2.2): Host from the URI in place
    of the received one, connection-specific fields removed, `Connection: close`. No Via: the
    origin has no business knowing a proxy is in the path."""
    options = set(_tokens(fields, b"connection"))
    upgrades = {t.partition(b"/")[0] for t in _tokens(fields, b"upgrade")}
    # A WebSocket handshake keeps its Upgrade; the client closes if the origin declines it.
    websocket = b"upgrade" in options and b"websocket" in upgrades
    drop = _HOP_BY_HOP | _FOR_THE_PROXY | (options - _FRAMING)
    if websocket:
        drop -= {b"upgrade"}
    host = b"Host: " + authority
    out = [request_line]
    for field in fields:
        if field.name == b"host":
            if host:
                out.append(host)
                host = b""
        elif field.name not in drop:
            out.append(field.line)
    if host:
        # RFC 9110 §7.2: a client SHOULD send Host first; we add it when the client did not.
        out.insert(1, host)
    out.append(b"Connection: Upgrade" if websocket else b"Connection: close")
    return b"\r\n".join(out) + b"\r\n\r\n"
