import os

import pytest

from elsewhere.codecs.address import NeedMoreData
from elsewhere.codecs.tls_hello import SESSION_ID_OFFSET, parse_client_hello
from elsewhere.errors import ProtocolError
from elsewhere.lab.clienthello import python_default_hello
from hellos import as_records, client_hello_message

RANDOM = bytes(range(32))
SHARE = (0x001D, bytes(range(100, 132)))


def test_openssls_own_hello_parses_with_its_32_byte_session_id_and_x25519_share() -> None:
    record = python_default_hello("cdn.test")
    hello = parse_client_hello(record)
    assert hello.server_name == "cdn.test"
    assert hello.offers_tls13
    assert len(hello.session_id) == 32
    assert hello.key_share(0x001D) is not None and len(hello.key_share(0x001D) or b"") == 32
    assert hello.consumed == len(record)
    assert hello.message == record[5:]
    assert hello.message[SESSION_ID_OFFSET : SESSION_ID_OFFSET + 32] == hello.session_id


def test_fields_come_back_as_they_were_written_and_the_message_is_the_transcript_bytes() -> None:
    message = client_hello_message(random=RANDOM, session_id=b"\x07" * 32, key_shares=(SHARE,))
    hello = parse_client_hello(as_records(message) + b"\x14\x03\x03\x00\x01\x01")
    assert hello.random == RANDOM
    assert hello.session_id == b"\x07" * 32
    assert hello.key_shares == (SHARE,)
    assert hello.alpn == ("h2", "http/1.1")
    assert hello.message == message
    assert hello.consumed == len(message) + 5  # the ChangeCipherSpec after it is not its


def test_a_hello_split_over_records_is_joined_and_each_short_prefix_needs_more() -> None:
    message = client_hello_message(random=RANDOM, key_shares=(SHARE,))
    stream = as_records(message, fragment=50)
    assert parse_client_hello(stream).message == message
    for cut in (0, 4, 5, 40, len(stream) - 1):
        with pytest.raises(NeedMoreData):
            parse_client_hello(stream[:cut])


def test_random_bytes_and_other_records_are_not_a_hello() -> None:
    with pytest.raises(ProtocolError):
        parse_client_hello(b"\x17\x03\x03\x00\x05hello")
    with pytest.raises(ProtocolError):
        parse_client_hello(b"\x16\x03\x01\x00\x04\x02\x00\x00\x00")  # a ServerHello
    for _ in range(50):
        junk = os.urandom(300)
        try:
            parse_client_hello(junk)
        except NeedMoreData:
            pass
        except ProtocolError:
            pass
