"""WebSocket (RFC 6455) as a byte-stream transport, sans-I/O: the opening handshake with Xray's
early data, and the framing, with ping/pong and close answered by the codec itself.

Frame (§5.2):  FIN RSV1-3 opcode(4) | MASK len(7) | [len 16 or 64 bits] | [mask key(4)] | payload

Client-to-server frames are masked, server-to-client frames are not (§5.1); either side refuses
the other kind. Data frames (binary, text, continuation) are handed on as plain bytes as soon as
any of their payload arrives, so neither a large frame nor a fragmented message is ever buffered
whole: a tunnel needs the bytes, not the message boundaries. Text frames are passed through
unchecked (no UTF-8 validation: our peers send binary, and the bytes are not ours to judge).
"""

from __future__ import annotations

import base64
import binascii
import os
from collections.abc import Callable
from dataclasses import dataclass
from enum import IntEnum

from elsewhere.codecs.http_upgrade import (
    KEY_BYTES,
    MAX_EARLY_DATA,
    WEBSOCKET_VERSION,
    Buffer,
    Headers,
    UpgradeRequest,
    accept_key,
    encode_head,
    parse_request,
    parse_response,
    request_head,
)
from elsewhere.errors import ProtocolError

__all__ = [
    "Close",
    "Data",
    "FrameDecoder",
    "Opcode",
    "Ping",
    "Pong",
    "UpgradeRequest",
    "accept_key",
    "accept_response",
    "apply_mask",
    "apply_mask_python",
    "encode_close",
    "encode_frame",
    "handshake_request",
    "new_key",
    "parse_handshake",
    "parse_handshake_response",
]


class Opcode(IntEnum):
    """§5.2 opcodes; the others are reserved and refused."""

    CONTINUATION = 0x0
    TEXT = 0x1
    BINARY = 0x2
    CLOSE = 0x8
    PING = 0x9
    PONG = 0xA


FIN = 0x80
RSV_BITS = 0x70  # no extension is negotiated, so these must be zero
MASK_BIT = 0x80
LEN_16 = 126
LEN_64 = 127
MAX_CONTROL_PAYLOAD = 125  # §5.5
CLOSE_NORMAL = 1000  # §7.4.1
CLOSE_PROTOCOL_ERROR = 1002
CLOSE_TOO_BIG = 1009
DEFAULT_MAX_FRAME = 1 << 24  # payloads stream through, so this bounds sanity, not memory
_DATA_OPCODES = frozenset((Opcode.CONTINUATION, Opcode.TEXT, Opcode.BINARY))
_OPCODES = frozenset(Opcode)
# The pure-Python masking XORs whole chunks as Python ints. Past ~16 KiB the int conversions fall
# out of cache and slow to a third, so long payloads go through in chunks of this size (measured:
# ~1 GB/s). It is the fallback where the `websockets` package has no compiled speedups.
MASK_CHUNK = 8192


# handshake


def new_key() -> str:
    """A fresh Sec-WebSocket-Key: base64 of 16 random bytes (§4.1)."""
    return base64.b64encode(os.urandom(KEY_BYTES)).decode("ascii")


def handshake_request(
    host: str, path: str, key: str, early_data: bytes = b"", headers: Headers = ()
) -> bytes:
    """The client's opening handshake, early data in Sec-WebSocket-Protocol (Xray's form)."""
    return request_head(host, path, key, early_data=early_data, headers=headers)


def parse_handshake(
    buf: Buffer, *, path: str, host: str | None = None, max_early_data: int = MAX_EARLY_DATA
) -> UpgradeRequest | None:
    """The client's opening handshake at the start of `buf`, if it is one for our path and host.

    None while incomplete; ProtocolError for anything else (so the adapter falls back with every
    byte), including a missing or malformed key and any version but 13."""
    request = parse_request(buf, path=path, host=host, max_early_data=max_early_data)
    if request is None:
        return None
    if request.header("Sec-WebSocket-Version") != WEBSOCKET_VERSION:
        raise ProtocolError("WebSocket version other than 13")
    key = request.websocket_key or ""
    try:
        nonce = base64.b64decode(key, validate=True)
    except (binascii.Error, ValueError):
        nonce = b""
    if len(nonce) != KEY_BYTES:
        raise ProtocolError("Sec-WebSocket-Key is not base64 of 16 bytes")
    return request


def accept_response(key: str, protocol: str | None = None, extra_headers: Headers = ()) -> bytes:
    """The server's 101 (§4.2.2). Pass `protocol` = the request's `protocol` so that early data
    is acknowledged the way Xray clients (and browsers) expect."""
    headers = [
        *extra_headers,
        ("Upgrade", "websocket"),
        ("Connection", "Upgrade"),
        ("Sec-WebSocket-Accept", accept_key(key)),
    ]
    if protocol:
        headers.append(("Sec-WebSocket-Protocol", protocol))
    return encode_head("HTTP/1.1 101 Switching Protocols", headers)


