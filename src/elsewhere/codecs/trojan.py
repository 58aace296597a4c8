"""Trojan (trojan-gfw.github.io/trojan/protocol): the request a client sends first inside TLS, and
the UDP-over-stream framing that follows an UDP ASSOCIATE request, as sans-I/O functions.

Request:     hex(SHA224(password)) CRLF  CMD ATYP DST.ADDR DST.PORT  CRLF  payload...
UDP packet:  ATYP DST.ADDR DST.PORT  Length(u16 BE)  CRLF  payload

The server never consumes bytes it cannot prove are Trojan: `parse_request` either returns the
request (with the header length, so the adapter slices the payload off itself), returns None
while the buffer is a strict prefix of a request that could still be valid, or raises
ProtocolError, and then the adapter hands every byte it read to the fallback web server.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Generic, TypeVar

from cryptography.hazmat.primitives import hashes

from elsewhere.codecs.address import MAX_DOMAIN, NeedMoreData, decode_address, encode_address
from elsewhere.errors import AuthenticationError, ProtocolError
from elsewhere.session import Destination, Network

T = TypeVar("T")
Buffer = bytes | bytearray | memoryview

CRLF = b"\r\n"
HASH_LEN = 56  # hex of a 28-byte SHA-224 digest
CMD_CONNECT = 0x01
CMD_UDP_ASSOCIATE = 0x03
# Longest address: ATYP + length byte + 255-byte name + port.
MAX_ADDRESS = 1 + 1 + MAX_DOMAIN + 2
MAX_HEADER = HASH_LEN + len(CRLF) + 1 + MAX_ADDRESS + len(CRLF)
MAX_UDP_PAYLOAD = 0xFFFF  # the Length field is 16 bits
_HEX = frozenset(b"0123456789abcdef")  # hashlib and every client write lowercase hex


def password_hash(password: str | bytes) -> bytes:
    """The 56 ASCII bytes a client sends for `password`: lowercase hex of its SHA-224."""
    digest = hashes.Hash(hashes.SHA224())
    digest.update(password.encode() if isinstance(password, str) else password)
    return digest.finalize().hex().encode("ascii")


@dataclass(frozen=True, slots=True)
class TrojanRequest(Generic[T]):
    """A parsed request. `header_length` bytes of the buffer were the header; what follows is
    the first payload (TCP) or the first UDP packets (UDP ASSOCIATE)."""

    user: T
    command: int  # CMD_CONNECT or CMD_UDP_ASSOCIATE
    destination: Destination
    header_length: int

    @property
    def network(self) -> Network:
        return "udp" if self.command == CMD_UDP_ASSOCIATE else "tcp"


def parse_request(buf: Buffer, hashes: Mapping[bytes, T]) -> TrojanRequest[T] | None:
    """Parse the request at the start of `buf` for the users in `hashes` (password_hash -> user).

    Returns None when `buf` is a strict prefix of a request that may still be valid. Raises
    AuthenticationError for a well-formed hash that is nobody's, ProtocolError for anything that
    is not Trojan. Never consumes: `buf` is only read."""
    view = memoryview(buf)
    head = bytes(view[:HASH_LEN])
    if not _HEX.issuperset(head):
        raise ProtocolError("not a Trojan request: the password hash is not lowercase hex")
    if len(head) < HASH_LEN:
        return None
    user = hashes.get(head)
    if user is None:
        raise AuthenticationError("Trojan password hash of no known user")
    rest = bytes(view[HASH_LEN : HASH_LEN + len(CRLF)])
    if rest != CRLF[: len(rest)]:
        raise ProtocolError("not a Trojan request: no CRLF after the password hash")
    offset = HASH_LEN + len(CRLF)
    if len(view) <= offset:
        return None
    command = view[offset]
    if command not in (CMD_CONNECT, CMD_UDP_ASSOCIATE):
        # 0x7f is trojan-go's mux, which we do not speak.
        raise ProtocolError(f"unsupported Trojan command {command:#x}")
    try:
        destination, offset = decode_address(view, offset + 1)
    except NeedMoreData:
        return None
    tail = bytes(view[offset : offset + len(CRLF)])
    if tail != CRLF[: len(tail)]:
        raise ProtocolError("not a Trojan request: no CRLF after the destination")
    if len(tail) < len(CRLF):
        return None
    return TrojanRequest(user, command, destination, offset + len(CRLF))


def encode_request(
    password_hash: bytes, command: int, destination: Destination, payload: bytes = b""
) -> bytes:
    """The client's first bytes: header, then `payload` in the same write (as every client does,
    so the whole header lands in the first TLS record)."""
    if len(password_hash) != HASH_LEN:
        raise ValueError("password_hash must be the 56-byte hex digest from password_hash()")
    if command not in (CMD_CONNECT, CMD_UDP_ASSOCIATE):
        raise ValueError(f"unknown Trojan command {command}")
    return b"".join(
        (password_hash, CRLF, bytes((command,)), encode_address(destination), CRLF, payload)
    )


@dataclass(frozen=True, slots=True)
class TrojanUdpPacket:
    """One datagram: to `destination` (client to server) or from it (server to client)."""

    destination: Destination
    payload: bytes


def encode_udp(destination: Destination, payload: bytes) -> bytes:
    """One UDP packet framed for the Trojan stream."""
    if len(payload) > MAX_UDP_PAYLOAD:
        raise ProtocolError(f"UDP payload of {len(payload)} bytes does not fit a Trojan packet")
    return b"".join((encode_address(destination), len(payload).to_bytes(2, "big"), CRLF, payload))


class UdpDecoder:
    """Splits the stream after an UDP ASSOCIATE request back into packets.

    feed() bytes as they arrive, then call next() until it returns None."""

    def __init__(self) -> None:
        self._buf = bytearray()

    def feed(self, data: Buffer) -> None:
        self._buf += data

    def next(self) -> TrojanUdpPacket | None:
        """The next whole packet, or None until more bytes arrive. ProtocolError on garbage."""
        buf = self._buf
        try:
            destination, offset = decode_address(buf)
        except NeedMoreData:
            return None
        if len(buf) < offset + 2 + len(CRLF):
            return None
        length = int.from_bytes(buf[offset : offset + 2], "big")
        offset += 2
        if buf[offset : offset + 2] != CRLF:
            raise ProtocolError("Trojan UDP packet without CRLF after its length")
        offset += len(CRLF)
        end = offset + length
        if len(buf) < end:
            return None
        payload = bytes(buf[offset:end])
        del buf[:end]  # bytearray drops a prefix without moving the tail
        return TrojanUdpPacket(destination, payload)

    @property
    def buffered(self) -> int:
        """Bytes received but not yet returned as a packet."""
        return len(self._buf)
