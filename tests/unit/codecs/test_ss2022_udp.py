"""Shadowsocks 2022 UDP (SIP022 §3.2, §4.1, SIP022-2 UDP): packets built and read here by hand
from the spec with cryptography and blake3, the XChaCha20-Poly1305 draft's vectors, the
sliding-window replay filter, sessions, and identity-header user lookup."""

from __future__ import annotations

import itertools
import os
import random

import pytest
from blake3 import blake3
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from hypothesis import given, settings
from hypothesis import strategies as st

from elsewhere.codecs.ss2022 import TimestampError, UserKey, UserTable
from elsewhere.codecs.ss2022_udp import (
    WINDOW_SIZE,
    ClientPacket,
    SlidingWindow,
    UdpClient,
    UdpServer,
    XChaCha20Poly1305,
    hchacha20,
)
from elsewhere.errors import AuthenticationError, ConfigError, ProtocolError, ReplayError
from elsewhere.session import Destination

NOW = 1_700_000_000.0
AES = ["2022-blake3-aes-128-gcm", "2022-blake3-aes-256-gcm"]
CHACHA = "2022-blake3-chacha20-poly1305"
SIZES = {AES[0]: 16, AES[1]: 32, CHACHA: 32}
SESSION = "shadowsocks 2022 session subkey"
DNS = b"\x01\x08\x08\x08\x08\x00\x35"  # RFC 1928 §5: 8.8.8.8:53
DNS_DEST = Destination("8.8.8.8", 53)
WEB = b"\x01\x01\x02\x03\x04\x01\xbb"  # 1.2.3.4:443
WEB_DEST = Destination("1.2.3.4", 443)


def key(method: str, seed: int) -> bytes:
    return random.Random(seed).randbytes(SIZES[method])


def subkey(psk: bytes, salt: bytes) -> bytes:
    return blake3(psk + salt, derive_key_context=SESSION).digest(len(psk))


def ecb(key: bytes) -> Cipher[modes.ECB]:
    return Cipher(algorithms.AES(key), modes.ECB())


def xor(a: bytes, b: bytes) -> bytes:
    return bytes(x ^ y for x, y in zip(a, b, strict=True))


def client_body(
    *, timestamp: int = int(NOW), kind: int = 0, padding: bytes = b"", address: bytes = DNS
) -> bytes:
    """SIP022 §3.2.3 client-to-server main header (no payload)."""
    return (
        bytes([kind])
        + timestamp.to_bytes(8, "big")
        + len(padding).to_bytes(2, "big")
        + padding
        + address
    )


def hand_client_packet(
    method: str,
    psks: list[bytes],
    session_id: bytes,
    packet_id: int,
    payload: bytes,
    **body: object,
) -> bytes:
    """A client packet per SIP022 §3.2 (AES) or §4.1 (ChaCha), with SIP022-2 identity headers
    when `psks` holds identity keys before the user's."""
    separate = session_id + packet_id.to_bytes(8, "big")
    plaintext = client_body(**body) + payload  # type: ignore[arg-type]
    if method == CHACHA:
        nonce = os.urandom(24)
        return nonce + XChaCha20Poly1305(psks[0]).encrypt(nonce, separate + plaintext, None)
    out = ecb(psks[0]).encryptor().update(separate)
    for ipsk, next_psk in itertools.pairwise(psks):
        out += ecb(ipsk).encryptor().update(xor(blake3(next_psk).digest()[:16], separate))
    aead = AESGCM(subkey(psks[-1], session_id))
    return out + aead.encrypt(separate[4:], plaintext, None)


def read_server_packet(method: str, psk: bytes, packet: bytes) -> tuple[bytes, int, bytes]:
    """Open a server packet by hand: (server session ID, packet ID, body after them)."""
    if method == CHACHA:
        body = XChaCha20Poly1305(psk).decrypt(packet[:24], packet[24:], None)
        return body[:8], int.from_bytes(body[8:16], "big"), body[16:]
    separate = ecb(psk).decryptor().update(packet[:16])
    body = AESGCM(subkey(psk, separate[:8])).decrypt(separate[4:], packet[16:], None)
    return separate[:8], int.from_bytes(separate[8:], "big"), body


