"""Shadowsocks 2022 TCP (SIP022 §2-3, SIP022-2 TCP): each side checked against byte sequences
built here from the spec text with cryptography and blake3 directly (no real SIP022 peer ships
in Debian), each rule's violation, and round trips under any fragmentation."""

from __future__ import annotations

import base64
import itertools
import os
import random

import pytest
from blake3 import blake3
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM, ChaCha20Poly1305
from hypothesis import given, settings
from hypothesis import strategies as st

from elsewhere.codecs.ss2022 import (
    METHODS,
    Data,
    Request,
    ResponseHeader,
    SaltPool,
    TcpClient,
    TcpServer,
    TimestampError,
    UserKey,
    UserTable,
    decode_psk,
    decode_psks,
    generate_psk,
    identity_subkey,
    psk_hash,
    session_subkey,
)
from elsewhere.errors import AuthenticationError, ConfigError, ProtocolError, ReplayError
from elsewhere.session import Destination

NOW = 1_700_000_000.0
SIZES = {
    "2022-blake3-aes-128-gcm": 16,
    "2022-blake3-aes-256-gcm": 32,
    "2022-blake3-chacha20-poly1305": 32,
}
AEADS = {
    "2022-blake3-aes-128-gcm": AESGCM,
    "2022-blake3-aes-256-gcm": AESGCM,
    "2022-blake3-chacha20-poly1305": ChaCha20Poly1305,
}
AES_METHODS = ["2022-blake3-aes-128-gcm", "2022-blake3-aes-256-gcm"]
METHOD_NAMES = sorted(SIZES)
# RFC 1928 §5 address of example.com:443, written out by hand.
EXAMPLE = b"\x03\x0bexample.com\x01\xbb"
EXAMPLE_DEST = Destination("example.com", 443)
SESSION = "shadowsocks 2022 session subkey"
IDENTITY = "shadowsocks 2022 identity subkey"


# --- the spec, by hand --------------------------------------------------------------------


def derive(context: str, material: bytes, size: int) -> bytes:
    return blake3(material, derive_key_context=context).digest(size)


def nonce(counter: int) -> bytes:
    return counter.to_bytes(12, "little")


def ecb(key: bytes) -> Cipher[modes.ECB]:
    return Cipher(algorithms.AES(key), modes.ECB())


def key(method: str, seed: int) -> bytes:
    return random.Random(seed).randbytes(SIZES[method])


class Stream:
    """One direction of a SIP022 stream built or read by hand: an AEAD and its nonce counter."""

    def __init__(self, method: str, psk: bytes, salt: bytes) -> None:
        self.aead = AEADS[method](derive(SESSION, psk + salt, SIZES[method]))
        self.counter = 0

    def seal(self, plaintext: bytes) -> bytes:
        self.counter += 1
        return self.aead.encrypt(nonce(self.counter - 1), plaintext, None)

    def open(self, ciphertext: bytes) -> bytes:
        self.counter += 1
        return self.aead.decrypt(nonce(self.counter - 1), ciphertext, None)

    def chunk(self, payload: bytes) -> bytes:
        return self.seal(len(payload).to_bytes(2, "big")) + self.seal(payload)

    def read_chunks(self, raw: bytes) -> list[bytes]:
        pieces = []
        while raw:
            length = int.from_bytes(self.open(raw[:18]), "big")
            pieces.append(self.open(raw[18 : 18 + length + 16]))
            raw = raw[18 + length + 16 :]
        return pieces


