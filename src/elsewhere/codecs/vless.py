"""VLESS (Xray-core proxy/vless/encoding, version 0): the request and response headers and the
length-prefixed UDP framing, as sans-I/O functions.

Request:   Version(0) | UUID(16) | addons length(1) | addons (protobuf) | Command(1)
           | Port(u16 BE) | Atyp(1) | Address            (no address for Command 3, mux)
Response:  Version(0) | addons length(1) | addons
UDP:       both directions after the headers carry u16 BE length | packet, again and again.

Address types are VLESS's own numbering, 1 IPv4, 2 domain, 3 IPv6, not SOCKS5's; and the port
comes before the address. Addons: the only field Xray defines is Flow (1, string; plus Seed 2);
a request that asks for a flow is refused unless the server allows that flow (XTLS Vision on
the REALITY server, codecs/vision.py).

The server never consumes bytes it cannot prove are VLESS: `parse_request` returns the request,
returns None while the buffer is a strict prefix of one that may still be valid, or raises
ProtocolError (AuthenticationError for an unknown UUID), and the adapter then hands every byte
to the fallback web server.
"""

from __future__ import annotations

import ipaddress
import socket
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Generic, TypeVar

from elsewhere.codecs.address import ATYP_DOMAIN, ATYP_IPV4, ATYP_IPV6, encode_address
from elsewhere.errors import AuthenticationError, ConfigError, ProtocolError
from elsewhere.session import Destination, Network

T = TypeVar("T")
Buffer = bytes | bytearray | memoryview

VERSION = 0
UUID_LEN = 16
CMD_TCP = 0x01
CMD_UDP = 0x02
CMD_MUX = 0x03  # Mux.Cool (and XUDP on top of it): not implemented
VLESS_ATYP_IPV4 = 0x01
VLESS_ATYP_DOMAIN = 0x02
VLESS_ATYP_IPV6 = 0x03
_FROM_SOCKS = {
    ATYP_IPV4: VLESS_ATYP_IPV4,
    ATYP_DOMAIN: VLESS_ATYP_DOMAIN,
    ATYP_IPV6: VLESS_ATYP_IPV6,
}
# Xray's "VLESS UUID mapping standard": a custom id of at most 30 bytes stands for
# UUIDv5(namespace = the nil UUID, name = the id).
MAX_CUSTOM_ID = 30
ADDONS_FLOW = 1  # protobuf field number of Addons.Flow
MAX_ADDONS = 0xFF  # the length is one byte
MAX_HEADER = 1 + UUID_LEN + 1 + MAX_ADDONS + 1 + 2 + 1 + 1 + 255
MAX_UDP_PACKET = 0xFFFF


def parse_uuid(text: str) -> bytes:
    """The 16 bytes a VLESS client sends for the id a person wrote: a UUID in any of the usual
    spellings, or (as Xray allows) any other string of 1-30 bytes, mapped to its UUIDv5."""
    text = text.strip()
    try:
        return uuid.UUID(text).bytes
    except ValueError:
        pass
    if 0 < len(text.encode()) <= MAX_CUSTOM_ID:
        return uuid.uuid5(uuid.UUID(int=0), text).bytes
    raise ConfigError(
        f"VLESS id {text!r} is not a UUID (like 5783a3e7-e373-51cd-8642-c83782b807c5) "
        f"nor a custom id of 1-{MAX_CUSTOM_ID} bytes; `elsewhere keys add` makes a valid one"
    )


@dataclass(frozen=True, slots=True)
class VlessRequest(Generic[T]):
    """A parsed request; what follows `header_length` bytes is the first payload (TCP) or the
    first length-prefixed packets (UDP)."""

    user: T
    command: int  # CMD_TCP or CMD_UDP
    destination: Destination
    header_length: int
    flow: str = ""  # "xtls-rprx-vision" when asked for (and allowed)
    uuid: bytes = b""  # the 16 bytes the user sent (Vision's first frame repeats them)

    @property
    def network(self) -> Network:
        return "udp" if self.command == CMD_UDP else "tcp"


def parse_request(
    buf: Buffer, users: Mapping[bytes, T], flows: frozenset[str] = frozenset()
) -> VlessRequest[T] | None:
    """Parse the request at the start of `buf` for `users` (16-byte UUID -> user).

    None: a strict prefix, feed more. AuthenticationError: a UUID nobody holds. ProtocolError:
    not VLESS, or VLESS we do not speak (mux, a flow not in `flows`). Never consumes: `buf` is
    only read."""
    view = memoryview(buf)
    end = len(view)
    if end == 0:
        return None
    if view[0] != VERSION:
        raise ProtocolError(f"not a VLESS request: version {view[0]}")
    if end < 1 + UUID_LEN:
        return None
    user = users.get(bytes(view[1 : 1 + UUID_LEN]))
    if user is None:
        raise AuthenticationError("VLESS UUID of no known user")
    offset = 1 + UUID_LEN
    if end <= offset:
        return None
    addons_len = view[offset]
    offset += 1
    if end < offset + addons_len:
        return None
    flow = _addons_flow(bytes(view[offset : offset + addons_len]))
    if flow and flow not in flows:
        raise ProtocolError(f"VLESS flow {flow!r} is not supported here")
    offset += addons_len
    if end <= offset:
        return None
    command = view[offset]
    offset += 1
    if command == CMD_MUX:
        raise ProtocolError("VLESS mux (Mux.Cool / XUDP) is not supported")
    if command not in (CMD_TCP, CMD_UDP):
        raise ProtocolError(f"unknown VLESS command {command:#x}")
    parsed = _decode_address(view, offset)
    if parsed is None:
        return None
    destination, offset = parsed
    return VlessRequest(user, command, destination, offset, flow, bytes(view[1 : 1 + UUID_LEN]))


