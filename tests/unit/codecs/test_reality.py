import datetime
import hashlib
import hmac
import os
import struct

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric.ec import SECP256R1, generate_private_key
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from elsewhere.codecs import reality
from elsewhere.codecs.reality import (
    Authenticated,
    CertificateTemplate,
    RealityKeys,
    Refusal,
    SessionToken,
    authenticate,
    client_auth_key,
    decode_key,
    encode_key,
    open_session_id,
    parse_short_id,
    seal_hello,
    verify_temporary_certificate,
)
from elsewhere.codecs.tls_hello import parse_client_hello
from elsewhere.errors import ConfigError
from hellos import as_records, client_hello_message

SERVER_PRIVATE = bytes.fromhex("a8" * 32)
SERVER_PUBLIC = reality.public_key(SERVER_PRIVATE)
CLIENT_KEY = X25519PrivateKey.from_private_bytes(bytes.fromhex("5d" * 32))
RANDOM = bytes(range(32))
NOW = 1_790_000_000
SID = parse_short_id("0123abcd")
KEYS = RealityKeys(
    private_key=SERVER_PRIVATE, short_ids=frozenset({SID, parse_short_id("")}),
    server_names=frozenset({"cdn.test"}), max_time_diff=60,
)


def sealed_hello(
    *, token: SessionToken | None = None, server_name: str = "cdn.test",
    shares: tuple[tuple[int, bytes], ...] | None = None, server_public: bytes = SERVER_PUBLIC,
) -> bytes:
    share = CLIENT_KEY.public_key().public_bytes_raw()
    message = client_hello_message(
        random=RANDOM, server_name=server_name,
        key_shares=shares if shares is not None else ((0x001D, share),),
    )
    auth_key = client_auth_key(CLIENT_KEY, server_public, RANDOM)
    token = token or SessionToken(version=(1, 8, 1), timestamp=NOW, short_id=SID)
    return as_records(seal_hello(message, auth_key, token))


def test_session_id_is_aes_gcm_of_version_time_short_id_under_hkdf_of_the_x25519_secret() -> None:
    # The spec text, restated step by step without the module's helpers.
    message = client_hello_message(
        random=RANDOM, key_shares=((0x001D, CLIENT_KEY.public_key().public_bytes_raw()),)
    )
    shared = CLIENT_KEY.exchange(
        X25519PrivateKey.from_private_bytes(SERVER_PRIVATE).public_key()
    )
    auth_key = HKDF(hashes.SHA256(), 32, salt=RANDOM[:20], info=b"REALITY").derive(shared)
    plain = bytes((1, 8, 1, 0)) + struct.pack("!I", NOW) + bytes.fromhex("0123abcd") + bytes(4)
    expected = AESGCM(auth_key).encrypt(RANDOM[20:], plain, message)  # sid zero in the AAD
    token = SessionToken(version=(1, 8, 1), timestamp=NOW, short_id=SID)
    sealed = seal_hello(message, client_auth_key(CLIENT_KEY, SERVER_PUBLIC, RANDOM), token)
    assert sealed[39:71] == expected
    assert sealed[:39] == message[:39] and sealed[71:] == message[71:]


def test_the_server_opens_what_the_client_sealed_and_learns_version_time_and_short_id() -> None:
    verdict = authenticate(parse_client_hello(sealed_hello()), KEYS, now=NOW + 5)
    assert isinstance(verdict, Authenticated)
    assert verdict.token == SessionToken(version=(1, 8, 1), timestamp=NOW, short_id=SID)
    assert verdict.auth_key == client_auth_key(CLIENT_KEY, SERVER_PUBLIC, RANDOM)


def test_the_x25519_half_of_an_x25519mlkem768_share_authenticates_when_alone() -> None:
    x25519 = CLIENT_KEY.public_key().public_bytes_raw()
    shares = ((0x11EC, os.urandom(1184) + x25519),)
    hello = parse_client_hello(sealed_hello(shares=shares))
    assert isinstance(authenticate(hello, KEYS, now=NOW), Authenticated)


def test_any_changed_byte_of_the_hello_fails_the_seal_as_a_replay_with_edits_would() -> None:
    record = bytearray(sealed_hello())
    for offset in (5 + 10, 5 + 45, len(record) - 3):  # random, session id, an extension
        edited = bytearray(record)
        edited[offset] ^= 0x01
        verdict = authenticate(parse_client_hello(bytes(edited)), KEYS, now=NOW)
        assert verdict in (Refusal.BAD_TOKEN, Refusal.NO_KEY_SHARE)