def hand_request(
    method: str,
    psks: list[bytes],
    *,
    timestamp: int = int(NOW),
    address: bytes = EXAMPLE,
    padding: bytes = b"",
    payload: bytes = b"",
    kind: int = 0,
    length: int | None = None,
    salt: bytes | None = None,
) -> tuple[bytes, bytes, Stream]:
    """salt | identity headers | fixed header chunk | variable header chunk (SIP022 §3.1.2-3,
    SIP022-2 TCP). Returns the bytes, the salt, and the stream for further chunks."""
    size = SIZES[method]
    salt = salt if salt is not None else os.urandom(size)
    out = salt
    for ipsk, next_psk in itertools.pairwise(psks):
        sub = derive(IDENTITY, ipsk + salt, size)
        out += ecb(sub).encryptor().update(blake3(next_psk).digest()[:16])
    stream = Stream(method, psks[-1], salt)
    variable = address + len(padding).to_bytes(2, "big") + padding + payload
    fixed = bytes([kind]) + timestamp.to_bytes(8, "big")
    fixed += (len(variable) if length is None else length).to_bytes(2, "big")
    out += stream.seal(fixed) + stream.seal(variable)
    return out, salt, stream


def hand_response(
    method: str,
    psk: bytes,
    request_salt: bytes,
    payload: bytes,
    *,
    timestamp: int = int(NOW),
    kind: int = 1,
    salt: bytes | None = None,
) -> tuple[bytes, Stream]:
    """salt | fixed header (type, timestamp, request salt, length) | first payload chunk."""
    salt = salt if salt is not None else os.urandom(SIZES[method])
    stream = Stream(method, psk, salt)
    header = bytes([kind]) + timestamp.to_bytes(8, "big") + request_salt
    header += len(payload).to_bytes(2, "big")
    return salt + stream.seal(header) + stream.seal(payload), stream


def server(method: str, psk: bytes, pool: SaltPool | None = None, **kw: object) -> TcpServer:
    return TcpServer(method, psk, salt_pool=pool if pool is not None else SaltPool(), **kw)  # type: ignore[arg-type]


# --- keys ---------------------------------------------------------------------------------


def test_blake3_derive_key_matches_the_official_test_vectors() -> None:
    # BLAKE3 test_vectors.json: input i % 251, context "BLAKE3 2019-12-27 16:29:52 test
    # vectors context", first 32 bytes of derive_key output.
    context = "BLAKE3 2019-12-27 16:29:52 test vectors context"
    vectors = {
        0: "2cc39783c223154fea8dfb7c1b1660f2ac2dcbd1c1de8277b0b0dd39b7e50d7d",
        1: "b3e2e340a117a499c6cf2398a19ee0d29cca2bb7404c73063382693bf66cb06c",
        1023: "74a16c1c3d44368a86e1ca6df64be6a2f64cce8f09220787450722d85725dea5",
    }
    for length, expected in vectors.items():
        data = bytes(i % 251 for i in range(length))
        assert derive(context, data, 32).hex() == expected
    assert blake3(b"").hexdigest().startswith("af1349b9f5f9a1a6a0404dea36dcc949")


@pytest.mark.parametrize("method", METHOD_NAMES)
def test_session_subkey_is_blake3_derive_key_over_key_and_salt(method: str) -> None:
    psk, salt = key(method, 1), key(method, 2)
    size = SIZES[method]
    spec = decode_psk(method, base64.b64encode(psk).decode())
    assert session_subkey(METHODS[method], spec, salt) == derive(SESSION, psk + salt, size)
    assert identity_subkey(METHODS[method], psk, salt) == derive(IDENTITY, psk + salt, size)
    assert psk_hash(psk) == blake3(psk).digest()[:16]


@pytest.mark.parametrize("method", METHOD_NAMES)
def test_generated_psk_is_base64_of_the_methods_key_size(method: str) -> None:
    text = generate_psk(method)
    assert len(base64.b64decode(text, validate=True)) == SIZES[method]
    assert generate_psk(method) != text


def test_wrong_key_length_says_what_is_needed_and_how_to_get_one() -> None:
    short = base64.b64encode(bytes(16)).decode()
    with pytest.raises(ConfigError) as info:
        decode_psk("2022-blake3-aes-256-gcm", short)
    assert str(info.value).startswith(
        "2022-blake3-aes-256-gcm needs a 32-byte key, base64-encoded; "
        "generate one with `elsewhere keys add`"
    )


