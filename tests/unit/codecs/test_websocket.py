import base64
from collections.abc import Callable

import pytest
from hypothesis import given
from hypothesis import strategies as st

from elsewhere.codecs import websocket as websocket_codec
from elsewhere.codecs.websocket import (
    MASK_CHUNK,
    Close,
    Data,
    Event,
    FrameDecoder,
    Opcode,
    Ping,
    Pong,
    accept_key,
    accept_response,
    apply_mask,
    apply_mask_python,
    encode_close,
    encode_frame,
    handshake_request,
    new_key,
    parse_handshake,
    parse_handshake_response,
)
from elsewhere.errors import ProtocolError

RFC_KEY = bytes.fromhex("37fa213d")  # the masking key of RFC 6455 §5.7


def events(decoder: FrameDecoder) -> list[Event]:
    got = []
    while (event := decoder.next_event()) is not None:
        got.append(event)
    return got


def received(decoder: FrameDecoder, raw: bytes) -> list[Event]:
    decoder.feed(raw)
    return events(decoder)


# §1.3 and §4: the opening handshake


def test_accept_key_is_the_rfc_6455_section_1_3_example() -> None:
    assert accept_key("dGhlIHNhbXBsZSBub25jZQ==") == "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="


def test_client_handshake_is_accepted_by_the_server_and_the_server_answer_by_the_client() -> None:
    key = new_key()
    request = handshake_request("cdn.example.com", "/chat", key)
    assert request.startswith(b"GET /chat HTTP/1.1\r\nHost: cdn.example.com\r\n")
    parsed = parse_handshake(request + b"\x82", path="/chat", host="cdn.example.com")
    assert parsed is not None and parsed.websocket_key == key
    assert parsed.header_length == len(request)
    assert parsed.early_data == b"" and parsed.protocol is None
    response = accept_response(key)
    assert response.startswith(b"HTTP/1.1 101 Switching Protocols\r\n")
    assert parse_handshake_response(response + b"\x82\x00", key) == len(response)


def test_early_data_travels_base64url_in_sec_websocket_protocol_and_is_echoed() -> None:
    first = b"\x00" * 17 + b"\xfb\xff"  # bytes whose base64 needs the URL-safe alphabet
    request = handshake_request("h", "/ws", new_key(), early_data=first)
    token = base64.urlsafe_b64encode(first).rstrip(b"=")
    assert b"Sec-WebSocket-Protocol: " + token + b"\r\n" in request
    parsed = parse_handshake(request, path="/ws")
    assert parsed is not None and parsed.early_data == first
    assert parsed.protocol == token.decode()
    reply = accept_response("dGhlIHNhbXBsZSBub25jZQ==", parsed.protocol)
    assert b"Sec-WebSocket-Protocol: " + token + b"\r\n" in reply


def test_early_data_in_standard_base64_with_padding_is_read_as_xray_reads_it() -> None:
    head = handshake_request("h", "/ws", new_key()).replace(
        b"\r\n\r\n", b"\r\nSec-WebSocket-Protocol: +/+/+w==\r\n\r\n"
    )
    parsed = parse_handshake(head, path="/ws")
    assert parsed is not None and parsed.early_data == b"\xfb\xff\xbf\xfb"


def test_a_real_subprotocol_list_is_not_early_data_and_is_not_echoed() -> None:
    head = handshake_request("h", "/ws", new_key()).replace(
        b"\r\n\r\n", b"\r\nSec-WebSocket-Protocol: chat, superchat\r\n\r\n"
    )
    parsed = parse_handshake(head, path="/ws")
    assert parsed is not None and parsed.early_data == b"" and parsed.protocol is None


def test_early_data_over_the_limit_is_refused() -> None:
    request = handshake_request("h", "/ws", new_key(), early_data=bytes(101))
    with pytest.raises(ProtocolError):
        parse_handshake(request, path="/ws", max_early_data=100)


@pytest.mark.parametrize(
    ("old", "new"),
    [
        (b"Sec-WebSocket-Version: 13", b"Sec-WebSocket-Version: 8"),
        (b"Sec-WebSocket-Key: ", b"Sec-WebSocket-Key: AAAA"),  # 21 bytes, not 16
        (b"Sec-WebSocket-Key: ", b"X-Key: "),
        (b"GET /ws ", b"GET /other "),
        (b"Host: h\r\n", b"Host: elsewhere\r\n"),
        (b"Upgrade: websocket", b"Upgrade: h2c"),
        (b"Connection: Upgrade", b"Connection: keep-alive"),
    ],
)
def test_a_handshake_that_is_not_for_us_is_a_protocol_error(old: bytes, new: bytes) -> None:
    request = handshake_request("h", "/ws", new_key())
    assert old in request
    with pytest.raises(ProtocolError):
        parse_handshake(request.replace(old, new, 1), path="/ws", host="h")


def test_every_strict_prefix_of_a_good_handshake_asks_for_more() -> None:
    request = handshake_request("h", "/ws", new_key(), early_data=b"hello")
    for cut in range(len(request)):
        assert parse_handshake(request[:cut], path="/ws", host="h") is None