def test_each_check_refuses_with_its_own_reason() -> None:
    assert authenticate(parse_client_hello(sealed_hello(server_public=reality.public_key(
        reality.generate_private_key()))), KEYS, now=NOW) is Refusal.BAD_TOKEN
    assert authenticate(
        parse_client_hello(sealed_hello(server_name="other.test")), KEYS, now=NOW
    ) is Refusal.SERVER_NAME
    assert authenticate(parse_client_hello(sealed_hello()), KEYS, now=NOW + 61) is Refusal.CLOCK
    assert authenticate(parse_client_hello(sealed_hello()), KEYS, now=NOW - 61) is Refusal.CLOCK
    stranger = SessionToken(version=(1, 8, 1), timestamp=NOW, short_id=parse_short_id("ff"))
    assert authenticate(
        parse_client_hello(sealed_hello(token=stranger)), KEYS, now=NOW
    ) is Refusal.SHORT_ID
    assert authenticate(
        parse_client_hello(sealed_hello(shares=((0x0017, b"\x04" + bytes(64)),))), KEYS, now=NOW
    ) is Refusal.NO_KEY_SHARE
    tls12 = client_hello_message(random=RANDOM, versions=(0x0303,))
    assert authenticate(parse_client_hello(as_records(tls12)), KEYS, now=NOW) is Refusal.NOT_TLS13
    old = RealityKeys(
        private_key=SERVER_PRIVATE, short_ids=KEYS.short_ids, server_names=KEYS.server_names,
        min_client_version=(1, 9, 0),
    )
    assert authenticate(parse_client_hello(sealed_hello()), old, now=NOW) is Refusal.CLIENT_VERSION


def test_max_time_diff_zero_accepts_any_clock_and_the_empty_short_id_is_zeros() -> None:
    lax = RealityKeys(
        private_key=SERVER_PRIVATE, short_ids=frozenset({parse_short_id("")}),
        server_names=KEYS.server_names,
    )
    token = SessionToken(version=(25, 1, 1), timestamp=0, short_id=bytes(8))
    assert isinstance(authenticate(parse_client_hello(sealed_hello(token=token)), lax, NOW),
                      Authenticated)


def test_a_low_order_key_share_is_refused_not_raised() -> None:
    zero_point = ((0x001D, bytes(32)),)
    message = client_hello_message(random=RANDOM, key_shares=zero_point, session_id=os.urandom(32))
    assert authenticate(parse_client_hello(as_records(message)), KEYS, NOW) is Refusal.NO_KEY_SHARE


def test_a_browsers_own_random_session_id_does_not_open() -> None:
    message = client_hello_message(
        random=os.urandom(32), session_id=os.urandom(32),
        key_shares=((0x001D, X25519PrivateKey.generate().public_key().public_bytes_raw()),),
    )
    hello = parse_client_hello(as_records(message))
    assert open_session_id(os.urandom(32), hello) is None
    assert authenticate(hello, KEYS, NOW) is Refusal.BAD_TOKEN


def test_keys_and_short_ids_read_as_xray_writes_them() -> None:
    assert decode_key(encode_key(SERVER_PUBLIC)) == SERVER_PUBLIC
    assert "=" not in encode_key(SERVER_PUBLIC)
    standard = encode_key(SERVER_PUBLIC).replace("-", "+").replace("_", "/")
    assert decode_key(standard) == SERVER_PUBLIC
    assert parse_short_id("0123abcd") == bytes.fromhex("0123abcd00000000")
    assert parse_short_id("") == bytes(8)
    for bad in ("abc", "0123456789abcdef00", "zz"):
        with pytest.raises(ConfigError):
            parse_short_id(bad)
    for bad in ("***", encode_key(b"short")):
        with pytest.raises(ConfigError):
            decode_key(bad)


def test_the_temporary_certificate_carries_the_hmac_of_its_ed25519_key_as_signature() -> None:
    template = CertificateTemplate.generate()
    auth_key = os.urandom(32)
    der = template.for_session(auth_key)
    cert = x509.load_der_x509_certificate(der)
    public = template.public_key_raw
    assert cert.signature == hmac.new(auth_key, public, hashlib.sha512).digest()
    assert verify_temporary_certificate(der, auth_key)
    assert not verify_temporary_certificate(der, os.urandom(32))
    assert not verify_temporary_certificate(template.der, auth_key)  # a real signature
    assert not verify_temporary_certificate(b"\x30\x03junk", auth_key)


def test_a_real_sites_certificate_never_passes_as_a_temporary_one() -> None:
    key = generate_private_key(SECP256R1())
    name = x509.Name([x509.NameAttribute(x509.oid.NameOID.COMMON_NAME, "cdn.test")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder().subject_name(name).issuer_name(name).serial_number(7)
        .not_valid_before(now).not_valid_after(now + datetime.timedelta(days=1))
        .public_key(key.public_key()).sign(key, hashes.SHA256())
    )
    assert not verify_temporary_certificate(cert.public_bytes(serialization.Encoding.DER),
                                            os.urandom(32))


def test_a_session_id_is_answered_once_and_forgotten_after_the_clock_window() -> None:
    replays = reality.ReplayFilter(window=60)
    assert replays.first_time(b"a" * 32, now=NOW)
    assert not replays.first_time(b"a" * 32, now=NOW + 30)
    assert replays.first_time(b"b" * 32, now=NOW + 30)
    assert replays.first_time(b"a" * 32, now=NOW + 500)  # the token's own time refuses it now
    bounded = reality.ReplayFilter(window=0, capacity=2)
    for sid in (b"1", b"2", b"3"):
        assert bounded.first_time(sid, now=NOW)
    assert bounded.first_time(b"1", now=NOW) and not bounded.first_time(b"3", now=NOW)