def test_a_password_that_is_not_base64_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="not base64"):
        decode_psk("2022-blake3-aes-128-gcm", "correct horse battery staple")


def test_unknown_method_is_a_config_error_naming_the_valid_ones() -> None:
    with pytest.raises(ConfigError, match="2022-blake3-aes-128-gcm"):
        generate_psk("2022-blake3-rc4")


def test_ipsk_upsk_key_splits_into_identity_keys_then_the_users() -> None:
    ipsk, upsk = key("2022-blake3-aes-128-gcm", 1), key("2022-blake3-aes-128-gcm", 2)
    text = f"{base64.b64encode(ipsk).decode()}:{base64.b64encode(upsk).decode()}"
    assert decode_psks("2022-blake3-aes-128-gcm", text) == (ipsk, upsk)


def test_chacha_cannot_carry_identity_headers() -> None:
    psk = generate_psk("2022-blake3-chacha20-poly1305")
    with pytest.raises(ConfigError, match="identity headers"):
        decode_psks("2022-blake3-chacha20-poly1305", f"{psk}:{psk}")
    with pytest.raises(ConfigError):
        UserTable("2022-blake3-chacha20-poly1305")


# --- server decodes a hand-built request -----------------------------------------------------


@pytest.mark.parametrize("method", METHOD_NAMES)
def test_server_accepts_a_hand_built_request_and_its_chunks(method: str) -> None:
    psk = key(method, 1)
    raw, _, stream = hand_request(method, [psk], padding=b"\x00" * 7, payload=b"GET / HTTP/1.1")
    raw += stream.chunk(b"more") + stream.chunk(b"and more")
    events = server(method, psk).feed(raw, now=NOW)
    assert events == [
        Request(EXAMPLE_DEST, b"GET / HTTP/1.1", None),
        Data(b"more"),
        Data(b"and more"),
    ]


def test_server_accepts_padding_only_request_and_ipv6_address() -> None:
    method = "2022-blake3-aes-256-gcm"
    psk = key(method, 3)
    address = b"\x04" + bytes(15) + b"\x01" + b"\x00\x35"
    raw, _, _ = hand_request(method, [psk], address=address, padding=os.urandom(900))
    assert server(method, psk).feed(raw, now=NOW) == [Request(Destination("::1", 53), b"", None)]


def test_server_accepts_a_request_arriving_one_byte_at_a_time() -> None:
    method = "2022-blake3-aes-128-gcm"
    psk = key(method, 4)
    raw, _, stream = hand_request(method, [psk], payload=b"hello")
    raw += stream.chunk(b"world")
    decoder = server(method, psk)
    events = []
    for i in range(len(raw)):
        events += decoder.feed(raw[i : i + 1], now=NOW)
    assert events == [Request(EXAMPLE_DEST, b"hello", None), Data(b"world")]


@pytest.mark.parametrize("skew", [-31, 31, -3600])
def test_request_more_than_30_seconds_off_is_treated_as_replay(skew: int) -> None:
    method = "2022-blake3-aes-128-gcm"
    psk = key(method, 5)
    raw, _, _ = hand_request(method, [psk], timestamp=int(NOW) + skew, payload=b"x")
    with pytest.raises(TimestampError) as info:
        server(method, psk).feed(raw, now=NOW)
    assert isinstance(info.value, ReplayError)
    assert info.value.skew == skew


@pytest.mark.parametrize("skew", [-30, 0, 30])
def test_request_within_30_seconds_is_accepted(skew: int) -> None:
    method = "2022-blake3-aes-128-gcm"
    psk = key(method, 5)
    raw, _, _ = hand_request(method, [psk], timestamp=int(NOW) + skew, payload=b"x")
    assert server(method, psk).feed(raw, now=NOW)[0] == Request(EXAMPLE_DEST, b"x", None)


