"""Just enough of DNS (RFC 1035 §4) for the lab: read a one-question query, write an answer with
A records or an empty one. Sans-I/O: bytes in, values out, values in, bytes out."""

from __future__ import annotations

import socket
import struct
from dataclasses import dataclass

from elsewhere.errors import ProtocolError

HEADER = struct.Struct("!HHHHHH")  # id, flags, qdcount, ancount, nscount, arcount
TYPE_A = 1
TYPE_AAAA = 28
CLASS_IN = 1
FLAG_QR = 0x8000
FLAG_RD = 0x0100
FLAG_RA = 0x0080
OPCODE_MASK = 0x7800
RCODE_NOERROR = 0
RCODE_NXDOMAIN = 3
POINTER_TO_QUESTION = 0xC00C  # the question's name always starts right after the header
MAX_LABEL = 63


@dataclass(frozen=True, slots=True)
class Query:
    """A DNS query with its single question."""

    id: int
    flags: int
    name: str  # lower case, no trailing dot
    qtype: int
    qclass: int
    question: bytes  # the question section as sent, echoed in the answer


def parse_query(data: bytes) -> Query:
    """Read a query; ProtocolError for anything that is not a one-question query."""
    if len(data) < HEADER.size:
        raise ProtocolError("DNS message shorter than its header")
    ident, flags, qdcount, _, _, _ = HEADER.unpack_from(data)
    if flags & FLAG_QR or qdcount != 1:
        raise ProtocolError("not a one-question DNS query")
    labels: list[bytes] = []
    offset = HEADER.size
    while True:
        if offset >= len(data):
            raise ProtocolError("DNS name runs past the message")
        length = data[offset]
        if length == 0:
            offset += 1
            break
        if length > MAX_LABEL:
            raise ProtocolError("compressed or oversized label in a query")
        labels.append(data[offset + 1 : offset + 1 + length])
        offset += 1 + length
    if offset + 4 > len(data):
        raise ProtocolError("DNS question truncated")
    qtype, qclass = struct.unpack_from("!HH", data, offset)
    name = b".".join(labels).decode("ascii", "replace").lower()
    return Query(ident, flags, name, qtype, qclass, data[HEADER.size : offset + 4])


def encode_answer(
    query: Query, addresses: tuple[str, ...] = (), *, rcode: int = RCODE_NOERROR, ttl: int = 60
) -> bytes:
    """The response to `query`: one A record per address (IPv4), or none."""
    flags = FLAG_QR | (query.flags & (OPCODE_MASK | FLAG_RD)) | FLAG_RA | rcode
    records = b"".join(
        struct.pack("!HHHIH", POINTER_TO_QUESTION, TYPE_A, CLASS_IN, ttl, 4)
        + socket.inet_aton(address)
        for address in addresses
    )
    header = HEADER.pack(query.id, flags, 1, len(addresses), 0, 0)
    return header + query.question + records


def encode_query(ident: int, name: str, qtype: int = TYPE_A) -> bytes:
    """A recursive query for `name` (used by tests and probes)."""
    labels = b"".join(bytes((len(p),)) + p for p in name.encode("ascii").split(b".") if p)
    return (
        HEADER.pack(ident, FLAG_RD, 1, 0, 0, 0)
        + labels
        + b"\0"
        + struct.pack("!HH", qtype, CLASS_IN)
    )


def answer_addresses(data: bytes) -> tuple[str, ...]:
    """The A records in a response (assumes answers point back at the question, as ours do)."""
    _, flags, qdcount, ancount, _, _ = HEADER.unpack_from(data)
    if not flags & FLAG_QR:
        raise ProtocolError("not a DNS response")
    offset = HEADER.size
    for _ in range(qdcount):
        while data[offset] != 0:
            offset += 1 + data[offset]
        offset += 1 + 4
    found: list[str] = []
    for _ in range(ancount):
        _, rtype, _, _, rdlength = struct.unpack_from("!HHHIH", data, offset)
        offset += 12
        if rtype == TYPE_A and rdlength == 4:
            found.append(socket.inet_ntoa(data[offset : offset + 4]))
        offset += rdlength
    return tuple(found)
