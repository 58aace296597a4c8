"""SIP004 AEAD codec: the spec's wire layout, round trips under any fragmentation, tampering,
multi-key trial decryption, UDP packets and salt replay protection."""

from __future__ import annotations

import itertools
import random

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM, ChaCha20Poly1305
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from hypothesis import given, settings
from hypothesis import strategies as st

from elsewhere.codecs.address import NeedMoreData
from elsewhere.codecs.shadowsocks import (
    MAX_PAYLOAD,
    METHODS,
    TAG_SIZE,
    Cipher,
    SaltFilter,
    StreamDecryptor,
    StreamEncryptor,
    decrypt_packet,
    derive_key,
    encrypt_packet,
    find_cipher,
    find_packet_cipher,
    min_probe_bytes,
)
from elsewhere.errors import AuthenticationError, ConfigError, ProtocolError

# Captured from OpenSSL itself: `openssl enc -aes-256-cbc -md md5 -P -nosalt -pass pass:...`
# prints EVP_BytesToKey's key (aes-128-cbc gives the first 16 bytes).
OPENSSL_KEYS = {
    "foobar": "3858F62230AC3C915F300C664312C63F568378529614D22DDB49237D2F60BFDF",
    "correct horse battery staple": (
        "9CC2AE8A1BA7A93DA39B46FC1019C481F5EED4F36A1DE6859CAD92C665562831"
    ),
    "пароль": "E242F36F4F95F12966DA8FA2EFD5999276B50907A37FEC638BCA8150DEF65E55",
}

methods = st.sampled_from(sorted(METHODS))


def payload(size: int, seed: int = 0) -> bytes:
    return random.Random(seed).randbytes(size)


@pytest.mark.parametrize("password", sorted(OPENSSL_KEYS))
def test_master_key_is_openssl_evp_bytes_to_key_with_md5(password: str) -> None:
    expected = bytes.fromhex(OPENSSL_KEYS[password])
    assert derive_key(password, 32) == expected
    assert derive_key(password, 16) == expected[:16]


def test_unknown_method_is_a_config_error_naming_the_valid_ones() -> None:
    with pytest.raises(ConfigError, match="chacha20-ietf-poly1305, aes-256-gcm, aes-128-gcm"):
        Cipher.from_password("rc4-md5", "x")


def test_cipher_repr_hides_the_key() -> None:
    cipher = Cipher("aes-128-gcm", b"K" * 16)
    assert "KKKK" not in repr(cipher) and "aes-128-gcm" in repr(cipher)


def test_key_of_the_wrong_size_is_refused() -> None:
    with pytest.raises(ConfigError, match="16-byte key"):
        Cipher("aes-128-gcm", bytes(32))


@pytest.mark.parametrize("method", sorted(METHODS))
def test_first_chunk_is_salt_then_sealed_length_then_sealed_payload(method: str) -> None:
    cipher = Cipher.from_password(method, "spec")
    spec = METHODS[method]
    salt = bytes(range(spec.salt_size))
    wire = StreamEncryptor(cipher, salt=salt).encrypt(b"hello")

    # Built independently from the spec: HKDF-SHA1 subkey, nonces 0 and 1, little-endian.
    subkey = HKDF(hashes.SHA1(), spec.key_size, salt, b"ss-subkey").derive(cipher.key)
    aead = ChaCha20Poly1305(subkey) if method.startswith("chacha") else AESGCM(subkey)
    nonce = [n.to_bytes(12, "little") for n in range(2)]
    expected = (
        salt + aead.encrypt(nonce[0], b"\x00\x05", None) + aead.encrypt(nonce[1], b"hello", None)
    )
    assert wire == expected


def test_payload_is_split_into_chunks_of_at_most_0x3fff_bytes() -> None:
    cipher = Cipher.from_password("aes-128-gcm", "p")
    wire = StreamEncryptor(cipher).encrypt(bytes(MAX_PAYLOAD + 1))
    chunk_overhead = 2 + TAG_SIZE + TAG_SIZE
    assert len(wire) == 16 + 2 * chunk_overhead + MAX_PAYLOAD + 1


def test_salt_is_sent_once_and_empty_writes_send_nothing() -> None:
    encryptor = StreamEncryptor(Cipher.from_password("aes-256-gcm", "p"))
    assert encryptor.encrypt(b"") == b""
    first = encryptor.encrypt(b"a")
    second = encryptor.encrypt(b"a")
    assert first.startswith(encryptor.salt)
    assert len(first) == 32 + len(second)


def test_salts_are_random_per_session() -> None:
    cipher = Cipher.from_password("chacha20-ietf-poly1305", "p")
    assert StreamEncryptor(cipher).salt != StreamEncryptor(cipher).salt


