"""The TLS ClientHello (RFC 8446 §4.1.2; extensions RFC 6066 SNI, RFC 7301 ALPN, RFC 8446 §4.2.8
key_share) read from the first bytes of a client's stream: what a censor fingerprints, what the
REALITY server authenticates and what our TLS 1.3 server answers. Sans-I/O: reassembled stream
bytes in, a ClientHello out. One parser for the lab and the servers."""

from __future__ import annotations

import struct
from dataclasses import dataclass

from elsewhere.codecs.address import NeedMoreData
from elsewhere.errors import ProtocolError

RECORD_HEADER = struct.Struct("!BHH")  # content type, legacy version, length
CONTENT_HANDSHAKE = 0x16
HANDSHAKE_CLIENT_HELLO = 0x01
HANDSHAKE_SERVER_HELLO = 0x02
MAX_RECORD = 1 << 14  # RFC 8446 §5.1: a plaintext fragment is at most 2^14 bytes
MAX_HELLO = 1 << 16  # larger than any browser's (ML-KEM shares make Chrome's ~1.8 KB)
SESSION_ID_OFFSET = 39  # type(1) length(3) legacy_version(2) random(32) session_id length(1)

EXT_SERVER_NAME = 0x0000
EXT_SUPPORTED_GROUPS = 0x000A
EXT_EC_POINT_FORMATS = 0x000B
EXT_SIGNATURE_ALGORITHMS = 0x000D
EXT_ALPN = 0x0010
EXT_PRE_SHARED_KEY = 0x0029
EXT_EARLY_DATA = 0x002A
EXT_SUPPORTED_VERSIONS = 0x002B
EXT_PSK_KEY_EXCHANGE_MODES = 0x002D
EXT_KEY_SHARE = 0x0033
SNI_HOST_NAME = 0

TLS13 = 0x0304
TLS12 = 0x0303


def is_grease(value: int) -> bool:
    """RFC 8701 GREASE values: 0x?A?A with both bytes equal."""
    return value & 0x0F0F == 0x0A0A and value >> 8 == value & 0xFF


@dataclass(frozen=True, slots=True)
class ClientHello:
    legacy_version: int
    cipher_suites: tuple[int, ...]
    extensions: tuple[int, ...]  # in wire order
    server_name: str | None
    alpn: tuple[str, ...]
    supported_groups: tuple[int, ...]
    ec_point_formats: tuple[int, ...]
    signature_algorithms: tuple[int, ...]
    supported_versions: tuple[int, ...]
    random: bytes = b""
    session_id: bytes = b""
    compression_methods: bytes = b""
    key_shares: tuple[tuple[int, bytes], ...] = ()  # (group, key_exchange) in wire order
    message: bytes = b""  # the whole handshake message (type, length, body): the transcript's
    consumed: int = 0  # stream bytes its records took (the next record starts here)

    @property
    def offers_tls13(self) -> bool:
        return TLS13 in self.supported_versions

    def key_share(self, group: int) -> bytes | None:
        for kind, data in self.key_shares:
            if kind == group:
                return data
        return None


def looks_like_tls(data: bytes) -> bool:
    """The first bytes of a TLS handshake record (what a censor's cheap check matches)."""
    return len(data) >= 3 and data[0] == CONTENT_HANDSHAKE and data[1] == 0x03 and data[2] <= 0x04


def parse_client_hello(data: bytes) -> ClientHello:
    """Parse the ClientHello at the start of a client's stream.

    Raises NeedMoreData while the message is still incomplete, ProtocolError when the stream
    does not start with a ClientHello."""
    message, consumed = handshake_message(data)
    if message[0] != HANDSHAKE_CLIENT_HELLO:
        raise ProtocolError("first handshake message is not a ClientHello")
    reader = _Reader(message[4:])
    legacy_version = reader.u16()
    random = reader.take(32)
    session_id = reader.take(reader.u8())
    ciphers = reader.u16_list(reader.u16())
    compression = reader.take(reader.u8())
    fields: dict[str, object] = {
        "server_name": None, "alpn": (), "supported_groups": (), "ec_point_formats": (),
        "signature_algorithms": (), "supported_versions": (), "key_shares": (),
    }
    extensions: list[int] = []
    if reader.left():
        ext_reader = _Reader(reader.take(reader.u16()))
        while ext_reader.left():
            kind = ext_reader.u16()
            extensions.append(kind)
            _read_extension(kind, _Reader(ext_reader.take(ext_reader.u16())), fields)
    return ClientHello(
        legacy_version=legacy_version,
        cipher_suites=ciphers,
        extensions=tuple(extensions),
        random=random,
        session_id=session_id,
        compression_methods=compression,
        message=message,
        consumed=consumed,
        **fields,  # type: ignore[arg-type]
    )