def hand_server_packet(
    method: str,
    psk: bytes,
    server_id: bytes,
    packet_id: int,
    client_id: bytes,
    payload: bytes,
    *,
    timestamp: int = int(NOW),
    kind: int = 1,
    address: bytes = DNS,
) -> bytes:
    separate = server_id + packet_id.to_bytes(8, "big")
    body = bytes([kind]) + timestamp.to_bytes(8, "big") + client_id + b"\x00\x00" + address
    body += payload
    if method == CHACHA:
        nonce = os.urandom(24)
        return nonce + XChaCha20Poly1305(psk).encrypt(nonce, separate + body, None)
    aead = AESGCM(subkey(psk, server_id))
    return ecb(psk).encryptor().update(separate) + aead.encrypt(separate[4:], body, None)


# --- XChaCha20-Poly1305 (draft-irtf-cfrg-xchacha-03) -------------------------------------------


def test_hchacha20_matches_the_draft_section_2_2_1_vector() -> None:
    key = bytes(range(32))
    nonce = bytes.fromhex("000000090000004a0000000031415927")
    assert hchacha20(key, nonce).hex() == (
        "82413b4227b27bfed30e42508a877d73a0f9e4d58a74a853c12ec41326d3ecdc"
    )


XCHACHA_KEY = bytes.fromhex("808182838485868788898a8b8c8d8e8f909192939495969798999a9b9c9d9e9f")
XCHACHA_IV = bytes.fromhex("404142434445464748494a4b4c4d4e4f5051525354555657")
XCHACHA_AAD = bytes.fromhex("50515253c0c1c2c3c4c5c6c7")
XCHACHA_PLAINTEXT = (
    b"Ladies and Gentlemen of the class of '99: If I could offer you only one tip for the "
    b"future, sunscreen would be it."
)
XCHACHA_CIPHERTEXT = bytes.fromhex(
    "bd6d179d3e83d43b9576579493c0e939572a1700252bfaccbed2902c21396cbb"
    "731c7f1b0b4aa6440bf3a82f4eda7e39ae64c6708c54c216cb96b72e1213b452"
    "2f8c9ba40db5d945b11b69b982c1bb9e3f3fac2bc369488f76b2383565d3fff9"
    "21f9664c97637da9768812f615c68b13b52e"
)
XCHACHA_TAG = bytes.fromhex("c0875924c1c7987947deafd8780acf49")


def test_xchacha20_poly1305_matches_the_draft_appendix_a_3_1_vector() -> None:
    aead = XChaCha20Poly1305(XCHACHA_KEY)
    sealed = aead.encrypt(XCHACHA_IV, XCHACHA_PLAINTEXT, XCHACHA_AAD)
    assert sealed == XCHACHA_CIPHERTEXT + XCHACHA_TAG
    assert aead.decrypt(XCHACHA_IV, sealed, XCHACHA_AAD) == XCHACHA_PLAINTEXT


def test_xchacha20_poly1305_refuses_a_flipped_bit() -> None:
    sealed = bytearray(XCHACHA_CIPHERTEXT + XCHACHA_TAG)
    sealed[5] ^= 0x80
    with pytest.raises(InvalidTag):
        XChaCha20Poly1305(XCHACHA_KEY).decrypt(XCHACHA_IV, bytes(sealed), XCHACHA_AAD)


# --- sliding window ----------------------------------------------------------------------------


def test_window_accepts_new_ids_and_refuses_replays() -> None:
    window = SlidingWindow()
    for packet_id in (0, 1, 2, 5):
        assert window.check(packet_id)
        window.accept(packet_id)
    assert not window.check(2) and not window.check(5)
    assert window.check(3) and window.check(4) and window.check(6)