def test_the_handshake_parser_never_consumes_the_callers_buffer() -> None:
    buf = bytearray(b"GET / HTTP/1.1\r\nHost: h\r\n\r\n")
    with pytest.raises(ProtocolError):
        parse_handshake(buf, path="/ws")
    assert buf == b"GET / HTTP/1.1\r\nHost: h\r\n\r\n"


@pytest.mark.parametrize(
    "response",
    [
        b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n",
        b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        b"Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\r\n",  # proof of another key
    ],
)
def test_client_refuses_a_server_that_did_not_accept_our_key(response: bytes) -> None:
    with pytest.raises(ProtocolError):
        parse_handshake_response(response, new_key())


# §5.7 examples


def test_single_frame_unmasked_text_message() -> None:
    raw = bytes.fromhex("810548656c6c6f")
    assert encode_frame(b"Hello", mask=False, opcode=Opcode.TEXT) == raw
    assert received(FrameDecoder(client=True), raw) == [Data(b"Hello")]


def test_single_frame_masked_text_message() -> None:
    raw = bytes.fromhex("818537fa213d7f9f4d5158")
    assert encode_frame(b"Hello", mask=True, opcode=Opcode.TEXT, mask_key=RFC_KEY) == raw
    assert received(FrameDecoder(client=False), raw) == [Data(b"Hello")]


def test_fragmented_unmasked_text_message() -> None:
    raw = bytes.fromhex("010348656c80026c6f")
    got = received(FrameDecoder(client=True), raw)
    assert b"".join(e.payload for e in got if isinstance(e, Data)) == b"Hello"


def test_unmasked_ping_and_masked_pong() -> None:
    ping = bytes.fromhex("890548656c6c6f")
    pong = bytes.fromhex("8a8537fa213d7f9f4d5158")
    assert encode_frame(b"Hello", mask=False, opcode=Opcode.PING) == ping
    assert encode_frame(b"Hello", mask=True, opcode=Opcode.PONG, mask_key=RFC_KEY) == pong
    assert received(FrameDecoder(client=True), ping) == [Ping(b"Hello")]
    assert received(FrameDecoder(client=False), pong) == [Pong(b"Hello")]


def test_256_bytes_in_one_unmasked_frame_use_a_16_bit_length() -> None:
    assert encode_frame(bytes(256), mask=False)[:4] == bytes.fromhex("827e0100")


def test_64_kib_in_one_unmasked_frame_use_a_64_bit_length() -> None:
    payload = bytes(range(256)) * 256
    raw = encode_frame(payload, mask=False)
    assert raw[:10] == bytes.fromhex("827f0000000000010000")
    got = received(FrameDecoder(client=True), raw)
    assert b"".join(e.payload for e in got if isinstance(e, Data)) == payload


# §5.1, §5.2, §5.4, §5.5: what each side must refuse or answer


def test_server_refuses_an_unmasked_frame_from_a_client() -> None:
    with pytest.raises(ProtocolError, match="unmasked"):
        received(FrameDecoder(client=False), encode_frame(b"x", mask=False))


def test_client_accepts_unmasked_frames_and_refuses_masked_ones() -> None:
    assert received(FrameDecoder(client=True), encode_frame(b"x", mask=False)) == [Data(b"x")]
    with pytest.raises(ProtocolError, match="masked"):
        received(FrameDecoder(client=True), encode_frame(b"x", mask=True))


@pytest.mark.parametrize("client", [True, False])
def test_a_ping_is_answered_with_a_pong_carrying_its_payload(client: bool) -> None:
    decoder = FrameDecoder(client=client)
    assert received(decoder, encode_frame(b"beat", mask=not client, opcode=Opcode.PING)) == [
        Ping(b"beat")
    ]
    peer = FrameDecoder(client=not client)
    assert received(peer, decoder.data_to_send()) == [Pong(b"beat")]
    assert decoder.data_to_send() == b""


def test_a_close_is_answered_with_a_close_echoing_its_status() -> None:
    server = FrameDecoder(client=False)
    got = received(
        server, encode_close(1001, "going away", mask=True) + encode_frame(b"late", mask=True)
    )
    assert got == [Close(1001, "going away")]
    assert server.closed
    client = FrameDecoder(client=True)
    assert received(client, server.data_to_send()) == [Close(1001, "")]


def test_closing_first_then_getting_the_answer_closes_without_a_second_close() -> None:
    client = FrameDecoder(client=True)
    client.close()
    sent = client.data_to_send()
    server = FrameDecoder(client=False)
    assert received(server, sent) == [Close(1000, "")]
    assert received(client, server.data_to_send()) == [Close(1000, "")]
    assert client.closed and client.data_to_send() == b""


def test_an_empty_close_is_answered_with_an_empty_close() -> None:
    server = FrameDecoder(client=False)
    assert received(server, encode_close(None, mask=True)) == [Close(None, "")]
    assert server.data_to_send() == b"\x88\x00"