@settings(max_examples=60, deadline=None)
@given(
    method=methods,
    writes=st.lists(st.integers(0, 40_000), min_size=1, max_size=4),
    cuts=st.lists(st.floats(0, 1), max_size=12),
    seed=st.integers(0, 2**32),
)
def test_round_trip_survives_any_fragmentation(
    method: str, writes: list[int], cuts: list[float], seed: int
) -> None:
    cipher = Cipher.from_password(method, "fragment me")
    encryptor = StreamEncryptor(cipher)
    plain = [payload(size, seed + i) for i, size in enumerate(writes)]
    wire = b"".join(encryptor.encrypt(p) for p in plain)
    points = sorted({0, len(wire), *(int(c * len(wire)) for c in cuts)})

    decryptor = StreamDecryptor(cipher)
    received = [decryptor.decrypt(memoryview(wire)[a:b]) for a, b in itertools.pairwise(points)]
    assert b"".join(received) == b"".join(plain)
    assert decryptor.salt == (encryptor.salt if wire else None)


def test_nothing_is_returned_before_a_whole_chunk_arrived() -> None:
    cipher = Cipher.from_password("aes-128-gcm", "p")
    wire = StreamEncryptor(cipher).encrypt(b"secret")
    decryptor = StreamDecryptor(cipher)
    assert decryptor.decrypt(wire[:10]) == b""
    assert decryptor.salt is None
    assert decryptor.decrypt(wire[10:-1]) == b""
    assert decryptor.salt == wire[:16]
    assert decryptor.decrypt(wire[-1:]) == b"secret"


def test_trickled_bytes_and_bulk_reads_give_the_same_plaintext() -> None:
    cipher = Cipher.from_password("chacha20-ietf-poly1305", "p")
    data = payload(200_000)
    wire = StreamEncryptor(cipher).encrypt(data)
    decryptor = StreamDecryptor(cipher)
    # Odd read sizes force the buffered path and its compaction.
    pieces = [decryptor.decrypt(wire[i : i + 777]) for i in range(0, len(wire), 777)]
    assert b"".join(pieces) == data


@settings(max_examples=80, deadline=None)
@given(method=methods, position=st.floats(0, 1, exclude_max=True), bit=st.integers(0, 7))
def test_flipping_any_bit_fails_authentication(method: str, position: float, bit: int) -> None:
    cipher = Cipher.from_password(method, "p")
    wire = bytearray(StreamEncryptor(cipher).encrypt(payload(3000)))
    wire[int(position * len(wire))] ^= 1 << bit
    decryptor = StreamDecryptor(cipher)
    with pytest.raises(AuthenticationError):
        decryptor.decrypt(wire)


def test_a_failed_stream_stays_failed() -> None:
    cipher = Cipher.from_password("aes-256-gcm", "p")
    wire = bytearray(StreamEncryptor(cipher).encrypt(b"x" * 100))
    wire[40] ^= 0xFF
    decryptor = StreamDecryptor(cipher)
    with pytest.raises(AuthenticationError):
        decryptor.decrypt(wire)
    with pytest.raises(AuthenticationError):
        decryptor.decrypt(b"")


def test_wrong_password_fails_authentication() -> None:
    wire = StreamEncryptor(Cipher.from_password("aes-256-gcm", "right")).encrypt(b"x")
    with pytest.raises(AuthenticationError):
        StreamDecryptor(Cipher.from_password("aes-256-gcm", "wrong")).decrypt(wire)


def test_length_above_0x3fff_is_a_protocol_error_not_an_auth_error() -> None:
    cipher = Cipher.from_password("chacha20-ietf-poly1305", "p")
    salt = bytes(32)
    sealed = cipher.session(salt).encrypt(bytes(12), (MAX_PAYLOAD + 1).to_bytes(2, "big"), None)
    decryptor = StreamDecryptor(cipher)
    with pytest.raises(ProtocolError, match="above") as caught:
        decryptor.decrypt(salt + sealed)
    assert not isinstance(caught.value, AuthenticationError)
    with pytest.raises(ProtocolError):
        decryptor.decrypt(b"more")


def test_prefix_appears_verbatim_at_the_start_of_the_stream() -> None:
    tls_like = b"\x16\x03\x01\x00\xa8\x01\x01"
    cipher = Cipher.from_password("chacha20-ietf-poly1305", "p")
    encryptor = StreamEncryptor(cipher, prefix=tls_like)
    wire = encryptor.encrypt(b"GET /")
    assert wire.startswith(tls_like)
    assert StreamDecryptor(cipher).decrypt(wire) == b"GET /"