def parse_handshake_response(buf: Buffer, key: str) -> int | None:
    """Length of the server's 101 at the start of `buf`, None while incomplete; ProtocolError
    if the server refused or did not prove it read our key."""
    response = parse_response(buf)
    if response is None:
        return None
    if response.header("Sec-WebSocket-Accept") != accept_key(key):
        raise ProtocolError("Sec-WebSocket-Accept does not match our key")
    return response.header_length


# frames


def apply_mask_python(data: Buffer, key: bytes) -> bytes:
    """XOR `data` with the 4-byte `key` repeated (§5.3), whole chunks at a time."""
    n = len(data)
    if n <= MASK_CHUNK:
        pattern = (key * ((n >> 2) + 1))[:n]
        return (int.from_bytes(data, "little") ^ int.from_bytes(pattern, "little")).to_bytes(
            n, "little"
        )
    view = memoryview(data)
    key_int = int.from_bytes(key * (MASK_CHUNK >> 2), "little")
    whole = n - n % MASK_CHUNK
    chunks = [
        (int.from_bytes(view[i : i + MASK_CHUNK], "little") ^ key_int).to_bytes(
            MASK_CHUNK, "little"
        )
        for i in range(0, whole, MASK_CHUNK)
    ]
    if whole < n:  # the tail starts on a multiple of 4, so the key phase is unchanged
        chunks.append(apply_mask_python(view[whole:], key))
    return b"".join(chunks)


try:
    # websockets' C routine (SIMD, measured 61 GB/s here against 1 GB/s for the ints above):
    # masking is two passes over every uploaded byte (client masks, server unmasks), and at
    # 1 GB/s per pass it was what held WebSocket uploads under trojan-gfw's raw TLS.
    from websockets.speedups import apply_mask as _compiled_mask
except ImportError:  # a platform with no compiled wheel: correct, only slower
    _apply_mask_c: Callable[[Buffer, bytes], bytes] | None = None
else:
    _apply_mask_c = _compiled_mask


def apply_mask(data: Buffer, key: bytes) -> bytes:
    """XOR `data` with the 4-byte `key` repeated (§5.3): the masking of every client frame."""
    if _apply_mask_c is None:
        return apply_mask_python(data, key)
    return _apply_mask_c(data, key)


def encode_frame(
    payload: Buffer,
    *,
    mask: bool,
    opcode: Opcode = Opcode.BINARY,
    fin: bool = True,
    mask_key: bytes | None = None,
) -> bytes:
    """One frame. A client sets `mask` (the key is random unless given, as §5.3 requires); a
    server does not."""
    n = len(payload)
    first = (FIN if fin else 0) | opcode
    flag = MASK_BIT if mask else 0
    if n < LEN_16:
        head = bytes((first, flag | n))
    elif n <= 0xFFFF:
        head = bytes((first, flag | LEN_16)) + n.to_bytes(2, "big")
    else:
        head = bytes((first, flag | LEN_64)) + n.to_bytes(8, "big")
    if not mask:
        return head + payload
    key = os.urandom(4) if mask_key is None else mask_key
    return head + key + apply_mask(payload, key)


def encode_close(code: int | None = CLOSE_NORMAL, reason: str = "", *, mask: bool) -> bytes:
    """A Close frame (§5.5.1): status code and UTF-8 reason, or an empty body."""
    body = b"" if code is None else code.to_bytes(2, "big") + reason.encode()[:123]
    return encode_frame(body, mask=mask, opcode=Opcode.CLOSE)


@dataclass(frozen=True, slots=True)
class Data:
    """Payload bytes of a data frame (any part of it; message boundaries are not kept)."""

    payload: bytes


@dataclass(frozen=True, slots=True)
class Ping:
    payload: bytes


@dataclass(frozen=True, slots=True)
class Pong:
    payload: bytes


@dataclass(frozen=True, slots=True)
class Close:
    """The peer's Close: code None when it sent no status (1005 in §7.1.5's terms)."""

    code: int | None
    reason: str


Event = Data | Ping | Pong | Close