def test_replayed_salt_is_refused_for_60_seconds() -> None:
    method = "2022-blake3-aes-256-gcm"
    psk = key(method, 6)
    raw, _, _ = hand_request(method, [psk], timestamp=int(NOW) + 25, payload=b"x")
    pool = SaltPool()
    server(method, psk, pool).feed(raw, now=NOW)
    with pytest.raises(ReplayError):
        server(method, psk, pool).feed(raw, now=NOW + 10)
    with pytest.raises(ReplayError):
        server(method, psk, pool).feed(raw, now=NOW + 55)
    # A new salt with the same content is a different connection.
    again, _, _ = hand_request(method, [psk], payload=b"x")
    assert server(method, psk, pool).feed(again, now=NOW + 10)


def test_salt_pool_forgets_salts_after_60_seconds_exactly() -> None:
    pool = SaltPool()
    pool.check_and_add(b"a" * 16, NOW)
    pool.check_and_add(b"b" * 16, NOW + 30)
    with pytest.raises(ReplayError):
        pool.check_and_add(b"a" * 16, NOW + 59.9)
    pool.check_and_add(b"c" * 16, NOW + 60)
    assert b"a" * 16 not in pool and len(pool) == 2
    pool.check_and_add(b"a" * 16, NOW + 61)
    pool.check_and_add(b"z" * 16, NOW + 1000)
    assert len(pool) == 1


def test_request_with_response_type_is_refused() -> None:
    method = "2022-blake3-aes-128-gcm"
    psk = key(method, 7)
    raw, _, _ = hand_request(method, [psk], kind=1, payload=b"x")
    with pytest.raises(ProtocolError, match="type 1"):
        server(method, psk).feed(raw, now=NOW)


def test_request_without_padding_or_payload_is_refused() -> None:
    method = "2022-blake3-aes-128-gcm"
    psk = key(method, 8)
    raw, _, _ = hand_request(method, [psk])
    with pytest.raises(ProtocolError, match="neither padding nor payload"):
        server(method, psk).feed(raw, now=NOW)


def test_padding_may_not_run_past_the_header_chunk() -> None:
    method = "2022-blake3-aes-128-gcm"
    psk = key(method, 9)
    # Padding length says 900 but the chunk carries only 10 bytes of it.
    address = EXAMPLE + (900).to_bytes(2, "big") + bytes(10)
    size = SIZES[method]
    salt = os.urandom(size)
    stream = Stream(method, psk, salt)
    fixed = b"\x00" + int(NOW).to_bytes(8, "big") + len(address).to_bytes(2, "big")
    raw = salt + stream.seal(fixed) + stream.seal(address)
    with pytest.raises(ProtocolError, match="padding runs past"):
        server(method, psk).feed(raw, now=NOW)


def test_oversize_chunk_cannot_be_declared_and_is_split_by_the_encoder() -> None:
    # The u16 length caps a chunk at 0xFFFF; the encoder splits larger writes, and a decoder
    # told 0xFFFF waits for the whole chunk before yielding anything.
    method = "2022-blake3-aes-128-gcm"
    psk = key(method, 10)
    client = TcpClient(method, [psk])
    request = client.request(EXAMPLE_DEST, b"x", now=NOW)
    big = os.urandom(0xFFFF + 100)
    wire = client.send(big)
    decoder = server(method, psk)
    assert decoder.feed(request, now=NOW) == [Request(EXAMPLE_DEST, b"x", None)]
    assert decoder.feed(wire[:-1], now=NOW) == [Data(big[:0xFFFF])]
    assert decoder.feed(wire[-1:], now=NOW) == [Data(big[0xFFFF:])]
    stream = Stream(method, psk, client.request_salt or b"")
    stream.counter = 2
    assert [len(p) for p in stream.read_chunks(wire)] == [0xFFFF, 100]


