import contextlib
import uuid

import pytest
from hypothesis import given
from hypothesis import strategies as st

from elsewhere.codecs.vless import (
    CMD_TCP,
    CMD_UDP,
    MAX_HEADER,
    UdpDecoder,
    encode_request,
    encode_response,
    encode_udp,
    parse_request,
    parse_response,
    parse_uuid,
)
from elsewhere.errors import AuthenticationError, ConfigError, ProtocolError
from elsewhere.session import Destination

ID = "bf000d23-0752-40b4-affe-68f7707a9661"
ALICE = parse_uuid(ID)
USERS = {ALICE: "alice"}

hosts = st.one_of(
    st.ip_addresses().map(str),
    st.from_regex(r"[a-z0-9]([a-z0-9-]{0,20}\.){0,3}[a-z]{2,6}", fullmatch=True),
)
destinations = st.builds(Destination, hosts, st.integers(0, 65535))


def test_uuid_in_any_usual_spelling_gives_its_16_bytes() -> None:
    assert bytes.fromhex(ID.replace("-", "")) == ALICE
    assert parse_uuid(ID.upper()) == ALICE
    assert parse_uuid("{" + ID + "}") == ALICE


def test_custom_id_maps_to_uuid5_of_the_nil_namespace_as_xray_documents() -> None:
    assert parse_uuid("我爱🍉老师1314") == uuid.UUID("5783a3e7-e373-51cd-8642-c83782b807c5").bytes


@pytest.mark.parametrize("bad", ["", "bf000d23-0752-40b4-affe-68f7707a966", "x" * 31])
def test_an_id_that_is_neither_uuid_nor_short_custom_id_is_a_config_error(bad: str) -> None:
    with pytest.raises(ConfigError, match="VLESS id"):
        parse_uuid(bad)


def test_request_puts_port_before_vless_numbered_address_type() -> None:
    raw = encode_request(ALICE, CMD_TCP, Destination("example.com", 443), b"hi")
    assert raw == b"\x00" + ALICE + b"\x00\x01" + b"\x01\xbb\x02\x0bexample.com" + b"hi"
    ipv4 = encode_request(ALICE, CMD_UDP, Destination("1.2.3.4", 53))
    assert ipv4[-7:] == b"\x00\x35\x01\x01\x02\x03\x04"
    ipv6 = encode_request(ALICE, CMD_TCP, Destination("::1", 80))
    assert ipv6[-19:] == b"\x00\x50\x03" + bytes(15) + b"\x01"


def test_server_finds_user_destination_and_payload() -> None:
    raw = encode_request(ALICE, CMD_TCP, Destination("example.com", 443), b"hi")
    request = parse_request(raw, USERS)
    assert request is not None
    assert (request.user, request.destination, request.network) == (
        "alice",
        Destination("example.com", 443),
        "tcp",
    )
    assert raw[request.header_length :] == b"hi"


@given(dest=destinations, payload=st.binary(max_size=64), command=st.sampled_from([1, 2]))
def test_every_strict_prefix_asks_for_more_and_the_whole_parses(
    dest: Destination, payload: bytes, command: int
) -> None:
    raw = encode_request(ALICE, command, dest, payload)
    request = parse_request(raw, USERS)
    assert request is not None and request.command == command
    assert request.destination == dest or request.destination.ip == dest.ip
    assert raw[request.header_length :] == payload
    for cut in range(request.header_length):
        assert parse_request(raw[:cut], USERS) is None


def test_addons_without_a_flow_are_skipped() -> None:
    seed = b"\x12\x03abc"  # field 2 (Seed), bytes "abc"
    raw = b"\x00" + ALICE + bytes((len(seed),)) + seed + b"\x01\x00\x50\x01\x7f\x00\x00\x01"
    request = parse_request(raw, USERS)
    assert request is not None and request.destination == Destination("127.0.0.1", 80)
    assert request.header_length == len(raw)


