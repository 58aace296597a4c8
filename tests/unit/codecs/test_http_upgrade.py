import pytest

from elsewhere.codecs.http_upgrade import (
    MAX_HEAD,
    accept_key,
    parse_request,
    parse_response,
    request_head,
    upgrade_response,
)
from elsewhere.errors import ProtocolError

KEY = "dGhlIHNhbXBsZSBub25jZQ=="


def test_request_is_a_get_with_upgrade_and_connection_and_a_websocket_key() -> None:
    head = request_head("example.com", "/up", KEY)
    assert head == (
        b"GET /up HTTP/1.1\r\nHost: example.com\r\nUpgrade: websocket\r\n"
        b"Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
        b"Sec-WebSocket-Version: 13\r\n\r\n"
    )


def test_bytes_after_the_head_are_already_the_stream_with_no_framing() -> None:
    head = request_head("example.com", "/up", KEY)
    request = parse_request(head + b"\x00first bytes", path="/up")
    assert request is not None
    assert (head + b"\x00first bytes")[request.header_length :] == b"\x00first bytes"


def test_response_is_101_proving_the_key_when_there_was_one() -> None:
    with_key = upgrade_response(KEY)
    assert with_key.startswith(b"HTTP/1.1 101 Switching Protocols\r\n")
    assert f"Sec-WebSocket-Accept: {accept_key(KEY)}\r\n".encode() in with_key
    assert b"Sec-WebSocket-Accept" not in upgrade_response()
    parsed = parse_response(with_key + b"data")
    assert parsed is not None and parsed.header_length == len(with_key)


def test_extra_headers_come_first_like_a_web_server_writes_them() -> None:
    response = upgrade_response(None, [("Server", "nginx/1.22.1")])
    assert response.startswith(b"HTTP/1.1 101 Switching Protocols\r\nServer: nginx/1.22.1\r\n")


def test_path_is_compared_without_query_and_after_percent_decoding() -> None:
    head = request_head("h", "/a%20b?ed=2560", KEY)
    request = parse_request(head, path="/a b")
    assert request is not None and request.query == "ed=2560"


def test_a_path_without_leading_slash_means_the_same_as_with_one() -> None:
    assert parse_request(request_head("h", "up", KEY), path="/up") is not None


def test_host_is_compared_without_port_or_case() -> None:
    head = request_head("Example.COM:443", "/up", KEY)
    assert parse_request(head, path="/up", host="example.com") is not None
    with pytest.raises(ProtocolError):
        parse_request(head, path="/up", host="example.org")


@pytest.mark.parametrize(
    "raw",
    [
        b"POST /up HTTP/1.1\r\n",
        b"\x16\x03\x01\x00",
        b"GET /up HTTP/1.0\r\n",
        b"GET /up HTTP/1.1\r\nHost: h\r\n\r\n",  # a browser asking for the page
        b"GET /up HTTP/1.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n",  # no Host
        b"GET /up HTTP/1.1\r\nHost: h\r\nbroken header\r\n\r\n",
    ],
)
def test_anything_but_an_upgrade_to_our_path_is_refused_as_soon_as_it_shows(raw: bytes) -> None:
    with pytest.raises(ProtocolError):
        parse_request(raw, path="/up")


def test_a_head_that_never_ends_is_refused_at_the_bound() -> None:
    raw = b"GET /up HTTP/1.1\r\nX: " + b"a" * MAX_HEAD
    assert parse_request(raw[: MAX_HEAD - 1], path="/up") is None
    with pytest.raises(ProtocolError):
        parse_request(raw, path="/up")


@pytest.mark.parametrize(
    "response",
    [
        b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n",
        b"HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\n\r\n",
        b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\r\n",
    ],
)
def test_client_refuses_anything_but_a_101_upgrade(response: bytes) -> None:
    with pytest.raises(ProtocolError):
        parse_response(response)


def test_incomplete_response_asks_for_more() -> None:
    response = upgrade_response(KEY)
    for cut in range(len(response)):
        assert parse_response(response[:cut]) is None