def test_variable_header_of_length_zero_is_refused() -> None:
    method = "2022-blake3-aes-128-gcm"
    psk = key(method, 11)
    raw, _, _ = hand_request(method, [psk], length=0, payload=b"x")
    with pytest.raises(ProtocolError):
        server(method, psk).feed(raw, now=NOW)


@pytest.mark.parametrize("where", [0, 20, 40, 60])
def test_tampered_or_foreign_request_fails_authentication(where: int) -> None:
    method = "2022-blake3-aes-128-gcm"
    psk = key(method, 12)
    raw, _, _ = hand_request(method, [psk], payload=b"hello")
    tampered = bytearray(raw)
    tampered[where] ^= 0x01
    with pytest.raises(AuthenticationError):
        server(method, psk).feed(bytes(tampered), now=NOW)
    with pytest.raises(AuthenticationError):
        server(method, key(method, 13)).feed(raw, now=NOW)


def test_failed_stream_stays_failed_and_never_yields_plaintext() -> None:
    method = "2022-blake3-aes-128-gcm"
    psk = key(method, 14)
    decoder = server(method, psk)
    with pytest.raises(AuthenticationError):
        decoder.feed(os.urandom(200), now=NOW)
    good, _, _ = hand_request(method, [psk], payload=b"x")
    with pytest.raises(AuthenticationError):
        decoder.feed(good, now=NOW)


def test_short_garbage_is_buffered_without_any_verdict() -> None:
    # Stealth: fewer bytes than salt + fixed header gives no event and no error, so the
    # adapter's behaviour cannot depend on how many bytes the codec wanted.
    method = "2022-blake3-aes-256-gcm"
    decoder = server(method, key(method, 15))
    assert decoder.feed(os.urandom(32 + 11 + 16 - 1), now=NOW) == []


# --- server encodes the response -------------------------------------------------------------


@pytest.mark.parametrize("method", METHOD_NAMES)
def test_server_response_carries_type_timestamp_and_request_salt(method: str) -> None:
    psk = key(method, 16)
    raw, request_salt, _ = hand_request(method, [psk], payload=b"hi")
    decoder = server(method, psk)
    decoder.feed(raw, now=NOW)
    wire = decoder.send(b"hello back", now=NOW + 1) + decoder.send(b"second", now=NOW + 2)
    size = SIZES[method]
    salt = wire[:size]
    stream = Stream(method, psk, salt)
    header = stream.open(wire[size : size + 1 + 8 + size + 2 + 16])
    assert header[0] == 1
    assert int.from_bytes(header[1:9], "big") == int(NOW) + 1
    assert header[9 : 9 + size] == request_salt
    length = int.from_bytes(header[-2:], "big")
    at = size + 1 + 8 + size + 2 + 16
    assert stream.open(wire[at : at + length + 16]) == b"hello back"
    assert stream.read_chunks(wire[at + length + 16 :]) == [b"second"]
    assert salt != request_salt


def test_server_cannot_answer_before_a_request() -> None:
    with pytest.raises(RuntimeError):
        server("2022-blake3-aes-128-gcm", bytes(16)).send(b"x", now=NOW)


# --- client encodes the request --------------------------------------------------------------


@pytest.mark.parametrize("method", METHOD_NAMES)
def test_client_request_is_salt_and_two_header_chunks_in_one_piece(method: str) -> None:
    psk = key(method, 17)
    client = TcpClient(method, [psk])
    wire = client.request(EXAMPLE_DEST, now=NOW)
    size = SIZES[method]
    salt = wire[:size]
    assert salt == client.request_salt
    stream = Stream(method, psk, salt)
    fixed = stream.open(wire[size : size + 11 + 16])
    assert fixed[0] == 0
    assert int.from_bytes(fixed[1:9], "big") == int(NOW)
    length = int.from_bytes(fixed[9:11], "big")
    variable = stream.open(wire[size + 27 :])
    assert len(variable) == length
    assert variable.startswith(EXAMPLE)
    padding = int.from_bytes(variable[len(EXAMPLE) : len(EXAMPLE) + 2], "big")
    # No payload: padding MUST be present (SIP022 §3.1.3), at most 900 bytes.
    assert 1 <= padding <= 900
    assert len(variable) == len(EXAMPLE) + 2 + padding