def test_a_requested_flow_is_refused_unless_the_server_allows_it() -> None:
    flow = b"\x0a\x10xtls-rprx-vision"
    raw = b"\x00" + ALICE + bytes((len(flow),)) + flow + b"\x01\x01\xbb\x01\x01\x02\x03\x04"
    with pytest.raises(ProtocolError, match="flow"):
        parse_request(raw, USERS)
    request = parse_request(raw, USERS, frozenset({"xtls-rprx-vision"}))
    assert request is not None and request.flow == "xtls-rprx-vision"
    assert request.header_length == len(raw)
    dest = Destination("1.2.3.4", 443)
    assert encode_request(ALICE, CMD_TCP, dest, flow="xtls-rprx-vision") == raw


def test_unknown_uuid_is_an_authentication_error_so_the_adapter_falls_back() -> None:
    raw = encode_request(bytes(16), CMD_TCP, Destination("a.b", 1))
    with pytest.raises(AuthenticationError):
        parse_request(raw, USERS)


def test_mux_is_refused_as_unsupported() -> None:
    raw = b"\x00" + ALICE + b"\x00\x03"
    with pytest.raises(ProtocolError, match="mux"):
        parse_request(raw, USERS)


@pytest.mark.parametrize(
    "raw",
    [
        b"GET / HTTP/1.1\r\n\r\n",
        b"\x01" + ALICE,  # version 1 does not exist
        b"\x00" + ALICE + b"\x00\x04\x00\x50\x01\x01\x02\x03\x04",  # command 4
        b"\x00" + ALICE + b"\x00\x01\x00\x50\x04\x01\x02\x03\x04",  # SOCKS' IPv6 number
        b"\x00" + ALICE + b"\x00\x01\x00\x50\x02\x00",  # empty domain
        b"\x00" + ALICE + b"\x03\x0a\x05ab\x01",  # a flow field longer than the addons
        b"\x00" + ALICE + b"\x01\x0b\x01",  # wire type 3 (groups) is not in Addons
    ],
)
def test_anything_else_is_a_protocol_error(raw: bytes) -> None:
    with pytest.raises(ProtocolError):
        parse_request(raw, USERS)


def test_parsing_never_consumes_the_callers_buffer() -> None:
    buf = bytearray(b"\x16\x03\x01")
    with pytest.raises(ProtocolError):
        parse_request(buf, USERS)
    assert buf == b"\x16\x03\x01"


@given(command=st.sampled_from([1, 2]), tail=st.binary(min_size=MAX_HEADER))
def test_a_header_never_needs_more_than_its_longest_possible_length(
    command: int, tail: bytes
) -> None:
    raw = (b"\x00" + ALICE + tail)[:MAX_HEADER]
    with contextlib.suppress(ProtocolError):
        assert parse_request(raw, USERS) is not None


def test_response_is_version_and_empty_addons() -> None:
    assert encode_response() == b"\x00\x00"
    assert parse_response(b"") is None
    assert parse_response(b"\x00") is None
    assert parse_response(b"\x00\x00data") == 2
    assert parse_response(b"\x00\x02ab") == 4
    assert parse_response(b"\x00\x02a") is None
    with pytest.raises(ProtocolError):
        parse_response(b"\x01\x00")


def test_udp_packet_is_length_prefixed() -> None:
    assert encode_udp(b"dns") == b"\x00\x03dns"
    with pytest.raises(ProtocolError):
        encode_udp(bytes(0x10000))


@given(packets=st.lists(st.binary(max_size=2000), max_size=8), data=st.data())
def test_udp_stream_splits_back_into_packets_however_it_is_cut(
    packets: list[bytes], data: st.DataObject
) -> None:
    stream = b"".join(encode_udp(p) for p in packets)
    cuts = sorted(data.draw(st.lists(st.integers(0, len(stream)), max_size=6)))
    decoder = UdpDecoder()
    got: list[bytes] = []
    for start, stop in zip([0, *cuts], [*cuts, len(stream)], strict=True):
        decoder.feed(stream[start:stop])
        while (packet := decoder.next()) is not None:
            got.append(packet)
    assert got == packets
    assert decoder.buffered == 0