def encode_request(
    uuid_bytes: bytes,
    command: int,
    destination: Destination,
    payload: bytes = b"",
    flow: str = "",
) -> bytes:
    """The client's first bytes: header (addons: the flow, if any) and `payload` in the same
    write."""
    if len(uuid_bytes) != UUID_LEN:
        raise ValueError("uuid_bytes must be the 16 bytes from parse_uuid()")
    if command not in (CMD_TCP, CMD_UDP):
        raise ValueError(f"unsupported VLESS command {command}")
    addons = encode_addons(flow)
    header = (
        bytes((VERSION,)) + uuid_bytes + bytes((len(addons),)) + addons + bytes((command,))
        + _encode_address(destination)
    )
    return header + payload


def encode_response() -> bytes:
    """The server's first bytes before any data: version 0, no addons."""
    return bytes((VERSION, 0))


def parse_response(buf: Buffer) -> int | None:
    """The length of the response header at the start of `buf`, or None until it is all here.
    ProtocolError if the server answers another version."""
    if len(buf) == 0:
        return None
    if buf[0] != VERSION:
        raise ProtocolError(f"VLESS response version {buf[0]}, expected {VERSION}")
    if len(buf) < 2:
        return None
    length = 2 + buf[1]
    return length if len(buf) >= length else None


def encode_udp(payload: bytes) -> bytes:
    """One UDP packet on the VLESS stream (either direction)."""
    if len(payload) > MAX_UDP_PACKET:
        raise ProtocolError(f"UDP payload of {len(payload)} bytes does not fit a VLESS packet")
    return len(payload).to_bytes(2, "big") + payload


class UdpDecoder:
    """Splits a VLESS UDP stream back into packets: feed() bytes, then next() until None."""

    def __init__(self) -> None:
        self._buf = bytearray()

    def feed(self, data: Buffer) -> None:
        self._buf += data

    def next(self) -> bytes | None:
        buf = self._buf
        if len(buf) < 2:
            return None
        end = 2 + int.from_bytes(buf[:2], "big")
        if len(buf) < end:
            return None
        packet = bytes(buf[2:end])
        del buf[:end]  # bytearray drops a prefix without moving the tail
        return packet

    @property
    def buffered(self) -> int:
        """Bytes received but not yet returned as a packet."""
        return len(self._buf)


def encode_addons(flow: str) -> bytes:
    """The Addons message with only Flow set (as Xray's clients send it)."""
    name = flow.encode()
    return bytes((ADDONS_FLOW << 3 | 2, len(name))) + name if name else b""


def _addons_flow(addons: bytes) -> str:
    """Walk the protobuf Addons message; return its Flow, skip other known wire types."""
    flow = ""
    offset = 0
    while offset < len(addons):
        key, offset = _varint(addons, offset)
        field, wire_type = key >> 3, key & 7
        if wire_type == 0:
            _, offset = _varint(addons, offset)
        elif wire_type == 2:
            length, offset = _varint(addons, offset)
            if offset + length > len(addons):
                raise ProtocolError("VLESS addons field runs past its length")
            if field == ADDONS_FLOW:
                flow = addons[offset : offset + length].decode("utf-8", "replace")
            offset += length
        else:
            raise ProtocolError(f"VLESS addons use protobuf wire type {wire_type}")
    return flow


def _varint(data: bytes, offset: int) -> tuple[int, int]:
    value = shift = 0
    while offset < len(data) and shift < 64:
        byte = data[offset]
        offset += 1
        value |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return value, offset
        shift += 7
    raise ProtocolError("VLESS addons hold a truncated varint")


def _encode_address(dest: Destination) -> bytes:
    # The SOCKS form carries the same bytes in another order and numbering; reuse its checks.
    socks = encode_address(dest)
    return socks[-2:] + bytes((_FROM_SOCKS[socks[0]],)) + socks[1:-2]


def _decode_address(view: memoryview, offset: int) -> tuple[Destination, int] | None:
    """Port, type, address at `offset`; None if the buffer ends inside them."""
    end = len(view)
    if end < offset + 3:
        return None
    port = int.from_bytes(view[offset : offset + 2], "big")
    atyp = view[offset + 2]
    offset += 3
    if atyp == VLESS_ATYP_IPV4:
        if end < offset + 4:
            return None
        host = socket.inet_ntop(socket.AF_INET, bytes(view[offset : offset + 4]))
        offset += 4
    elif atyp == VLESS_ATYP_IPV6:
        if end < offset + 16:
            return None
        host = str(ipaddress.IPv6Address(bytes(view[offset : offset + 16])))
        offset += 16
    elif atyp == VLESS_ATYP_DOMAIN:
        if end <= offset:
            return None
        length = view[offset]
        if length == 0:
            raise ProtocolError("VLESS request with an empty domain name")
        if end < offset + 1 + length:
            return None
        try:
            host = bytes(view[offset + 1 : offset + 1 + length]).decode("ascii")
        except UnicodeDecodeError as exc:
            raise ProtocolError("VLESS domain name is not ASCII") from exc
        offset += 1 + length
    else:
        raise ProtocolError(f"unknown VLESS address type {atyp:#x}")
    return Destination(host, port), offset