def test_client_request_carries_the_initial_payload_in_the_header() -> None:
    method = "2022-blake3-aes-128-gcm"
    psk = key(method, 18)
    client = TcpClient(method, [psk])
    wire = client.request(EXAMPLE_DEST, b"\x16\x03\x01" + bytes(2000), now=NOW, padding=0)
    stream = Stream(method, psk, wire[:16])
    stream.open(wire[16 : 16 + 27])
    variable = stream.open(wire[16 + 27 :])
    assert variable == EXAMPLE + b"\x00\x00" + b"\x16\x03\x01" + bytes(2000)


def test_client_pads_short_first_payloads() -> None:
    method = "2022-blake3-aes-128-gcm"
    psk = key(method, 19)
    paddings = set()
    for _ in range(20):
        client = TcpClient(method, [psk])
        wire = client.request(EXAMPLE_DEST, b"hi", now=NOW)
        paddings.add(len(wire))
    assert len(paddings) > 1


def test_client_initial_payload_larger_than_a_header_chunk_continues_in_chunks() -> None:
    method = "2022-blake3-aes-256-gcm"
    psk = key(method, 20)
    client = TcpClient(method, [psk])
    big = os.urandom(100_000)
    events = server(method, psk).feed(client.request(EXAMPLE_DEST, big, now=NOW), now=NOW)
    request = events[0]
    assert isinstance(request, Request)
    rest = b"".join(e.payload for e in events[1:] if isinstance(e, Data))
    assert request.payload + rest == big


# --- client decodes a hand-built response ----------------------------------------------------


@pytest.mark.parametrize("method", METHOD_NAMES)
def test_client_accepts_a_hand_built_response(method: str) -> None:
    psk = key(method, 21)
    client = TcpClient(method, [psk])
    client.request(EXAMPLE_DEST, b"x", now=NOW)
    assert client.request_salt is not None
    raw, stream = hand_response(method, psk, client.request_salt, b"HTTP/1.1 200 OK")
    raw += stream.chunk(b"body")
    assert client.feed(raw, now=NOW) == [ResponseHeader(), Data(b"HTTP/1.1 200 OK"), Data(b"body")]


def test_client_refuses_a_response_to_another_request() -> None:
    method = "2022-blake3-aes-128-gcm"
    psk = key(method, 22)
    client = TcpClient(method, [psk])
    client.request(EXAMPLE_DEST, b"x", now=NOW)
    raw, _ = hand_response(method, psk, os.urandom(16), b"hello")
    with pytest.raises(AuthenticationError, match="request salt"):
        client.feed(raw, now=NOW)


def test_client_refuses_a_stale_response() -> None:
    method = "2022-blake3-aes-128-gcm"
    psk = key(method, 23)
    client = TcpClient(method, [psk])
    client.request(EXAMPLE_DEST, b"x", now=NOW)
    assert client.request_salt is not None
    raw, _ = hand_response(method, psk, client.request_salt, b"x", timestamp=int(NOW) - 40)
    with pytest.raises(TimestampError):
        client.feed(raw, now=NOW)


def test_client_refuses_a_request_reflected_back_as_response() -> None:
    method = "2022-blake3-aes-128-gcm"
    psk = key(method, 24)
    client = TcpClient(method, [psk])
    client.request(EXAMPLE_DEST, b"x", now=NOW)
    assert client.request_salt is not None
    raw, _ = hand_response(method, psk, client.request_salt, b"x", kind=0)
    with pytest.raises(ProtocolError, match="type 0"):
        client.feed(raw, now=NOW)


