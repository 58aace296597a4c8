import os
import struct

from hypothesis import given
from hypothesis import strategies as st

from elsewhere.codecs.vision import (
    CMD_CONTINUE,
    CMD_DIRECT,
    CMD_END,
    MAX_FRAME_CONTENT,
    TrafficState,
    VisionReader,
    VisionWriter,
    is_complete_records,
)

UUID = bytes(range(16))


def server_hello(cipher: int = 0x1301, tls13: bool = True) -> bytes:
    """A ServerHello record as XtlsFilterTls reads it: session id length at byte 43."""
    extensions = b"\x00\x2b\x00\x02\x03\x04" if tls13 else b"\xff\x01\x00\x01\x00"
    body = (b"\x03\x03" + os.urandom(32) + b"\x20" + os.urandom(32)
            + struct.pack("!HB", cipher, 0) + struct.pack("!H", len(extensions)) + extensions)
    message = b"\x02" + len(body).to_bytes(3, "big") + body
    return b"\x16\x03\x03" + len(message).to_bytes(2, "big") + message


def app_data(size: int) -> bytes:
    return b"\x17\x03\x03" + size.to_bytes(2, "big") + os.urandom(size)


def frames(data: bytes, uuid: bool) -> list[tuple[int, bytes, int]]:
    """Parse frames the way the spec text lays them out: (command, content, padding length)."""
    out = []
    offset = 16 if uuid else 0
    if uuid:
        assert data[:16] == UUID
    while offset < len(data):
        command, content, padding = struct.unpack_from("!BHH", data, offset)
        offset += 5
        out.append((command, data[offset : offset + content], padding))
        offset += content + padding
    assert offset == len(data)
    return out


def test_the_first_frame_carries_the_uuid_and_short_content_is_padded_to_at_least_900() -> None:
    writer = VisionWriter(TrafficState(), UUID)
    hello = b"\x16\x03\x01\x00\x05\x01\x00\x00\x01\x00"  # a ClientHello record, as Vision sees it
    out, direct = writer.encode(hello)
    [(command, content, padding)] = frames(out, uuid=True)
    assert (command, content, direct) == (CMD_CONTINUE, hello, False)
    assert 900 <= len(content) + padding < 1400
    assert writer.state.is_tls
    second, _ = writer.encode(b"more")
    assert frames(second, uuid=False)[0][1] == b"more"  # the UUID only once


def test_inner_tls13_ends_the_padding_with_direct_and_then_writes_are_raw() -> None:
    state = TrafficState()
    server = VisionWriter(state, UUID)
    client_side = VisionReader(TrafficState(), UUID)
    sent = []
    for chunk in (server_hello(), app_data(3000), app_data(40)):
        out, direct = server.encode(chunk)
        sent.append((out, direct))
    assert state.enable_direct
    (hello_out, d0), (first_app, d1), (raw, d2) = sent
    assert not d0 and d1 and d2
    assert frames(first_app, uuid=False)[-1][0] == CMD_DIRECT
    assert raw[:3] == b"\x17\x03\x03" and len(raw) == 45  # untouched
    plain0, switched0 = client_side.decode(hello_out)
    plain1, switched1 = client_side.decode(first_app)
    assert plain0.startswith(b"\x16\x03\x03") and not switched0
    assert plain1[:3] == b"\x17\x03\x03" and switched1
    assert client_side.decode(raw) == (raw, True)


def test_inner_tls12_or_ccm8_ends_with_end_and_stays_inside_the_outer_tls() -> None:
    for hello in (server_hello(tls13=False), server_hello(cipher=0x1305)):
        state = TrafficState()
        writer = VisionWriter(state, UUID)
        writer.encode(hello)
        out, direct = writer.encode(app_data(100))
        assert not direct and not state.enable_direct
        assert frames(out, uuid=False)[-1][0] == CMD_END
        assert writer.encode(b"later") == (b"later", False)


def test_not_tls_ends_padding_a_packet_before_the_filter_gives_up() -> None:
    state = TrafficState()
    writer = VisionWriter(state, UUID)
    reader = VisionReader(TrafficState(), UUID)
    sent = [writer.encode(os.urandom(50)) for _ in range(8)]
    commands = [frames(out, uuid=i == 0)[-1][0] if i < 7 else None
                for i, (out, _) in enumerate(sent)]
    assert commands[:6] == [CMD_CONTINUE] * 6 and commands[6] == CMD_END
    assert all(not direct for _, direct in sent)
    got = b"".join(reader.decode(out)[0] for out, _ in sent)
    assert len(got) == 8 * 50


def test_large_writes_are_cut_under_xrays_buffer_and_read_back_whole() -> None:
    writer = VisionWriter(TrafficState(), UUID)
    reader = VisionReader(TrafficState(), UUID)
    data = os.urandom(50_000)
    out, _ = writer.encode(data)
    parsed = frames(out, uuid=True)
    assert all(len(content) + padding <= MAX_FRAME_CONTENT for _, content, padding in parsed)
    assert b"".join(content for _, content, _ in parsed) == data
    assert reader.decode(out)[0] == data


@given(st.lists(st.binary(min_size=0, max_size=3000), min_size=1, max_size=10),
       st.integers(1, 700))
def test_frames_cut_anywhere_between_reads_unpad_to_the_same_stream(
    writes: list[bytes], cut: int
) -> None:
    writer = VisionWriter(TrafficState(), UUID)
    wire = b"".join(writer.encode(w)[0] for w in writes)
    reader = VisionReader(TrafficState(), UUID)
    first, rest = wire[:max(cut, 21)], wire[max(cut, 21):]
    got = reader.decode(first)[0]
    for start in range(0, len(rest), cut):
        got += reader.decode(rest[start : start + cut])[0]
    assert got == b"".join(writes)


def test_a_stream_without_the_uuid_is_passed_as_it_is() -> None:
    reader = VisionReader(TrafficState(), UUID)
    assert reader.decode(b"\x00" * 40) == (b"\x00" * 40, False)


def test_complete_records_means_whole_application_data_records_only() -> None:
    assert is_complete_records(app_data(10) + app_data(20))
    assert not is_complete_records(app_data(10)[:-1])
    assert not is_complete_records(server_hello())
    assert not is_complete_records(b"")
