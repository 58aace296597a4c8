"""The TLS ClientHello as a censor reads it (RFC 8446 §4.1.2, extensions RFC 6066 SNI, RFC 7301
ALPN) and the two fingerprints censors and CDNs compute from it: JA3 (Salesforce, 2017) and JA4
(FoxIO, 2023: ciphers and extensions sorted, GREASE ignored, SNI/ALPN left out of the hash).
Sans-I/O: reassembled stream bytes in, a ClientHello out."""

from __future__ import annotations

import contextlib
import ssl
import struct
from dataclasses import dataclass

from cryptography.hazmat.primitives import hashes

from elsewhere.codecs.address import NeedMoreData
from elsewhere.errors import ProtocolError

RECORD_HEADER = struct.Struct("!BHH")  # content type, legacy version, length
CONTENT_HANDSHAKE = 0x16
HANDSHAKE_CLIENT_HELLO = 0x01
MAX_RECORD = 1 << 14  # RFC 8446 §5.1: a plaintext fragment is at most 2^14 bytes

EXT_SERVER_NAME = 0x0000
EXT_SUPPORTED_GROUPS = 0x000A
EXT_EC_POINT_FORMATS = 0x000B
EXT_SIGNATURE_ALGORITHMS = 0x000D
EXT_ALPN = 0x0010
EXT_SUPPORTED_VERSIONS = 0x002B
SNI_HOST_NAME = 0

JA4_VERSIONS = {0x0304: "13", 0x0303: "12", 0x0302: "11", 0x0301: "10", 0x0300: "s3"}
JA4_EMPTY_HASH = "000000000000"


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


def looks_like_tls(data: bytes) -> bool:
    """The first bytes of a TLS handshake record (what a censor's cheap check matches)."""
    return len(data) >= 3 and data[0] == CONTENT_HANDSHAKE and data[1] == 0x03 and data[2] <= 0x04


def parse_client_hello(data: bytes) -> ClientHello:
    """Parse the ClientHello at the start of a client's stream.

    Raises NeedMoreData while the message is still incomplete, ProtocolError when the stream
    does not start with a ClientHello."""
    handshake = _handshake_bytes(data)
    if handshake[0] != HANDSHAKE_CLIENT_HELLO:
        raise ProtocolError("first handshake message is not a ClientHello")
    body = handshake[4 : 4 + int.from_bytes(handshake[1:4], "big")]
    reader = _Reader(body)
    legacy_version = reader.u16()
    reader.skip(32)  # random
    reader.skip(reader.u8())  # legacy_session_id
    ciphers = reader.u16_list(reader.u16())
    reader.skip(reader.u8())  # legacy_compression_methods
    fields: dict[str, object] = {
        "server_name": None, "alpn": (), "supported_groups": (), "ec_point_formats": (),
        "signature_algorithms": (), "supported_versions": (),
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
        **fields,  # type: ignore[arg-type]
    )


def _handshake_bytes(data: bytes) -> bytes:
    """Join handshake-record fragments until the first handshake message is whole."""
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
    return b"".join(pieces)


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


class _Reader:
    """Bounds-checked reads from a ClientHello; running short is a ProtocolError, because the
    record layer already said the message is complete."""

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


# -- fingerprints ----------------------------------------------------------------------------


def _digest(algorithm: hashes.HashAlgorithm, text: str) -> str:
    hasher = hashes.Hash(algorithm)
    hasher.update(text.encode())
    return hasher.finalize().hex()


def ja3_string(hello: ClientHello) -> str:
    def dashed(values: tuple[int, ...]) -> str:
        return "-".join(str(v) for v in values if not is_grease(v))

    return ",".join((
        str(hello.legacy_version), dashed(hello.cipher_suites), dashed(hello.extensions),
        dashed(hello.supported_groups), dashed(hello.ec_point_formats),
    ))


def ja3(hello: ClientHello) -> str:
    """JA3: MD5 of version,ciphers,extensions,groups,point formats (decimal, GREASE removed)."""
    return _digest(hashes.MD5(), ja3_string(hello))


def ja4(hello: ClientHello, transport: str = "t") -> str:
    """JA4 (a_b_c) of a ClientHello seen over TCP ("t") or QUIC ("q")."""
    versions = [v for v in hello.supported_versions if not is_grease(v)]
    version = JA4_VERSIONS.get(max(versions) if versions else hello.legacy_version, "00")
    ciphers = [c for c in hello.cipher_suites if not is_grease(c)]
    extensions = [e for e in hello.extensions if not is_grease(e)]
    part_a = (
        f"{transport}{version}{'d' if hello.server_name else 'i'}"
        f"{min(len(ciphers), 99):02d}{min(len(extensions), 99):02d}{_ja4_alpn(hello.alpn)}"
    )
    part_b = (
        _digest(hashes.SHA256(), ",".join(sorted(f"{c:04x}" for c in ciphers)))[:12]
        if ciphers else JA4_EMPTY_HASH
    )
    hashed = sorted(f"{e:04x}" for e in extensions if e not in (EXT_SERVER_NAME, EXT_ALPN))
    signatures = ",".join(f"{s:04x}" for s in hello.signature_algorithms if not is_grease(s))
    text = ",".join(hashed) + (f"_{signatures}" if signatures else "")
    part_c = _digest(hashes.SHA256(), text)[:12] if hashed else JA4_EMPTY_HASH
    return f"{part_a}_{part_b}_{part_c}"


def _ja4_alpn(alpn: tuple[str, ...]) -> str:
    if not alpn or not alpn[0]:
        return "00"
    first = alpn[0]
    if first[0].isascii() and first[0].isalnum() and first[-1].isascii() and first[-1].isalnum():
        return first[0] + first[-1]
    hexed = first.encode("latin-1").hex()
    return hexed[0] + hexed[-1]


def python_default_hello(
    server_name: str = "example.test", context: ssl.SSLContext | None = None
) -> bytes:
    """The ClientHello record Python's `ssl.create_default_context()` sends (or `context`'s),
    made without any network: the handshake runs into a MemoryBIO."""
    context = context or ssl.create_default_context()
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    tls = context.wrap_bio(incoming, outgoing, server_hostname=server_name)
    with contextlib.suppress(ssl.SSLWantReadError):  # it waits for a ServerHello
        tls.do_handshake()
    return outgoing.read()