def test_client_remembers_response_salts_in_its_pool() -> None:
    method = "2022-blake3-aes-128-gcm"
    psk = key(method, 25)
    pool = SaltPool()
    first = TcpClient(method, [psk], salt_pool=pool)
    first.request(EXAMPLE_DEST, b"x", now=NOW)
    assert first.request_salt is not None
    salt = os.urandom(16)
    raw, _ = hand_response(method, psk, first.request_salt, b"x", salt=salt)
    first.feed(raw, now=NOW)
    assert salt in pool
    # The same response replayed to another connection is refused (it names another request).
    second = TcpClient(method, [psk], salt_pool=pool)
    second.request(EXAMPLE_DEST, b"x", now=NOW)
    with pytest.raises(AuthenticationError):
        second.feed(raw, now=NOW)


def test_empty_first_response_still_opens_the_stream() -> None:
    method = "2022-blake3-aes-128-gcm"
    psk = key(method, 26)
    client = TcpClient(method, [psk])
    decoder = server(method, psk)
    decoder.feed(client.request(EXAMPLE_DEST, b"x", now=NOW), now=NOW)
    wire = decoder.send(b"", now=NOW) + decoder.send(b"later", now=NOW)
    assert client.feed(wire, now=NOW) == [ResponseHeader(), Data(b"later")]


# --- identity headers (SIP022-2) -------------------------------------------------------------


@pytest.mark.parametrize("method", AES_METHODS)
def test_multi_user_server_finds_the_user_named_by_a_hand_built_identity_header(
    method: str,
) -> None:
    ipsk, alice, bob = key(method, 30), key(method, 31), key(method, 32)
    users = UserTable(method, [UserKey("alice", alice)])
    users.add("bob", base64.b64encode(bob).decode())
    raw, _, stream = hand_request(method, [ipsk, bob], payload=b"hi")
    raw += stream.chunk(b"data")
    decoder = server(method, ipsk, users=users)
    assert decoder.feed(raw, now=NOW) == [Request(EXAMPLE_DEST, b"hi", "bob"), Data(b"data")]
    assert decoder.user == "bob"
    # The response is keyed with the user's PSK, not the identity PSK.
    wire = decoder.send(b"reply", now=NOW)
    size = SIZES[method]
    Stream(method, bob, wire[:size]).open(wire[size : size + 11 + size + 16])


def test_identity_header_for_an_unknown_user_fails_authentication() -> None:
    method = "2022-blake3-aes-128-gcm"
    ipsk, alice, mallory = key(method, 33), key(method, 34), key(method, 35)
    users = UserTable(method, [UserKey("alice", alice)])
    raw, _, _ = hand_request(method, [ipsk, mallory], payload=b"hi")
    with pytest.raises(AuthenticationError, match="no user"):
        server(method, ipsk, users=users).feed(raw, now=NOW)
    # Right user, wrong identity key: the header decrypts to nothing known.
    raw, _, _ = hand_request(method, [key(method, 36), alice], payload=b"hi")
    with pytest.raises(AuthenticationError):
        server(method, ipsk, users=users).feed(raw, now=NOW)


def test_revoking_a_user_takes_effect_on_the_next_connection() -> None:
    method = "2022-blake3-aes-128-gcm"
    ipsk, alice = key(method, 37), key(method, 38)
    users = UserTable(method, [UserKey("alice", alice)])
    pool = SaltPool()
    client = TcpClient(method, [ipsk, alice])
    assert server(method, ipsk, pool, users=users).feed(
        client.request(EXAMPLE_DEST, b"x", now=NOW), now=NOW
    ) == [Request(EXAMPLE_DEST, b"x", "alice")]
    assert users.remove("alice") and "alice" not in users
    client = TcpClient(method, [ipsk, alice])
    with pytest.raises(AuthenticationError):
        server(method, ipsk, pool, users=users).feed(
            client.request(EXAMPLE_DEST, b"x", now=NOW), now=NOW
        )


