"""DNS messages (RFC 1035 §4): questions, addresses behind CNAME chains and compression
pointers, empty and error answers, ids rewritten; garbage raises ProtocolError only."""

from __future__ import annotations

import ipaddress
import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st

from elsewhere.codecs import dns
from elsewhere.errors import ProtocolError
from elsewhere.lab import dns as lab_dns


def name(text: str) -> bytes:
    return b"".join(bytes((len(p),)) + p.encode() for p in text.split(".")) + b"\0"


def rr(owner: bytes, rtype: int, ttl: int, rdata: bytes) -> bytes:
    return owner + struct.pack("!HHIH", rtype, dns.CLASS_IN, ttl, len(rdata)) + rdata


def test_the_question_of_a_query_made_elsewhere_is_read() -> None:
    query = lab_dns.encode_query(0x1234, "WWW.Instagram.test", dns.TYPE_AAAA)
    question = dns.parse_question(query)
    assert (question.id, question.name, question.qtype, question.qclass) == (
        0x1234, "www.instagram.test", dns.TYPE_AAAA, dns.CLASS_IN)
    assert question.end == len(query)


def test_addresses_of_an_answer_pointing_back_at_the_question() -> None:
    query = lab_dns.encode_query(7, "instagram.test")
    response = lab_dns.encode_answer(lab_dns.parse_query(query), ("10.77.100.10", "10.0.0.9"),
                                     ttl=300)
    assert dns.addresses(response) == [
        (ipaddress.ip_address("10.77.100.10"), "instagram.test", 300),
        (ipaddress.ip_address("10.0.0.9"), "instagram.test", 300),
    ]


def test_a_cname_chain_maps_the_cdn_address_back_to_the_name_asked() -> None:
    header = struct.pack("!HHHHHH", 9, 0x8180, 1, 3, 0, 0)
    question = name("www.shop.test") + struct.pack("!HH", dns.TYPE_A, dns.CLASS_IN)
    # www.shop.test CNAME edge.cdn.test (via a pointer to the question), edge CNAME a.cdn.test
    first = rr(b"\xc0\x0c", dns.TYPE_CNAME, 60, name("edge.cdn.test"))
    edge_offset = 12 + len(question) + 12
    second = rr(struct.pack("!H", 0xC000 | edge_offset), dns.TYPE_CNAME, 60, name("a.cdn.test"))
    a_offset = 12 + len(question) + len(first) + 12
    third = rr(struct.pack("!H", 0xC000 | a_offset), dns.TYPE_AAAA, 30,
               ipaddress.IPv6Address("2001:db8::1").packed)
    response = header + question + first + second + third
    assert dns.addresses(response) == [
        (ipaddress.IPv6Address("2001:db8::1"), "www.shop.test", 30)]


def test_an_empty_answer_keeps_the_question_and_says_no_records() -> None:
    query = lab_dns.encode_query(0xBEEF, "instagram.test", dns.TYPE_AAAA)
    empty = dns.answer(query)
    ident, flags, qd, an, ns, ar = struct.unpack_from("!HHHHHH", empty)
    assert (ident, qd, an, ns, ar) == (0xBEEF, 1, 0, 0, 0)
    assert flags & dns.FLAG_QR and flags & 0xF == dns.RCODE_NOERROR and flags & dns.FLAG_RD
    assert empty[12:] == query[12:]
    assert struct.unpack_from("!H", dns.answer(query, dns.RCODE_REFUSED), 2)[0] & 0xF == 5


def test_with_id_changes_only_the_id() -> None:
    query = lab_dns.encode_query(1, "a.test")
    assert dns.with_id(query, 0xABCD) == b"\xab\xcd" + query[2:]


def test_a_pointer_loop_is_garbage_not_a_hang() -> None:
    looped = struct.pack("!HHHHHH", 1, 0, 1, 0, 0, 0) + b"\xc0\x0c" + b"\0\1\0\1"
    with pytest.raises(ProtocolError):
        dns.parse_question(looped)


@given(st.binary(max_size=300))
def test_garbage_raises_protocol_error_and_nothing_else(data: bytes) -> None:
    try:
        dns.parse_question(data)
        dns.addresses(data)
    except ProtocolError:
        pass