def test_window_accepts_reordering_within_its_width_and_drops_older() -> None:
    window = SlidingWindow()
    window.accept(10_000)
    assert window.check(10_000 - WINDOW_SIZE + 1)
    window.accept(10_000 - WINDOW_SIZE + 1)
    assert not window.check(10_000 - WINDOW_SIZE + 1)
    assert not window.check(10_000 - WINDOW_SIZE)
    assert not window.check(0)


def test_window_jump_forward_forgets_what_fell_out() -> None:
    window = SlidingWindow()
    for packet_id in range(100):
        window.accept(packet_id)
    window.accept(100 + 5 * WINDOW_SIZE)
    assert not window.check(100)  # now far too old
    assert window.check(100 + 5 * WINDOW_SIZE - 1)
    window.accept(2**64 - 1)  # the largest u64 packet ID
    assert not window.check(2**64 - 1) and window.check(2**64 - 2)


@settings(max_examples=50, deadline=None)
@given(st.lists(st.integers(min_value=0, max_value=5000), max_size=200))
def test_window_agrees_with_a_plain_set_model(ids: list[int]) -> None:
    window = SlidingWindow()
    seen: set[int] = set()
    newest = -1
    for packet_id in ids:
        expected = packet_id not in seen and packet_id > newest - WINDOW_SIZE
        assert window.check(packet_id) == expected
        if expected:
            window.accept(packet_id)
            seen.add(packet_id)
            newest = max(newest, packet_id)


# --- server receives hand-built packets ---------------------------------------------------------


@pytest.mark.parametrize("method", [*AES, CHACHA])
def test_server_accepts_a_hand_built_client_packet(method: str) -> None:
    psk = key(method, 1)
    session_id = bytes.fromhex("0102030405060708")
    packet = hand_client_packet(method, [psk], session_id, 0, b"dns query", padding=bytes(5))
    server = UdpServer(method, psk)
    assert server.receive(packet, now=NOW) == ClientPacket(
        session_id, 0, DNS_DEST, b"dns query", None
    )
    assert session_id in server and len(server) == 1


@pytest.mark.parametrize("method", [AES[0], CHACHA])
def test_replayed_packet_id_is_dropped_and_reordered_ones_accepted(method: str) -> None:
    psk = key(method, 2)
    sid = os.urandom(8)
    server = UdpServer(method, psk)
    packets = {i: hand_client_packet(method, [psk], sid, i, b"%d" % i) for i in range(6)}
    for i in (0, 3, 1):
        assert server.receive(packets[i], now=NOW).packet_id == i
    with pytest.raises(ReplayError):
        server.receive(packets[3], now=NOW)
    # Same packet ID again in a freshly sealed packet: still a replay.
    with pytest.raises(ReplayError):
        server.receive(hand_client_packet(method, [psk], sid, 1, b"again"), now=NOW)
    assert server.receive(packets[2], now=NOW).payload == b"2"


def test_packet_older_than_the_window_is_dropped() -> None:
    method = AES[1]
    psk = key(method, 3)
    sid = os.urandom(8)
    server = UdpServer(method, psk)
    old = hand_client_packet(method, [psk], sid, 5, b"old")
    server.receive(hand_client_packet(method, [psk], sid, 4, b"x"), now=NOW)
    server.receive(hand_client_packet(method, [psk], sid, 5 + WINDOW_SIZE, b"x"), now=NOW)
    with pytest.raises(ReplayError):
        server.receive(old, now=NOW)


@pytest.mark.parametrize("method", [AES[0], CHACHA])
def test_stale_packet_is_refused_and_creates_no_session(method: str) -> None:
    psk = key(method, 4)
    server = UdpServer(method, psk)
    packet = hand_client_packet(method, [psk], os.urandom(8), 0, b"x", timestamp=int(NOW) - 31)
    with pytest.raises(TimestampError):
        server.receive(packet, now=NOW)
    assert len(server) == 0


def test_server_packet_type_from_a_client_is_refused() -> None:
    method = AES[0]
    psk = key(method, 5)
    packet = hand_client_packet(method, [psk], os.urandom(8), 0, b"x", kind=1)
    with pytest.raises(ProtocolError, match="type 1"):
        UdpServer(method, psk).receive(packet, now=NOW)