def test_two_users_may_not_share_a_key() -> None:
    method = "2022-blake3-aes-128-gcm"
    users = UserTable(method, [UserKey("alice", key(method, 39))])
    with pytest.raises(ConfigError, match="same key"):
        users.add("bob", key(method, 39))
    with pytest.raises(ConfigError, match="16-byte key"):
        users.add("carol", bytes(32))


def test_client_writes_one_identity_header_per_identity_key() -> None:
    method = "2022-blake3-aes-256-gcm"
    ipsk0, ipsk1, upsk = key(method, 40), key(method, 41), key(method, 42)
    client = TcpClient(method, [ipsk0, ipsk1, upsk])
    wire = client.request(EXAMPLE_DEST, b"x", now=NOW)
    salt = wire[:32]
    first = ecb(derive(IDENTITY, ipsk0 + salt, 32)).decryptor().update(wire[32:48])
    second = ecb(derive(IDENTITY, ipsk1 + salt, 32)).decryptor().update(wire[48:64])
    assert first == blake3(ipsk1).digest()[:16]
    assert second == blake3(upsk).digest()[:16]
    stream = Stream(method, upsk, salt)
    assert stream.open(wire[64 : 64 + 27])[0] == 0


def test_client_with_identity_key_reaches_a_multi_user_server_and_back() -> None:
    method = "2022-blake3-aes-128-gcm"
    ipsk, alice = key(method, 43), key(method, 44)
    users = UserTable(method, [UserKey("alice", alice)])
    client = TcpClient(
        method, decode_psks(method, ":".join(base64.b64encode(k).decode() for k in (ipsk, alice)))
    )
    decoder = server(method, ipsk, users=users)
    assert decoder.feed(client.request(EXAMPLE_DEST, b"ping", now=NOW), now=NOW)[0] == Request(
        EXAMPLE_DEST, b"ping", "alice"
    )
    assert client.feed(decoder.send(b"pong", now=NOW), now=NOW) == [
        ResponseHeader(),
        Data(b"pong"),
    ]


# --- round trips under any fragmentation -----------------------------------------------------


def split(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({c % (len(data) + 1) for c in cuts})
    edges = [0, *points, len(data)]
    return [data[a:b] for a, b in itertools.pairwise(edges)]


@settings(max_examples=60, deadline=None)
@given(
    method=st.sampled_from(METHOD_NAMES),
    first=st.binary(max_size=300),
    writes=st.lists(st.binary(min_size=1, max_size=3000), max_size=5),
    cuts=st.lists(st.integers(min_value=0), max_size=12),
    multi_user=st.booleans(),
)
def test_round_trip_survives_any_fragmentation(
    method: str,
    first: bytes,
    writes: list[bytes],
    cuts: list[int],
    multi_user: bool,
) -> None:
    psk = key(method, 50)
    users = None
    psks = [psk]
    if multi_user and method in AES_METHODS:
        users = UserTable(method, [UserKey("u", key(method, 51))])
        psks = [psk, key(method, 51)]
    client = TcpClient(method, psks)
    decoder = server(method, psk, users=users)
    wire = client.request(EXAMPLE_DEST, first, now=NOW) + b"".join(client.send(w) for w in writes)
    events = []
    for piece in split(wire, cuts):
        events += decoder.feed(piece, now=NOW)
    assert isinstance(events[0], Request) and events[0].destination == EXAMPLE_DEST
    got = events[0].payload + b"".join(e.payload for e in events[1:] if isinstance(e, Data))
    assert got == first + b"".join(writes)

    reply = b"".join(decoder.send(w, now=NOW) for w in [b"r", *writes])
    back = []
    for piece in split(reply, cuts):
        back += client.feed(piece, now=NOW)
    assert back[0] == ResponseHeader()
    assert b"".join(e.payload for e in back[1:] if isinstance(e, Data)) == b"r" + b"".join(writes)
