"""The HTTP/1.1 Upgrade handshake (RFC 9110 §7.8, RFC 6455 §4) that opens both the WebSocket
transport and Xray's "httpupgrade" transport, as sans-I/O functions.

Both send the same request: `GET <path> HTTP/1.1` with `Upgrade: websocket`, `Connection:
Upgrade`, a `Sec-WebSocket-Key` and `Sec-WebSocket-Version: 13`; the server answers 101. After
that a WebSocket carries RFC 6455 frames (websocket.py) while httpupgrade carries the raw stream
with no framing at all (Xray transport/internet/httpupgrade). Early data: Xray and sing-box put
the client's first bytes, base64url without padding, in `Sec-WebSocket-Protocol` and the server
echoes that header back; an httpupgrade client instead simply writes its first bytes right after
the request, so whatever follows the request head is already stream data.

The server side is a filter in front of a fallback web server: `parse_request` returns the
request when it is an upgrade to our path (and host), None while the head is incomplete, and
raises ProtocolError for anything else, never consuming a byte, so the adapter can hand all of
them to the fallback.
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Iterable
from dataclasses import dataclass
from urllib.parse import unquote

from cryptography.hazmat.primitives import hashes

from elsewhere.errors import ProtocolError

Buffer = bytes | bytearray | memoryview
Headers = Iterable[tuple[str, str]]

WEBSOCKET_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"  # RFC 6455 §1.3
WEBSOCKET_VERSION = "13"  # RFC 6455 §4.1
KEY_BYTES = 16  # RFC 6455 §4.1: the key is base64 of a 16-byte nonce
# Longest request head we wait for. Go's server (Xray) allows 8 KiB + 4 KiB; room for early data.
MAX_HEAD = 16384
MAX_EARLY_DATA = 8192  # Xray's documented ceiling for ?ed=
HEAD_END = b"\r\n\r\n"
_REQUEST_LINE = re.compile(rb"GET (/[\x21-\x7e]*) HTTP/1\.1")
_STATUS_LINE = re.compile(rb"HTTP/1\.1 101(?: [\x20-\x7e\x80-\xff]*)?")
_HEADER = re.compile(rb"([!#$%&'*+\-.^_`|~0-9A-Za-z]+):[ \t]*(.*?)[ \t]*")
# Xray's server turns standard base64 into the URL alphabet before decoding; so do we.
_TO_URLSAFE = bytes.maketrans(b"+/", b"-_")


def accept_key(key: str) -> str:
    """Sec-WebSocket-Accept for a Sec-WebSocket-Key (RFC 6455 §4.2.2): base64(SHA-1(key+GUID))."""
    digest = hashes.Hash(hashes.SHA1())  # RFC 6455 fixes SHA-1; no secret here
    digest.update(key.encode("ascii") + WEBSOCKET_GUID)
    return base64.b64encode(digest.finalize()).decode("ascii")


@dataclass(frozen=True, slots=True)
class UpgradeRequest:
    """An upgrade request for us. `header_length` bytes were the head: what follows is frames
    (WebSocket) or stream data (httpupgrade). `protocol` is the Sec-WebSocket-Protocol value to
    echo in the 101 (set only when it carried early data, as Xray does)."""

    path: str
    query: str
    host: str
    headers: tuple[tuple[str, str], ...]
    header_length: int
    early_data: bytes = b""
    protocol: str | None = None

    def header(self, name: str) -> str | None:
        """The first value of header `name` (case-insensitive), as Go's Header.Get."""
        return _get(self.headers, name)

    @property
    def websocket_key(self) -> str | None:
        return self.header("Sec-WebSocket-Key")


def parse_request(
    buf: Buffer,
    *,
    path: str,
    host: str | None = None,
    max_early_data: int = MAX_EARLY_DATA,
) -> UpgradeRequest | None:
    """The upgrade request at the start of `buf` if it is one for `path` (and `host`, when given).

    None while the head is incomplete; ProtocolError when it is anything else: another method,
    path or host, no Upgrade/Connection tokens, an oversized head or early data. The WebSocket
    specific checks (key, version) are websocket.parse_handshake's."""
    view = bytes(memoryview(buf)[:MAX_HEAD])
    end = view.find(HEAD_END)
    if end < 0:
        if len(view) >= MAX_HEAD:
            raise ProtocolError("HTTP request head longer than we ever accept")
        first, crlf, _ = view.partition(b"\r\n")
        if not first.startswith(b"GET /"[: len(first)]) or (
            crlf and _REQUEST_LINE.fullmatch(first) is None
        ):
            raise ProtocolError("not an upgrade request: no GET ... HTTP/1.1 line")
        return None
    lines = view[:end].split(b"\r\n")
    line = _REQUEST_LINE.fullmatch(lines[0])
    if line is None:
        raise ProtocolError("not an HTTP/1.1 GET request line")
    raw_path, _, query = line.group(1).decode("ascii").partition("?")
    request_path = unquote(raw_path)
    if request_path != _normalize(path):
        raise ProtocolError("upgrade request for another path")
    headers = tuple(_parse_header(raw) for raw in lines[1:])
    request_host = _get(headers, "Host")
    if request_host is None:
        raise ProtocolError("HTTP/1.1 request without Host")
    if host is not None and _hostname(request_host) != _hostname(host):
        raise ProtocolError("upgrade request for another host")
    if not _has_token(_get(headers, "Upgrade"), "websocket"):
        raise ProtocolError("not an upgrade to websocket")
    if not _has_token(_get(headers, "Connection"), "upgrade"):
        raise ProtocolError("Connection header does not say Upgrade")
    early_data, protocol = _early_data(_get(headers, "Sec-WebSocket-Protocol"))
    if len(early_data) > max_early_data:
        raise ProtocolError(f"{len(early_data)} bytes of early data, more than {max_early_data}")
    return UpgradeRequest(
        request_path, query, request_host, headers, end + len(HEAD_END), early_data, protocol
    )


