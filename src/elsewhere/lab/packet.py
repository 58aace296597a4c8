"""IPv4 packets as the censor sees them through NFQUEUE (RFC 791, TCP RFC 9293, UDP RFC 768):
parse the headers it needs, and build the UDP packets it forges. Sans-I/O."""

from __future__ import annotations

import socket
import struct
from dataclasses import dataclass

PROTO_TCP = 6
PROTO_UDP = 17
IPV4_HEADER = struct.Struct("!BBHHHBBH4s4s")
UDP_HEADER = struct.Struct("!HHHH")
TCP_FIXED = struct.Struct("!HHIIBB")  # ports, seq, ack, data offset, flags
DEFAULT_TTL = 64

TCP_FIN = 0x01
TCP_SYN = 0x02
TCP_RST = 0x04
TCP_PSH = 0x08
TCP_ACK = 0x10


@dataclass(frozen=True, slots=True)
class Packet:
    """The parts of an IPv4 TCP/UDP packet a censor looks at."""

    src: str
    dst: str
    proto: int
    sport: int
    dport: int
    payload: bytes
    size: int  # whole IP packet
    seq: int = 0  # TCP only
    flags: int = 0  # TCP only

    @property
    def syn(self) -> bool:
        return bool(self.flags & TCP_SYN) and not self.flags & TCP_ACK

    @property
    def is_tcp(self) -> bool:
        return self.proto == PROTO_TCP

    @property
    def is_udp(self) -> bool:
        return self.proto == PROTO_UDP

    def describe(self) -> str:
        kind = {PROTO_TCP: "tcp", PROTO_UDP: "udp"}.get(self.proto, str(self.proto))
        return f"{kind} {self.src}:{self.sport}>{self.dst}:{self.dport}"


def parse(raw: bytes) -> Packet | None:
    """Parse an IPv4 packet; None for anything else, for fragments and for truncated headers."""
    if len(raw) < IPV4_HEADER.size or raw[0] >> 4 != 4:
        return None
    _, _, total, _, fragment, _, proto, _, src, dst = IPV4_HEADER.unpack_from(raw)
    if fragment & 0x3FFF:  # more-fragments flag or an offset: the censor skips fragments
        return None
    ihl = (raw[0] & 0x0F) * 4
    end = min(total, len(raw))
    source, destination = socket.inet_ntoa(src), socket.inet_ntoa(dst)
    if proto == PROTO_TCP and end >= ihl + TCP_FIXED.size:
        sport, dport, seq, _, offset, flags = TCP_FIXED.unpack_from(raw, ihl)
        start = ihl + (offset >> 4) * 4
        return Packet(source, destination, proto, sport, dport, raw[start:end], len(raw), seq,
                      flags)
    if proto == PROTO_UDP and end >= ihl + UDP_HEADER.size:
        sport, dport, _, _ = UDP_HEADER.unpack_from(raw, ihl)
        return Packet(source, destination, proto, sport, dport, raw[ihl + UDP_HEADER.size : end],
                      len(raw))
    return None


def build_udp(src: str, sport: int, dst: str, dport: int, payload: bytes) -> bytes:
    """An IPv4/UDP packet for a raw IPPROTO_RAW socket. The kernel fills in the IP checksum and
    ID; the UDP checksum is left 0, which RFC 768 allows over IPv4."""
    length = UDP_HEADER.size + len(payload)
    ip = IPV4_HEADER.pack(0x45, 0, IPV4_HEADER.size + length, 0, 0, DEFAULT_TTL, PROTO_UDP, 0,
                          socket.inet_aton(src), socket.inet_aton(dst))
    return ip + UDP_HEADER.pack(sport, dport, length, 0) + payload


def build_tcp(
    src: str, sport: int, dst: str, dport: int, payload: bytes, *, seq: int, flags: int = TCP_ACK
) -> bytes:
    """An IPv4/TCP packet (checksum left 0): only for feeding the censor's engine in tests."""
    tcp = TCP_FIXED.pack(sport, dport, seq, 0, 5 << 4, flags) + struct.pack("!HHH", 65535, 0, 0)
    ip = IPV4_HEADER.pack(0x45, 0, IPV4_HEADER.size + len(tcp) + len(payload), 0, 0, DEFAULT_TTL,
                          PROTO_TCP, 0, socket.inet_aton(src), socket.inet_aton(dst))
    return ip + tcp + payload