class FrameDecoder:
    """One side's receiving half, with the replies the protocol owes the peer.

    `client=True` on the client side: frames must arrive unmasked and our replies are masked;
    the server side is the reverse. feed() bytes, call next_event() until None, and send what
    data_to_send() returns (a Pong for each Ping, a Close answering the peer's). ProtocolError
    on a frame that breaks §5; the adapter then sends encode_close(CLOSE_PROTOCOL_ERROR) and
    drops the connection."""

    def __init__(self, *, client: bool, max_frame_size: int = DEFAULT_MAX_FRAME) -> None:
        self._client = client
        self._max_frame = max_frame_size
        self._buf = bytearray()
        self._out = bytearray()
        self._fragmented = False  # inside a message whose last frame had FIN = 0
        # The data frame whose payload is still arriving: bytes left, mask key, bytes done.
        self._remaining = 0
        self._key: bytes | None = None
        self._done = 0
        self.close_received = False
        self.close_sent = False

    @property
    def closed(self) -> bool:
        """Both Close frames have been exchanged (or queued): the connection may be dropped
        once data_to_send() is written."""
        return self.close_received and self.close_sent

    def feed(self, data: Buffer) -> None:
        if not self.close_received:  # §5.5.1: nothing after a Close counts
            self._buf += data

    def data_to_send(self) -> bytes:
        out = bytes(self._out)
        self._out.clear()
        return out

    def close(self, code: int | None = CLOSE_NORMAL, reason: str = "") -> None:
        """Start the closing handshake (queue our Close)."""
        if not self.close_sent:
            self.close_sent = True
            self._out += encode_close(code, reason, mask=self._client)

    def next_event(self) -> Event | None:
        while True:
            if self._remaining:
                return self._payload()
            if self.close_received:
                return None
            header = self._parse_header()
            if header is None:
                return None
            opcode, fin, length, key, size = header
            if opcode in _DATA_OPCODES:
                del self._buf[:size]
                self._remaining, self._key, self._done = length, key, 0
                self._fragmented = not fin
                if length:
                    return self._payload()
                continue  # an empty data frame carries nothing to hand on
            if len(self._buf) < size + length:
                return None
            body = bytes(self._buf[size : size + length])
            del self._buf[: size + length]
            if key is not None:
                body = apply_mask(body, key)
            return self._control(opcode, body)

    # private

    def _parse_header(self) -> tuple[Opcode, bool, int, bytes | None, int] | None:
        buf = self._buf
        if len(buf) < 2:
            return None
        first, second = buf[0], buf[1]
        if first & RSV_BITS:
            raise ProtocolError("WebSocket frame with reserved bits set, no extension agreed")
        if first & 0x0F not in _OPCODES:
            raise ProtocolError(f"WebSocket frame with reserved opcode {first & 0x0F:#x}")
        opcode = Opcode(first & 0x0F)
        fin = bool(first & FIN)
        masked = bool(second & MASK_BIT)
        if masked == self._client:
            side = "server sent a masked" if self._client else "client sent an unmasked"
            raise ProtocolError(f"WebSocket {side} frame (RFC 6455 §5.1)")
        length = second & 0x7F
        size = 2
        if length == LEN_16:
            size = 4
        elif length == LEN_64:
            size = 10
        if len(buf) < size:
            return None
        if size == 4:
            length = int.from_bytes(buf[2:4], "big")
        elif size == 10:
            length = int.from_bytes(buf[2:10], "big")
            if length >> 63:
                raise ProtocolError("WebSocket frame length with its top bit set")
        if opcode not in _DATA_OPCODES:
            if not fin or length > MAX_CONTROL_PAYLOAD:
                raise ProtocolError("WebSocket control frame fragmented or over 125 bytes")
        elif length > self._max_frame:
            raise ProtocolError(f"WebSocket frame of {length} bytes, over {self._max_frame}")
        elif opcode == Opcode.CONTINUATION and not self._fragmented:
            raise ProtocolError("WebSocket continuation frame with no message to continue")
        elif opcode != Opcode.CONTINUATION and self._fragmented:
            raise ProtocolError("WebSocket data frame inside an unfinished fragmented message")
        key = None
        if masked:
            if len(buf) < size + 4:
                return None
            key = bytes(buf[size : size + 4])
            size += 4
        return opcode, fin, length, key, size

    def _payload(self) -> Data | None:
        take = min(self._remaining, len(self._buf))
        if take == 0:
            return None
        with memoryview(self._buf) as view:  # released before the buffer is resized
            if self._key is None:
                chunk = bytes(view[:take])
            else:
                phase = self._done & 3
                chunk = apply_mask(view[:take], self._key[phase:] + self._key[:phase])
        del self._buf[:take]
        self._remaining -= take
        self._done += take
        return Data(chunk)

    def _control(self, opcode: Opcode, body: bytes) -> Event:
        if opcode == Opcode.PING:
            if not self.close_sent:
                self._out += encode_frame(body, mask=self._client, opcode=Opcode.PONG)
            return Ping(body)
        if opcode == Opcode.PONG:
            return Pong(body)
        if len(body) == 1:
            raise ProtocolError("WebSocket Close with a one-byte body")
        code = int.from_bytes(body[:2], "big") if body else None
        self.close_received = True
        self._buf.clear()
        self.close(code)  # §5.5.1: answer with a Close, echoing the status
        return Close(code, body[2:].decode("utf-8", "replace"))