@pytest.mark.parametrize("method", [AES[0], CHACHA])
def test_garbage_fails_authentication_and_creates_no_session(method: str) -> None:
    server = UdpServer(method, key(method, 6))
    with pytest.raises(AuthenticationError):
        server.receive(os.urandom(120), now=NOW)
    with pytest.raises(ProtocolError):
        server.receive(os.urandom(20), now=NOW)
    assert len(server) == 0


def test_a_packet_for_another_key_fails_authentication() -> None:
    method = AES[1]
    packet = hand_client_packet(method, [key(method, 7)], os.urandom(8), 0, b"x")
    with pytest.raises(AuthenticationError):
        UdpServer(method, key(method, 8)).receive(packet, now=NOW)


# --- server sends ----------------------------------------------------------------------------


@pytest.mark.parametrize("method", [*AES, CHACHA])
def test_server_reply_carries_its_own_session_and_the_clients(method: str) -> None:
    psk = key(method, 9)
    client_id = os.urandom(8)
    server = UdpServer(method, psk)
    server.receive(hand_client_packet(method, [psk], client_id, 0, b"q"), now=NOW)
    first = server.send(client_id, DNS_DEST, b"answer", now=NOW + 1)
    second = server.send(client_id, DNS_DEST, b"answer 2", now=NOW + 1)
    server_id, packet_id, body = read_server_packet(method, psk, first)
    assert server_id != client_id and packet_id == 0
    assert body[0] == 1
    assert int.from_bytes(body[1:9], "big") == int(NOW) + 1
    assert body[9:17] == client_id
    padding = int.from_bytes(body[17:19], "big")
    assert body[19 + padding :] == DNS + b"answer"
    assert read_server_packet(method, psk, second)[:2] == (server_id, 1)


def test_sending_to_an_unknown_session_is_a_key_error() -> None:
    with pytest.raises(KeyError):
        UdpServer(AES[0], key(AES[0], 10)).send(bytes(8), DNS_DEST, b"x", now=NOW)


def test_session_is_keyed_on_client_session_id_not_on_who_sends() -> None:
    # The codec never sees addresses: the same session ID from a new address is the same
    # session, window and reply stream (SIP022 §3.2.4); the adapter re-points its NAT entry.
    method = AES[0]
    psk = key(method, 11)
    server = UdpServer(method, psk)
    client = UdpClient(method, [psk])
    a = server.receive(client.send(WEB_DEST, b"from wifi", now=NOW), now=NOW)
    reply = server.send(a.session_id, WEB_DEST, b"r1", now=NOW)
    b = server.receive(client.send(WEB_DEST, b"from mobile", now=NOW), now=NOW)
    assert a.session_id == b.session_id == client.session_id and len(server) == 1
    later = server.send(b.session_id, WEB_DEST, b"r2", now=NOW)
    assert client.receive(reply, now=NOW).session_id == client.receive(later, now=NOW).session_id


def test_idle_sessions_expire_and_are_reported() -> None:
    method = AES[0]
    psk = key(method, 12)
    server = UdpServer(method, psk)
    quiet, busy = UdpClient(method, [psk]), UdpClient(method, [psk])
    server.receive(quiet.send(WEB_DEST, b"x", now=NOW), now=NOW)
    server.receive(busy.send(WEB_DEST, b"x", now=NOW), now=NOW)
    server.receive(busy.send(WEB_DEST, b"x", now=NOW + 200), now=NOW + 200)
    assert server.expire(NOW + 301, timeout=300) == [quiet.session_id]
    assert busy.session_id in server and quiet.session_id not in server
    server.close(busy.session_id)
    assert len(server) == 0


# --- client -------------------------------------------------------------------------------------


