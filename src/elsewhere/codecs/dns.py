"""DNS messages (RFC 1035 §4, RFC 3596 for AAAA) as the full-device resolver needs them: the
question of a query, the addresses a response gives for each name (CNAME chains followed,
compression pointers read), an answer with no records, an error answer, and a message's id
rewritten. Sans-I/O: bytes in, values out. Everything else in a message is passed on as it is."""

from __future__ import annotations

import ipaddress
import struct
from dataclasses import dataclass

from elsewhere.errors import ProtocolError

HEADER = struct.Struct("!HHHHHH")  # id, flags, qdcount, ancount, nscount, arcount
RR_FIXED = struct.Struct("!HHIH")  # type, class, ttl, rdlength
TYPE_A = 1
TYPE_CNAME = 5
TYPE_AAAA = 28
CLASS_IN = 1
FLAG_QR = 0x8000
FLAG_OPCODE = 0x7800
FLAG_RD = 0x0100
FLAG_RA = 0x0080
RCODE_NOERROR = 0
RCODE_SERVFAIL = 2
RCODE_REFUSED = 5
MAX_POINTERS = 32  # a name may point at most this often: a loop of pointers is garbage
MAX_MESSAGE = 65535  # RFC 1035 §4.2.2: TCP messages carry a 16-bit length

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


@dataclass(frozen=True, slots=True)
class Question:
    id: int
    flags: int
    name: str  # lower case, no trailing dot; "" for the root
    qtype: int
    qclass: int
    end: int  # offset just past the question section


def read_name(data: bytes, offset: int) -> tuple[str, int]:
    """The name at `offset` and the offset past it (past the first pointer, if any)."""
    labels: list[str] = []
    end = -1
    jumps = 0
    while True:
        if offset >= len(data):
            raise ProtocolError("DNS name runs past the message")
        length = data[offset]
        if length & 0xC0 == 0xC0:
            if offset + 1 >= len(data):
                raise ProtocolError("DNS pointer runs past the message")
            jumps += 1
            if jumps > MAX_POINTERS:
                raise ProtocolError("DNS name pointers loop")
            if end < 0:
                end = offset + 2
            offset = ((length & 0x3F) << 8) | data[offset + 1]
            continue
        if length & 0xC0:
            raise ProtocolError(f"DNS label type {length >> 6} is not defined")
        offset += 1
        if length == 0:
            break
        label = data[offset : offset + length]
        if len(label) < length:
            raise ProtocolError("DNS label runs past the message")
        labels.append(label.decode("ascii", "replace").lower())
        offset += length
    return ".".join(labels), (end if end >= 0 else offset)


def parse_question(data: bytes) -> Question:
    """The query's header and its (first) question; ProtocolError when there is none."""
    if len(data) < HEADER.size:
        raise ProtocolError("DNS message shorter than its header")
    ident, flags, qdcount, _, _, _ = HEADER.unpack_from(data)
    if qdcount < 1:
        raise ProtocolError("DNS message without a question")
    name, offset = read_name(data, HEADER.size)
    if offset + 4 > len(data):
        raise ProtocolError("DNS question cut short")
    qtype, qclass = struct.unpack_from("!HH", data, offset)
    return Question(ident, flags, name, qtype, qclass, offset + 4)


def with_id(data: bytes, ident: int) -> bytes:
    """The same message under another id (a resolver that multiplexes many clients)."""
    return struct.pack("!H", ident) + data[2:]


def addresses(data: bytes) -> list[tuple[IPAddress, str, int]]:
    """(address, the name that was asked, ttl) for every A/AAAA record of a response, with
    CNAME chains followed back to the question's name (so www.x.test's CNAME to a CDN name
    still maps the CDN's address to www.x.test). Malformed records end the walk quietly: the
    response goes to the client as it is either way."""
    question = parse_question(data)
    _, _, qdcount, ancount, _, _ = HEADER.unpack_from(data)
    offset = question.end
    for _ in range(qdcount - 1):
        _, offset = read_name(data, offset)
        offset += 4
    aliases: dict[str, str] = {}  # CNAME target -> owner
    found: list[tuple[IPAddress, str, int]] = []
    try:
        for _ in range(ancount):
            owner, offset = read_name(data, offset)
            if offset + RR_FIXED.size > len(data):
                break
            rtype, rclass, ttl, length = RR_FIXED.unpack_from(data, offset)
            offset += RR_FIXED.size
            rdata = data[offset : offset + length]
            if len(rdata) < length:
                break
            if rclass == CLASS_IN and rtype == TYPE_CNAME:
                target, _ = read_name(data, offset)
                aliases[target] = owner
            elif rclass == CLASS_IN and rtype == TYPE_A and length == 4:
                found.append((ipaddress.IPv4Address(rdata), owner, ttl))
            elif rclass == CLASS_IN and rtype == TYPE_AAAA and length == 16:
                found.append((ipaddress.IPv6Address(rdata), owner, ttl))
            offset += length
    except ProtocolError:
        pass
    result = []
    for address, owner, ttl in found:
        seen = 0
        while owner in aliases and owner != question.name and seen < MAX_POINTERS:
            owner = aliases[owner]
            seen += 1
        result.append((address, owner, ttl))
    return result


def answer(query: bytes, rcode: int = RCODE_NOERROR) -> bytes:
    """A response to `query` that carries only its question: with NOERROR, "this name has no
    records of that type" (how an AAAA query is answered when IPv6 is blocked); with SERVFAIL
    or REFUSED, an error."""
    question = parse_question(query)
    flags = FLAG_QR | (question.flags & (FLAG_OPCODE | FLAG_RD)) | FLAG_RA | rcode
    header = HEADER.pack(question.id, flags, 1, 0, 0, 0)
    return header + query[HEADER.size : question.end]
