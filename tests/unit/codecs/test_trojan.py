import contextlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from elsewhere.codecs.trojan import (
    CMD_CONNECT,
    CMD_UDP_ASSOCIATE,
    CRLF,
    MAX_HEADER,
    TrojanUdpPacket,
    UdpDecoder,
    encode_request,
    encode_udp,
    parse_request,
    password_hash,
)
from elsewhere.errors import AuthenticationError, ProtocolError
from elsewhere.session import Destination

ALICE = password_hash("password")
USERS = {ALICE: "alice", password_hash("other"): "bob"}

hosts = st.one_of(
    st.ip_addresses().map(str),
    st.from_regex(r"[a-z0-9]([a-z0-9-]{0,20}\.){0,3}[a-z]{2,6}", fullmatch=True),
)
destinations = st.builds(Destination, hosts, st.integers(0, 65535))


def test_password_hash_is_hex_sha224_of_the_password() -> None:
    assert ALICE == b"d63dc919e201d7bc4c825630d2cf25fdc93d4b2f0d46706d29038d01"
    assert len(ALICE) == 56


def test_request_on_the_wire_is_hash_crlf_socks_request_crlf_payload() -> None:
    raw = encode_request(ALICE, CMD_CONNECT, Destination("example.com", 443), b"GET")
    assert raw == ALICE + b"\r\n\x01\x03\x0bexample.com\x01\xbb\r\nGET"


def test_server_finds_the_user_destination_and_where_the_payload_starts() -> None:
    raw = encode_request(ALICE, CMD_CONNECT, Destination("1.2.3.4", 80), b"hello")
    request = parse_request(raw, USERS)
    assert request is not None
    assert (request.user, request.destination, request.network) == (
        "alice",
        Destination("1.2.3.4", 80),
        "tcp",
    )
    assert raw[request.header_length :] == b"hello"


def test_udp_associate_is_a_udp_request() -> None:
    raw = encode_request(ALICE, CMD_UDP_ASSOCIATE, Destination("8.8.8.8", 53))
    request = parse_request(raw, USERS)
    assert request is not None and request.network == "udp"


@given(dest=destinations, payload=st.binary(max_size=64), command=st.sampled_from([1, 3]))
def test_every_strict_prefix_asks_for_more_and_the_whole_parses(
    dest: Destination, payload: bytes, command: int
) -> None:
    raw = encode_request(ALICE, command, dest, payload)
    request = parse_request(raw, USERS)
    assert request is not None
    assert request.command == command
    assert request.destination == dest or request.destination.ip == dest.ip
    assert raw[request.header_length :] == payload
    for cut in range(request.header_length):
        assert parse_request(raw[:cut], USERS) is None


def test_unknown_password_is_an_authentication_error_so_the_adapter_falls_back() -> None:
    raw = encode_request(password_hash("guess"), CMD_CONNECT, Destination("a.b", 1))
    with pytest.raises(AuthenticationError):
        parse_request(raw, USERS)


@pytest.mark.parametrize(
    "raw",
    [
        b"GET / HTTP/1.1\r\nHost: example.com\r\n\r\n",  # a browser
        b"\x16\x03\x01\x02\x00\x01",  # TLS inside TLS
        ALICE.upper() + b"\r\n",  # trojan-gfw compares the hex as written: lowercase
        ALICE + b"\n\x01",  # bare LF
        ALICE + b"\r\n\x02\x01\x01\x02\x03\x04\x00\x50\r\n",  # BIND is not Trojan's
        ALICE + b"\r\n\x7f\x01\x01\x02\x03\x04\x00\x50\r\n",  # trojan-go mux: unsupported
        ALICE + b"\r\n\x01\x05\x01\x02\x03\x04\x00\x50\r\n",  # unknown address type
        ALICE + b"\r\n\x01\x01\x01\x02\x03\x04\x00\x50\n\r",  # CRLF swapped after the address
        ALICE + b"\r\n\x01\x01\x01\x02\x03\x04\x00\x50XX",
    ],
)
def test_anything_else_is_a_protocol_error(raw: bytes) -> None:
    with pytest.raises(ProtocolError):
        parse_request(raw, USERS)


def test_garbage_is_refused_at_its_first_impossible_byte_not_after_a_byte_count() -> None:
    with pytest.raises(ProtocolError):
        parse_request(b"G", USERS)
    with pytest.raises(ProtocolError):
        parse_request(ALICE[:10] + b"Z", USERS)


def test_parsing_never_consumes_the_callers_buffer() -> None:
    buf = bytearray(b"GET / HTTP/1.1\r\n")
    with pytest.raises(ProtocolError):
        parse_request(buf, USERS)
    assert buf == b"GET / HTTP/1.1\r\n"
    good = bytearray(encode_request(ALICE, CMD_CONNECT, Destination("x.y", 1), b"data"))
    copy = bytes(good)
    assert parse_request(good, USERS) is not None
    assert good == copy


@given(command=st.sampled_from([1, 3]), tail=st.binary(min_size=MAX_HEADER))
def test_a_header_never_needs_more_than_its_longest_possible_length(
    command: int, tail: bytes
) -> None:
    raw = (ALICE + CRLF + bytes((command,)) + tail)[:MAX_HEADER]
    with contextlib.suppress(ProtocolError):
        assert parse_request(raw, USERS) is not None


def test_longest_header_has_the_documented_length() -> None:
    raw = encode_request(ALICE, CMD_CONNECT, Destination("a" * 255, 1))
    request = parse_request(raw, USERS)
    assert request is not None and request.header_length == len(raw) == MAX_HEADER


def test_udp_packet_is_address_length_crlf_payload() -> None:
    assert encode_udp(Destination("8.8.8.8", 53), b"dns") == (
        b"\x01\x08\x08\x08\x08\x00\x35" + b"\x00\x03" + CRLF + b"dns"
    )


@given(
    packets=st.lists(st.tuples(destinations, st.binary(max_size=600)), max_size=8),
    data=st.data(),
)
def test_udp_stream_splits_back_into_packets_however_it_is_cut(
    packets: list[tuple[Destination, bytes]], data: st.DataObject
) -> None:
    stream = b"".join(encode_udp(d, p) for d, p in packets)
    cuts = sorted(data.draw(st.lists(st.integers(0, len(stream)), max_size=6)))
    decoder = UdpDecoder()
    got: list[TrojanUdpPacket] = []
    for start, stop in zip([0, *cuts], [*cuts, len(stream)], strict=True):
        decoder.feed(stream[start:stop])
        while (packet := decoder.next()) is not None:
            got.append(packet)
    assert [p.payload for p in got] == [p for _, p in packets]
    assert all(g.destination.port == d.port for g, (d, _) in zip(got, packets, strict=True))
    assert decoder.buffered == 0


def test_udp_packet_without_crlf_is_a_protocol_error() -> None:
    decoder = UdpDecoder()
    decoder.feed(b"\x01\x08\x08\x08\x08\x00\x35\x00\x03XXdns")
    with pytest.raises(ProtocolError):
        decoder.next()


def test_udp_payload_larger_than_its_length_field_is_refused() -> None:
    with pytest.raises(ProtocolError):
        encode_udp(Destination("1.1.1.1", 53), bytes(0x10000))