@pytest.mark.parametrize("method", [*AES, CHACHA])
def test_client_packet_reads_as_the_spec_says(method: str) -> None:
    psk = key(method, 13)
    client = UdpClient(method, [psk], session_id=b"SESSION1")
    packets = [client.send(WEB_DEST, b"hello", now=NOW) for _ in range(2)]
    for packet_id, packet in enumerate(packets):
        if method == CHACHA:
            plain = XChaCha20Poly1305(psk).decrypt(packet[:24], packet[24:], None)
            separate, body = plain[:16], plain[16:]
        else:
            separate = ecb(psk).decryptor().update(packet[:16])
            body = AESGCM(subkey(psk, b"SESSION1")).decrypt(separate[4:], packet[16:], None)
        assert separate == b"SESSION1" + packet_id.to_bytes(8, "big")
        assert body == client_body(address=WEB) + b"hello"


def test_client_pads_dns_queries_by_default() -> None:
    method = AES[0]
    psk = key(method, 14)
    client = UdpClient(method, [psk])
    sizes = {len(client.send(DNS_DEST, b"q" * 30, now=NOW)) for _ in range(10)}
    assert min(sizes) > 16 + 16 + 11 + len(DNS) + 30 and len(sizes) > 1
    assert len(client.send(WEB_DEST, b"q" * 30, now=NOW)) == 16 + 16 + 11 + len(WEB) + 30


@pytest.mark.parametrize("method", [*AES, CHACHA])
def test_client_accepts_a_hand_built_server_packet(method: str) -> None:
    psk = key(method, 15)
    client = UdpClient(method, [psk])
    packet = hand_server_packet(method, psk, b"SERVER01", 0, client.session_id, b"answer")
    got = client.receive(packet, now=NOW)
    assert (got.session_id, got.packet_id, got.source, got.payload) == (
        b"SERVER01",
        0,
        DNS_DEST,
        b"answer",
    )
    with pytest.raises(ReplayError):
        client.receive(packet, now=NOW)
    later = hand_server_packet(method, psk, b"SERVER01", 7, client.session_id, b"later")
    early = hand_server_packet(method, psk, b"SERVER01", 3, client.session_id, b"early")
    assert client.receive(later, now=NOW).payload == b"later"
    assert client.receive(early, now=NOW).payload == b"early"


def test_client_refuses_a_packet_for_another_client_session() -> None:
    method = AES[0]
    psk = key(method, 16)
    client = UdpClient(method, [psk])
    packet = hand_server_packet(method, psk, b"SERVER01", 0, b"SOMEONE!", b"x")
    with pytest.raises(ProtocolError, match="another client session"):
        client.receive(packet, now=NOW)


def test_client_refuses_stale_and_wrongly_typed_server_packets() -> None:
    method = CHACHA
    psk = key(method, 17)
    client = UdpClient(method, [psk])
    stale = hand_server_packet(
        method, psk, b"SERVER01", 0, client.session_id, b"x", timestamp=int(NOW) + 60
    )
    with pytest.raises(TimestampError):
        client.receive(stale, now=NOW)
    wrong = hand_server_packet(method, psk, b"SERVER01", 0, client.session_id, b"x", kind=0)
    with pytest.raises(ProtocolError):
        client.receive(wrong, now=NOW)
    # Neither packet opened a server session: packet 0 of SERVER01 is still fresh.
    good = hand_server_packet(method, psk, b"SERVER01", 0, client.session_id, b"ok")
    assert client.receive(good, now=NOW).payload == b"ok"


def test_client_keeps_a_window_per_server_session() -> None:
    method = AES[1]
    psk = key(method, 18)
    client = UdpClient(method, [psk])
    for server_id in (b"SERVER01", b"SERVER02"):
        packet = hand_server_packet(method, psk, server_id, 0, client.session_id, server_id)
        assert client.receive(packet, now=NOW).payload == server_id


# --- identity headers (SIP022-2 UDP) ----------------------------------------------------------