def test_control_frames_may_interleave_a_fragmented_message() -> None:
    raw = (
        encode_frame(b"Hel", mask=False, opcode=Opcode.BINARY, fin=False)
        + encode_frame(b"?", mask=False, opcode=Opcode.PING)
        + encode_frame(b"lo", mask=False, opcode=Opcode.CONTINUATION)
    )
    assert received(FrameDecoder(client=True), raw) == [Data(b"Hel"), Ping(b"?"), Data(b"lo")]


@pytest.mark.parametrize(
    ("raw", "why"),
    [
        (encode_frame(b"x", mask=False, opcode=Opcode.CONTINUATION), "continuation"),
        (
            encode_frame(b"a", mask=False, fin=False) + encode_frame(b"b", mask=False),
            "unfinished",
        ),
        (bytes((0x80 | 0x3, 0)), "reserved opcode"),
        (bytes((0x80 | 0xB, 0)), "reserved opcode"),
        (bytes((0xC0 | 0x2, 0)), "reserved bits"),
        (encode_frame(bytes(126), mask=False, opcode=Opcode.PING), "control"),
        (encode_frame(b"", mask=False, opcode=Opcode.PING, fin=False), "control"),
        (b"\x82\x7f\x80" + bytes(7), "top bit"),
        (b"\x88\x01\x03", "one-byte"),
    ],
)
def test_frames_that_break_section_5_are_protocol_errors(raw: bytes, why: str) -> None:
    with pytest.raises(ProtocolError, match=why):
        received(FrameDecoder(client=True), raw)


def test_frames_over_the_size_bound_are_refused_from_their_header_alone() -> None:
    decoder = FrameDecoder(client=True, max_frame_size=1000)
    with pytest.raises(ProtocolError, match="over 1000"):
        received(decoder, encode_frame(bytes(1001), mask=False)[:4])


def test_a_large_frame_streams_out_as_it_arrives_without_waiting_for_its_end() -> None:
    payload = bytes(range(256)) * 64
    raw = encode_frame(payload, mask=True, mask_key=RFC_KEY)
    server = FrameDecoder(client=False)
    assert received(server, raw[:100]) == [Data(payload[: 100 - 8])]
    assert received(server, raw[100:]) == [Data(payload[100 - 8 :])]


# masking and round trips


@pytest.mark.parametrize(
    "size", [0, 1, 3, 4, 5, 125, MASK_CHUNK - 1, MASK_CHUNK, MASK_CHUNK + 3, 3 * MASK_CHUNK + 7]
)
@pytest.mark.parametrize("mask", [apply_mask, apply_mask_python])
def test_masking_is_xor_with_the_key_repeated(size: int, mask: Callable[..., bytes]) -> None:
    data = bytes(range(251)) * (size // 251 + 1)
    data = data[:size]
    reference = bytes(b ^ RFC_KEY[i % 4] for i, b in enumerate(data))
    assert mask(data, RFC_KEY) == reference
    assert mask(reference, RFC_KEY) == data
    assert mask(memoryview(bytearray(data)), RFC_KEY) == reference


def test_masking_runs_in_compiled_code() -> None:
    # The pure-Python fallback is correct but ~60x slower; the lock installs websockets' wheel,
    # whose C routine is what keeps WebSocket uploads at TLS speed.
    assert websocket_codec._apply_mask_c is not None


@given(
    messages=st.lists(
        st.tuples(st.binary(max_size=3000), st.integers(1, 4), st.booleans()), max_size=6
    ),
    client=st.booleans(),
    data=st.data(),
)
def test_any_frames_cut_anywhere_give_back_the_bytes_and_a_pong_per_ping(
    messages: list[tuple[bytes, int, bool]], client: bool, data: st.DataObject
) -> None:
    """Messages split into 1-4 fragments, each optionally followed by a ping, masked when the
    sender is a client, fed to the other side in arbitrary pieces."""
    sender_masks = not client
    stream = b""
    pings = []
    for index, (payload, parts, ping) in enumerate(messages):
        step = max(1, -(-len(payload) // parts))
        pieces = [payload[i : i + step] for i in range(0, len(payload), step)] or [b""]
        for n, piece in enumerate(pieces):
            opcode = Opcode.BINARY if n == 0 else Opcode.CONTINUATION
            last = n == len(pieces) - 1
            stream += encode_frame(piece, mask=sender_masks, opcode=opcode, fin=last)
        if ping:
            pings.append(str(index).encode())
            stream += encode_frame(pings[-1], mask=sender_masks, opcode=Opcode.PING)
    cuts = sorted(data.draw(st.lists(st.integers(0, len(stream)), max_size=8)))
    decoder = FrameDecoder(client=client)
    got: list[Event] = []
    for start, stop in zip([0, *cuts], [*cuts, len(stream)], strict=True):
        got += received(decoder, stream[start:stop])
    assert b"".join(e.payload for e in got if isinstance(e, Data)) == b"".join(
        p for p, _, _ in messages
    )
    assert [e.payload for e in got if isinstance(e, Ping)] == pings
    peer = FrameDecoder(client=not client)
    assert [e.payload for e in received(peer, decoder.data_to_send())] == pings