def upgrade_response(key: str | None = None, extra_headers: Headers = ()) -> bytes:
    """The 101 an httpupgrade server sends; like Xray it proves the key when one was sent, so a
    WebSocket-minded proxy or CDN in between is satisfied too."""
    headers = [("Upgrade", "websocket"), ("Connection", "Upgrade")]
    if key:
        headers.append(("Sec-WebSocket-Accept", accept_key(key)))
    return encode_head("HTTP/1.1 101 Switching Protocols", [*extra_headers, *headers])


def request_head(
    host: str,
    path: str,
    key: str,
    *,
    early_data: bytes = b"",
    headers: Headers = (),
) -> bytes:
    """The client's upgrade request (both transports send this one). `early_data` goes base64url
    in Sec-WebSocket-Protocol; send it only to a WebSocket server that expects it."""
    lines = [("Host", host), *headers]
    lines += [
        ("Upgrade", "websocket"),
        ("Connection", "Upgrade"),
        ("Sec-WebSocket-Key", key),
        ("Sec-WebSocket-Version", WEBSOCKET_VERSION),
    ]
    if early_data:
        encoded = base64.urlsafe_b64encode(early_data).rstrip(b"=").decode("ascii")
        lines.append(("Sec-WebSocket-Protocol", encoded))
    return encode_head(f"GET {_normalize(path)} HTTP/1.1", lines)


@dataclass(frozen=True, slots=True)
class UpgradeResponse:
    headers: tuple[tuple[str, str], ...]
    header_length: int

    def header(self, name: str) -> str | None:
        return _get(self.headers, name)


def parse_response(buf: Buffer) -> UpgradeResponse | None:
    """The server's 101 at the start of `buf`; None while incomplete, ProtocolError if it
    refused (any other status) or is not an upgrade to websocket."""
    view = bytes(memoryview(buf)[:MAX_HEAD])
    end = view.find(HEAD_END)
    if end < 0:
        if len(view) >= MAX_HEAD:
            raise ProtocolError("HTTP response head too long")
        return None
    lines = view[:end].split(b"\r\n")
    if _STATUS_LINE.fullmatch(lines[0]) is None:
        status = lines[0][:40].decode("ascii", "replace")
        raise ProtocolError(f"server refused the upgrade: {status}")
    response = UpgradeResponse(tuple(_parse_header(raw) for raw in lines[1:]), end + 4)
    if not _has_token(response.header("Upgrade"), "websocket"):
        raise ProtocolError("101 without Upgrade: websocket")
    if not _has_token(response.header("Connection"), "upgrade"):
        raise ProtocolError("101 without Connection: Upgrade")
    return response


# private


def _get(headers: tuple[tuple[str, str], ...], name: str) -> str | None:
    name = name.lower()
    return next((v for k, v in headers if k.lower() == name), None)


def _parse_header(raw: bytes) -> tuple[str, str]:
    match = _HEADER.fullmatch(raw)
    if match is None:
        raise ProtocolError("malformed HTTP header line")
    return match.group(1).decode("ascii"), match.group(2).decode("latin-1")


def encode_head(first_line: str, headers: Headers) -> bytes:
    """An HTTP/1.1 message head: start line, headers, blank line."""
    text = first_line + "\r\n" + "".join(f"{k}: {v}\r\n" for k, v in headers) + "\r\n"
    return text.encode("latin-1")


def _normalize(path: str) -> str:
    """Xray's GetNormalizedPath: empty means "/", and a missing leading slash is added."""
    return path if path.startswith("/") else "/" + path


def _hostname(host: str) -> str:
    """The host without a port, lowercased, brackets of an IPv6 literal kept."""
    host = host.strip().lower()
    if host.startswith("["):
        return host[: host.find("]") + 1]
    return host.rpartition(":")[0] if host.count(":") == 1 else host


def _has_token(value: str | None, token: str) -> bool:
    return value is not None and any(t.strip().lower() == token for t in value.split(","))


def _early_data(value: str | None) -> tuple[bytes, str | None]:
    """Xray's reading of Sec-WebSocket-Protocol: early data if it decodes as base64 (either
    alphabet, padding optional) to something non-empty; otherwise an ordinary subprotocol list,
    which we neither use nor echo."""
    if not value:
        return b"", None
    raw = value.strip().encode("latin-1").translate(_TO_URLSAFE).rstrip(b"=")
    try:
        data = base64.b64decode(raw + b"=" * (-len(raw) % 4), altchars=b"-_", validate=True)
    except (binascii.Error, ValueError):
        return b"", None
    return (data, value.strip()) if data else (b"", None)