@pytest.mark.parametrize("method", AES)
def test_multi_user_server_finds_the_user_of_a_hand_built_packet(method: str) -> None:
    ipsk, alice, bob = key(method, 20), key(method, 21), key(method, 22)
    users = UserTable(method, [UserKey("alice", alice), UserKey("bob", bob)])
    server = UdpServer(method, ipsk, users=users)
    sid = os.urandom(8)
    got = server.receive(hand_client_packet(method, [ipsk, bob], sid, 0, b"hi"), now=NOW)
    assert got == ClientPacket(sid, 0, DNS_DEST, b"hi", "bob")
    # The reply is sealed for the user: separate header and body under bob's uPSK.
    reply = server.send(sid, DNS_DEST, b"back", now=NOW)
    assert read_server_packet(method, bob, reply)[2].endswith(DNS + b"back")


def test_client_identity_header_is_the_users_psk_hash_xor_the_separate_header() -> None:
    method = AES[0]
    ipsk, upsk = key(method, 23), key(method, 24)
    client = UdpClient(method, [ipsk, upsk], session_id=b"SESSION2")
    packet = client.send(WEB_DEST, b"x", now=NOW)
    separate = ecb(ipsk).decryptor().update(packet[:16])
    assert separate == b"SESSION2" + bytes(8)
    identity = ecb(ipsk).decryptor().update(packet[16:32])
    assert xor(identity, separate) == blake3(upsk).digest()[:16]
    body = AESGCM(subkey(upsk, b"SESSION2")).decrypt(separate[4:], packet[32:], None)
    assert body == client_body(address=WEB) + b"x"


def test_unknown_or_revoked_user_fails_authentication_at_once() -> None:
    method = AES[0]
    ipsk, alice, mallory = key(method, 25), key(method, 26), key(method, 27)
    users = UserTable(method, [UserKey("alice", alice)])
    server = UdpServer(method, ipsk, users=users)
    with pytest.raises(AuthenticationError):
        server.receive(hand_client_packet(method, [ipsk, mallory], os.urandom(8), 0, b"x"), now=NOW)
    client = UdpClient(method, [ipsk, alice])
    assert server.receive(client.send(WEB_DEST, b"1", now=NOW), now=NOW).user == "alice"
    users.remove("alice")
    with pytest.raises(AuthenticationError):
        server.receive(client.send(WEB_DEST, b"2", now=NOW), now=NOW)


def test_a_user_cannot_ride_another_users_session() -> None:
    method = AES[0]
    ipsk, alice, bob = key(method, 28), key(method, 29), key(method, 30)
    server = UdpServer(
        method, ipsk, users=UserTable(method, [UserKey("a", alice), UserKey("b", bob)])
    )
    sid = os.urandom(8)
    server.receive(hand_client_packet(method, [ipsk, alice], sid, 0, b"x"), now=NOW)
    with pytest.raises(AuthenticationError):
        server.receive(hand_client_packet(method, [ipsk, bob], sid, 1, b"x"), now=NOW)


def test_chacha_has_no_identity_headers() -> None:
    psk = key(CHACHA, 31)
    with pytest.raises(ConfigError):
        UdpClient(CHACHA, [psk, psk])


# --- round trip -----------------------------------------------------------------------------


@settings(max_examples=30, deadline=None)
@given(
    method=st.sampled_from([*AES, CHACHA]),
    payloads=st.lists(st.binary(max_size=1500), min_size=1, max_size=5),
    multi_user=st.booleans(),
)
def test_round_trip_both_ways(method: str, payloads: list[bytes], multi_user: bool) -> None:
    psk = key(method, 40)
    users = None
    psks = [psk]
    if multi_user and method != CHACHA:
        users = UserTable(method, [UserKey("u", key(method, 41))])
        psks = [psk, key(method, 41)]
    server = UdpServer(method, psk, users=users)
    client = UdpClient(method, psks)
    for payload in payloads:
        got = server.receive(client.send(DNS_DEST, payload, now=NOW), now=NOW)
        assert got.payload == payload and got.destination == DNS_DEST
        assert got.user == ("u" if users else None)
        back = client.receive(server.send(got.session_id, WEB_DEST, payload, now=NOW), now=NOW)
        assert back.payload == payload and back.source == WEB_DEST
