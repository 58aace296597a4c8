"""The SOCKS5 address (RFC 1928 §5: ATYP, address, port), shared by SOCKS5, Shadowsocks (SIP004,
SIP022) and Trojan."""

from __future__ import annotations

import ipaddress
import socket

from elsewhere.errors import ProtocolError
from elsewhere.session import Destination

ATYP_IPV4 = 0x01
ATYP_DOMAIN = 0x03
ATYP_IPV6 = 0x04
MAX_DOMAIN = 255


class NeedMoreData(ProtocolError):
    """The buffer ends inside the address; feed more bytes and try again."""


def encode_address(dest: Destination) -> bytes:
    """ATYP | address | port (big-endian)."""
    port = dest.port.to_bytes(2, "big")
    ip = dest.ip
    if ip is None:
        name = dest.host.encode("idna") if not dest.host.isascii() else dest.host.encode()
        if not 0 < len(name) <= MAX_DOMAIN:
            raise ProtocolError(f"domain name of {len(name)} bytes cannot be encoded")
        return bytes((ATYP_DOMAIN, len(name))) + name + port
    if ip.version == 4:
        return bytes((ATYP_IPV4,)) + ip.packed + port
    return bytes((ATYP_IPV6,)) + ip.packed + port


def decode_address(
    data: bytes | bytearray | memoryview, offset: int = 0
) -> tuple[Destination, int]:
    """Parse an address at `offset`; return it and the offset just past it.

    Raises NeedMoreData when the buffer is too short, ProtocolError when the bytes are not an
    address."""
    end = len(data)
    if offset >= end:
        raise NeedMoreData("address type missing")
    atyp = data[offset]
    if atyp == ATYP_IPV4:
        stop = offset + 1 + 4
        if stop + 2 > end:
            raise NeedMoreData("IPv4 address truncated")
        host = socket.inet_ntop(socket.AF_INET, bytes(data[offset + 1 : stop]))
    elif atyp == ATYP_IPV6:
        stop = offset + 1 + 16
        if stop + 2 > end:
            raise NeedMoreData("IPv6 address truncated")
        host = str(ipaddress.IPv6Address(bytes(data[offset + 1 : stop])))
    elif atyp == ATYP_DOMAIN:
        if offset + 2 > end:
            raise NeedMoreData("domain length missing")
        length = data[offset + 1]
        stop = offset + 2 + length
        if stop + 2 > end:
            raise NeedMoreData("domain name truncated")
        if length == 0:
            raise ProtocolError("empty domain name")
        try:
            host = bytes(data[offset + 2 : stop]).decode("ascii")
        except UnicodeDecodeError as exc:
            raise ProtocolError("domain name is not ASCII") from exc
    else:
        raise ProtocolError(f"unknown address type {atyp:#x}")
    port = int.from_bytes(data[stop : stop + 2], "big")
    return Destination(host, port), stop + 2