def handshake_message(data: bytes) -> tuple[bytes, int]:
    """The first handshake message of a stream, joined from its handshake records, and the
    count of stream bytes those records took."""
    pieces: list[bytes] = []
    have = 0
    offset = 0
    needed: int | None = None
    while needed is None or have < needed:
        if len(data) < offset + RECORD_HEADER.size:
            raise NeedMoreData("TLS record header incomplete")
        content, _, length = RECORD_HEADER.unpack_from(data, offset)
        if content != CONTENT_HANDSHAKE or data[offset + 1] != 0x03 or length > MAX_RECORD:
            raise ProtocolError("not a TLS handshake record")
        start = offset + RECORD_HEADER.size
        if len(data) < start + length:
            raise NeedMoreData("TLS record incomplete")
        pieces.append(data[start : start + length])
        have += length
        offset = start + length
        if needed is None and have >= 4:
            joined = b"".join(pieces)
            needed = 4 + int.from_bytes(joined[1:4], "big")
            if needed > MAX_HELLO:
                raise ProtocolError("handshake message too long")
    return b"".join(pieces)[:needed], offset


def _read_extension(kind: int, reader: _Reader, fields: dict[str, object]) -> None:
    if kind == EXT_SERVER_NAME and reader.left() >= 2:
        names = _Reader(reader.take(reader.u16()))
        while names.left():
            name_type = names.u8()
            name = names.take(names.u16())
            if name_type == SNI_HOST_NAME:
                fields["server_name"] = name.decode("ascii", "replace").lower()
                break
    elif kind == EXT_ALPN and reader.left() >= 2:
        protocols = _Reader(reader.take(reader.u16()))
        found: list[str] = []
        while protocols.left():
            found.append(protocols.take(protocols.u8()).decode("latin-1"))
        fields["alpn"] = tuple(found)
    elif kind == EXT_SUPPORTED_GROUPS and reader.left() >= 2:
        fields["supported_groups"] = reader.u16_list(reader.u16())
    elif kind == EXT_EC_POINT_FORMATS and reader.left() >= 1:
        fields["ec_point_formats"] = tuple(reader.take(reader.u8()))
    elif kind == EXT_SIGNATURE_ALGORITHMS and reader.left() >= 2:
        fields["signature_algorithms"] = reader.u16_list(reader.u16())
    elif kind == EXT_SUPPORTED_VERSIONS and reader.left() >= 1:
        fields["supported_versions"] = reader.u16_list(reader.u8())
    elif kind == EXT_KEY_SHARE and reader.left() >= 2:
        shares = _Reader(reader.take(reader.u16()))
        found_shares: list[tuple[int, bytes]] = []
        while shares.left():
            group = shares.u16()
            found_shares.append((group, shares.take(shares.u16())))
        fields["key_shares"] = tuple(found_shares)


class _Reader:
    """Bounds-checked reads from a handshake message; running short is a ProtocolError,
    because the record layer already said the message is complete."""

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.offset = 0

    def left(self) -> int:
        return len(self.data) - self.offset

    def take(self, count: int) -> bytes:
        if count > self.left():
            raise ProtocolError("ClientHello field runs past its end")
        piece = self.data[self.offset : self.offset + count]
        self.offset += count
        return piece

    def skip(self, count: int) -> None:
        self.take(count)

    def u8(self) -> int:
        return self.take(1)[0]

    def u16(self) -> int:
        return int.from_bytes(self.take(2), "big")

    def u16_list(self, byte_count: int) -> tuple[int, ...]:
        raw = self.take(byte_count - byte_count % 2)
        return struct.unpack(f"!{len(raw) // 2}H", raw)


@dataclass(frozen=True, slots=True)
class ServerHello:
    """A server's ServerHello as a REALITY server copies it from dest (RFC 8446 §4.1.3)."""

    message: bytes  # type, length, body
    random: bytes
    session_id: bytes
    cipher_suite: int
    supported_version: int | None
    key_share: tuple[int, bytes] | None
    key_share_offset: int  # where the key_share's key_exchange starts in `message` (0: none)


HELLO_RETRY_RANDOM = bytes.fromhex(
    "cf21ad74e59a6111be1d8c021e65b891c2a211167abb8c5e079e09e2c8a8339c"
)  # RFC 8446 §4.1.3: a ServerHello with this random is a HelloRetryRequest


def parse_server_hello(message: bytes) -> ServerHello:
    """Parse a ServerHello handshake message; ProtocolError if it is none (or an HRR)."""
    if len(message) < 4 or message[0] != HANDSHAKE_SERVER_HELLO:
        raise ProtocolError("not a ServerHello")
    reader = _Reader(message[4 : 4 + int.from_bytes(message[1:4], "big")])
    reader.u16()  # legacy_version
    random = reader.take(32)
    if random == HELLO_RETRY_RANDOM:
        raise ProtocolError("a HelloRetryRequest")
    session_id = reader.take(reader.u8())
    cipher = reader.u16()
    reader.u8()  # legacy_compression_method
    version: int | None = None
    share: tuple[int, bytes] | None = None
    share_offset = 0
    if reader.left():
        ext_reader = _Reader(reader.take(reader.u16()))
        base = 4 + reader.offset - ext_reader.left()
        while ext_reader.left():
            kind = ext_reader.u16()
            body = ext_reader.take(ext_reader.u16())
            if kind == EXT_SUPPORTED_VERSIONS and len(body) == 2:
                version = int.from_bytes(body, "big")
            elif kind == EXT_KEY_SHARE and len(body) >= 4:
                share = (int.from_bytes(body[:2], "big"), body[4:])
                share_offset = base + ext_reader.offset - len(body) + 4
    return ServerHello(
        message=message, random=random, session_id=session_id, cipher_suite=cipher,
        supported_version=version, key_share=share, key_share_offset=share_offset,
    )
