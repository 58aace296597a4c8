import pytest
from hypothesis import given
from hypothesis import strategies as st

from elsewhere.codecs.address import NeedMoreData, decode_address, encode_address
from elsewhere.errors import ProtocolError
from elsewhere.session import Destination


def test_ipv4_is_encoded_as_rfc1928_says() -> None:
    assert encode_address(Destination("1.2.3.4", 80)) == b"\x01\x01\x02\x03\x04\x00\x50"


def test_ipv6_is_compressed_when_decoded() -> None:
    raw = b"\x04" + bytes(15) + b"\x01" + b"\x01\xbb"
    assert decode_address(raw) == (Destination("::1", 443), 19)


def test_domain_keeps_its_name_unresolved() -> None:
    raw = encode_address(Destination("instagram.com", 443))
    assert raw == b"\x03\x0dinstagram.com\x01\xbb"


@pytest.mark.parametrize(
    "raw", [b"", b"\x01\x01\x02", b"\x03", b"\x03\x05abc", b"\x04" + bytes(10)]
)
def test_truncated_address_asks_for_more(raw: bytes) -> None:
    with pytest.raises(NeedMoreData):
        decode_address(raw)


@pytest.mark.parametrize("raw", [b"\x02abcdef", b"\x03\x00\x00\x50", b"\xff" + bytes(20)])
def test_malformed_address_is_a_protocol_error(raw: bytes) -> None:
    with pytest.raises(ProtocolError):
        decode_address(raw)


hosts = st.one_of(
    st.ip_addresses().map(str),
    st.from_regex(r"[a-z0-9]([a-z0-9-]{0,20}\.){0,3}[a-z]{2,6}", fullmatch=True),
)


@given(host=hosts, port=st.integers(0, 65535), tail=st.binary(max_size=8))
def test_round_trip_leaves_the_tail(host: str, port: int, tail: bytes) -> None:
    raw = encode_address(Destination(host, port)) + tail
    dest, end = decode_address(raw)
    assert dest == Destination(host, port) or dest.ip == Destination(host, port).ip
    assert raw[end:] == tail