@pytest.mark.parametrize(("method", "limit"), [("aes-256-gcm", 16), ("aes-128-gcm", 8)])
def test_prefix_may_not_eat_the_salts_randomness(method: str, limit: int) -> None:
    cipher = Cipher.from_password(method, "p")
    StreamEncryptor(cipher, prefix=b"P" * limit)
    with pytest.raises(ConfigError, match=f"at most {limit} bytes"):
        StreamEncryptor(cipher, prefix=b"P" * (limit + 1))


def fifty_keys() -> list[Cipher]:
    names = sorted(METHODS)
    return [Cipher.from_password(names[i % 3], f"user-{i}") for i in range(50)]


def test_find_cipher_picks_the_key_that_sent_the_stream() -> None:
    ciphers = fifty_keys()
    wire = StreamEncryptor(ciphers[37]).encrypt(b"\x03\x0binstagram.com\x01\xbbhello")
    found = find_cipher(ciphers, wire)
    assert found is not None
    index, decryptor = found
    assert index == 37
    assert decryptor.decrypt(wire) == b"\x03\x0binstagram.com\x01\xbbhello"


def test_found_decryptor_continues_with_later_bytes() -> None:
    ciphers = fifty_keys()
    encryptor = StreamEncryptor(ciphers[2])
    first, later = encryptor.encrypt(b"first"), encryptor.encrypt(b"later")
    found = find_cipher(ciphers, first[: min_probe_bytes(ciphers)])
    assert found is not None and found[0] == 2
    decryptor = found[1]
    assert decryptor.decrypt(first) + decryptor.decrypt(later) == b"firstlater"


def test_find_cipher_returns_none_for_garbage() -> None:
    assert find_cipher(fifty_keys(), payload(100)) is None


def test_find_cipher_asks_for_enough_bytes() -> None:
    ciphers = fifty_keys()
    assert min_probe_bytes(ciphers) == 32 + 2 + 16
    with pytest.raises(NeedMoreData):
        find_cipher(ciphers, bytes(min_probe_bytes(ciphers) - 1))


@settings(max_examples=30, deadline=None)
@given(method=methods, data=st.binary(max_size=2000))
def test_udp_packet_round_trip(method: str, data: bytes) -> None:
    cipher = Cipher.from_password(method, "udp")
    packet = encrypt_packet(cipher, data)
    assert len(packet) == cipher.salt_size + len(data) + TAG_SIZE
    assert decrypt_packet(cipher, packet) == data


def test_udp_packet_is_salt_then_payload_sealed_under_zero_nonce() -> None:
    cipher = Cipher.from_password("aes-256-gcm", "udp")
    salt = bytes(range(32))
    subkey = HKDF(hashes.SHA1(), 32, salt, b"ss-subkey").derive(cipher.key)
    sealed = AESGCM(subkey).encrypt(bytes(12), b"dns", None)
    assert encrypt_packet(cipher, b"dns", salt) == salt + sealed


@pytest.mark.parametrize("position", [0, 20, 40, -1])
def test_tampered_udp_packet_fails_authentication(position: int) -> None:
    cipher = Cipher.from_password("chacha20-ietf-poly1305", "udp")
    packet = bytearray(encrypt_packet(cipher, b"query"))
    packet[position] ^= 1
    with pytest.raises(AuthenticationError):
        decrypt_packet(cipher, packet)


def test_short_udp_packet_fails_authentication() -> None:
    with pytest.raises(AuthenticationError):
        decrypt_packet(Cipher.from_password("aes-128-gcm", "udp"), bytes(31))


def test_find_packet_cipher_picks_the_key_or_none() -> None:
    ciphers = fifty_keys()
    assert find_packet_cipher(ciphers, encrypt_packet(ciphers[11], b"dgram")) == (11, b"dgram")
    assert find_packet_cipher(ciphers, payload(80)) is None


def test_replayed_salt_is_recognised() -> None:
    salts = SaltFilter()
    salt = payload(32)
    assert salts.check_and_add(salt)
    assert not salts.check_and_add(memoryview(salt))


def test_salt_filter_memory_is_bounded_but_keeps_recent_salts() -> None:
    salts = SaltFilter(capacity=100)
    seen = [i.to_bytes(32, "big") for i in range(1000)]
    assert all(salts.check_and_add(s) for s in seen)
    assert len(salts) <= 100
    # The latest capacity/2 salts are always remembered; the oldest are forgotten.
    assert not any(salts.check_and_add(s) for s in seen[-50:])
    assert salts.check_and_add(seen[0])
