"""REALITY authentication (XTLS/REALITY, as Xray-core and sing-box implement it): the client
hides a sealed token in the TLS 1.3 ClientHello's legacy_session_id, the server that holds the
X25519 private key opens it, and answers with a "temporary certificate" whose signature field is
an HMAC only the holder of the shared secret can make. Pure functions for both sides; bytes and
`now` in, bytes and verdicts out.

The layout, byte for byte as Xray-core's transport/internet/reality and XTLS/REALITY's tls.go:
  shared  = X25519(server private key, client's X25519 key_share)   (or the X25519 half of an
            X25519MLKEM768 share: its last 32 bytes)
  authKey = HKDF-SHA256(ikm=shared, salt=ClientHello.random[:20], info="REALITY"), 32 bytes
  plain   = version x, y, z (1 byte each) | 0 | unix time (u32, big-endian) | short id (8 bytes)
  session_id = AES-256-GCM(authKey).seal(nonce=random[20:32], plain,
                                         aad=the ClientHello message with session_id zeroed)
  certificate: ed25519, its signature field = HMAC-SHA512(authKey, ed25519 public key)
"""

from __future__ import annotations

import base64
import binascii
import datetime
import hashlib
import hmac
import struct
from dataclasses import dataclass
from enum import Enum

from cryptography import x509
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from elsewhere.codecs.tls_hello import SESSION_ID_OFFSET, ClientHello
from elsewhere.errors import ConfigError, ProtocolError

HKDF_INFO = b"REALITY"
SESSION_ID_SIZE = 32  # 16 bytes sealed + 16 bytes GCM tag
PLAIN_SIZE = 16
SHORT_ID_SIZE = 8  # up to 16 hex digits in the config and the link's sid=
KEY_SIZE = 32
RANDOM_SALT = slice(0, 20)
RANDOM_NONCE = slice(20, 32)
GROUP_X25519 = 0x001D
GROUP_X25519MLKEM768 = 0x11EC
MLKEM768_ENCAPSULATION_KEY = 1184  # the X25519 half follows the ML-KEM key (draft-kwiatkowski)
HMAC_SIZE = 64  # SHA-512: the same size as an ed25519 signature, so it takes its place
# What sing-box 1.8+ sends as its "client version"; servers' minClientVer settings are written
# for the versions real clients send, and ours must not stand out.
CLIENT_VERSION = (1, 8, 1)
_PLAIN = struct.Struct("!BBBBI8s")


# -- keys and short ids ------------------------------------------------------------------------


def encode_key(raw: bytes) -> str:
    """A 32-byte X25519 key as Xray's `xray x25519` prints it and links carry it (pbk=):
    base64url without padding."""
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def decode_key(text: str) -> bytes:
    """Parse a base64url (or standard base64) X25519 key; ConfigError names the problem."""
    cleaned = text.strip().replace("+", "-").replace("/", "_").rstrip("=")
    try:
        raw = base64.urlsafe_b64decode(cleaned + "=" * (-len(cleaned) % 4))
    except (binascii.Error, ValueError):
        raise ConfigError(f"REALITY key {text!r} is not base64") from None
    if len(raw) != KEY_SIZE:
        raise ConfigError(f"REALITY key {text!r} is {len(raw)} bytes, not {KEY_SIZE}")
    return raw


def generate_private_key() -> bytes:
    return X25519PrivateKey.generate().private_bytes_raw()


def public_key(private_key: bytes) -> bytes:
    return X25519PrivateKey.from_private_bytes(private_key).public_key().public_bytes_raw()


def parse_short_id(text: str) -> bytes:
    """A short id as configs and links write it (0 to 16 hex digits, an even count), as the
    8 bytes the session id carries (zero-padded on the right, as Xray's hex.Decode into [8]byte)."""
    if len(text) > 2 * SHORT_ID_SIZE or len(text) % 2:
        raise ConfigError(f"short id {text!r} must be 0 to 16 hex digits, an even count")
    try:
        raw = bytes.fromhex(text)
    except ValueError:
        raise ConfigError(f"short id {text!r} is not hex") from None
    return raw.ljust(SHORT_ID_SIZE, b"\0")


# -- the auth key ------------------------------------------------------------------------------


def derive_auth_key(shared_secret: bytes, client_random: bytes) -> bytes:
    """authKey = HKDF-SHA256(shared, salt=random[:20], info="REALITY")."""
    if len(client_random) != 32:
        raise ProtocolError("ClientHello random is not 32 bytes")
    return HKDF(
        algorithm=hashes.SHA256(), length=KEY_SIZE, salt=client_random[RANDOM_SALT],
        info=HKDF_INFO,
    ).derive(shared_secret)


def x25519_share(hello: ClientHello) -> bytes | None:
    """The client's X25519 public key the server authenticates with: its X25519 key_share, or
    else the X25519 half of its X25519MLKEM768 share (XTLS/REALITY's order)."""
    for group, data in hello.key_shares:
        if group == GROUP_X25519 and len(data) == KEY_SIZE:
            return data
    for group, data in hello.key_shares:
        if group == GROUP_X25519MLKEM768 and len(data) == MLKEM768_ENCAPSULATION_KEY + KEY_SIZE:
            return data[MLKEM768_ENCAPSULATION_KEY:]
    return None


def server_auth_key(private_key: bytes, hello: ClientHello) -> bytes | None:
    """The server's side: None when the hello carries no usable X25519 share."""
    share = x25519_share(hello)
    if share is None:
        return None
    try:
        shared = X25519PrivateKey.from_private_bytes(private_key).exchange(
            X25519PublicKey.from_public_bytes(share)
        )
    except ValueError:  # a low-order point gives an all-zero secret, which cryptography refuses
        return None
    return derive_auth_key(shared, hello.random)


def client_auth_key(
    client_key: X25519PrivateKey, server_public_key: bytes, client_random: bytes
) -> bytes:
    """The client's side: the same X25519 key as its key_share, the server's public key (pbk)."""
    shared = client_key.exchange(X25519PublicKey.from_public_bytes(server_public_key))
    return derive_auth_key(shared, client_random)


# -- the session id ----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SessionToken:
    """The 16 sealed bytes: who the client is and when it said hello."""

    version: tuple[int, int, int]
    timestamp: int  # unix seconds
    short_id: bytes  # 8 bytes, zero-padded

    def encode(self) -> bytes:
        x, y, z = self.version
        return _PLAIN.pack(x, y, z, 0, self.timestamp & 0xFFFFFFFF, self.short_id)

    @classmethod
    def decode(cls, plain: bytes) -> SessionToken:
        x, y, z, _reserved, timestamp, short_id = _PLAIN.unpack(plain)
        return cls(version=(x, y, z), timestamp=timestamp, short_id=short_id)


def _zeroed_session_id(message: bytes) -> bytes:
    if len(message) < SESSION_ID_OFFSET + SESSION_ID_SIZE or message[38] != SESSION_ID_SIZE:
        raise ProtocolError("ClientHello has no 32-byte session id")
    return (
        message[:SESSION_ID_OFFSET] + bytes(SESSION_ID_SIZE)
        + message[SESSION_ID_OFFSET + SESSION_ID_SIZE :]
    )


def seal_hello(message: bytes, auth_key: bytes, token: SessionToken) -> bytes:
    """The client's side: a ClientHello handshake message (type, length, body) with a 32-byte
    session id (any content) back with the sealed token in it. The AAD is the message with
    the session id zeroed, so the rest of the hello is authenticated too."""
    aad = _zeroed_session_id(message)
    random = message[6:38]
    sealed = AESGCM(auth_key).encrypt(random[RANDOM_NONCE], token.encode(), aad)
    return aad[:SESSION_ID_OFFSET] + sealed + aad[SESSION_ID_OFFSET + SESSION_ID_SIZE :]


def open_session_id(auth_key: bytes, hello: ClientHello) -> SessionToken | None:
    """The server's side: the token, or None when the session id was not sealed with this key
    over this very hello (a browser, a prober, a replay with any byte changed)."""
    if len(hello.session_id) != SESSION_ID_SIZE:
        return None
    aad = _zeroed_session_id(hello.message)
    try:
        plain = AESGCM(auth_key).decrypt(hello.random[RANDOM_NONCE], hello.session_id, aad)
    except InvalidTag:
        return None
    return SessionToken.decode(plain)


# -- the server's decision ---------------------------------------------------------------------


class Refusal(Enum):
    """Why a hello goes to dest; the names are the probe counter's kinds."""

    NOT_TLS13 = "not_tls13"
    SERVER_NAME = "server_name"
    NO_KEY_SHARE = "no_key_share"
    BAD_TOKEN = "bad_token"
    SHORT_ID = "short_id"
    CLOCK = "clock"
    CLIENT_VERSION = "client_version"
    REPLAY = "replay"


@dataclass(frozen=True, slots=True)
class RealityKeys:
    """What a REALITY server checks a hello against (XTLS/REALITY's Config)."""

    private_key: bytes
    short_ids: frozenset[bytes]  # 8-byte padded forms
    server_names: frozenset[str]
    max_time_diff: float = 0.0  # seconds; 0 = no clock check (as Xray's maxTimeDiff = 0)
    min_client_version: tuple[int, int, int] | None = None
    max_client_version: tuple[int, int, int] | None = None


@dataclass(frozen=True, slots=True)
class Authenticated:
    auth_key: bytes
    token: SessionToken


def authenticate(hello: ClientHello, keys: RealityKeys, now: float) -> Authenticated | Refusal:
    """The whole check a REALITY server makes before it answers itself instead of dest."""
    if not hello.offers_tls13:
        return Refusal.NOT_TLS13
    if hello.server_name not in keys.server_names:
        return Refusal.SERVER_NAME
    auth_key = server_auth_key(keys.private_key, hello)
    if auth_key is None:
        return Refusal.NO_KEY_SHARE
    token = open_session_id(auth_key, hello)
    if token is None:
        return Refusal.BAD_TOKEN
    if keys.min_client_version is not None and token.version < keys.min_client_version:
        return Refusal.CLIENT_VERSION
    if keys.max_client_version is not None and token.version > keys.max_client_version:
        return Refusal.CLIENT_VERSION
    if keys.max_time_diff and abs(now - token.timestamp) > keys.max_time_diff:
        return Refusal.CLOCK
    if token.short_id not in keys.short_ids:
        return Refusal.SHORT_ID
    return Authenticated(auth_key=auth_key, token=token)


class ReplayFilter:
    """Session ids already answered, so that a replayed hello meets dest as a stranger's does
    (XTLS/REALITY answers a replay itself: the prober cannot finish that handshake, but it
    sees an answer that is not dest's). A sealed session id carries its time: one older than
    the clock window is refused anyway, so only the window's ids need remembering; without a
    window the newest `capacity` are kept."""

    def __init__(self, window: float, capacity: int = 1 << 16) -> None:
        self.window = window
        self.capacity = capacity
        self._seen: dict[bytes, float] = {}  # insertion order is arrival order

    def first_time(self, session_id: bytes, now: float) -> bool:
        seen = self._seen
        if self.window:
            horizon = now - 2 * self.window
            while seen:
                oldest = next(iter(seen))
                if seen[oldest] >= horizon:
                    break
                del seen[oldest]
        if session_id in seen:
            return False
        if len(seen) >= self.capacity:
            del seen[next(iter(seen))]
        seen[session_id] = now
        return True


# -- the temporary certificate -----------------------------------------------------------------

# Go's zero time (year 1) in Xray's; cryptography writes nothing before 1950. Nobody checks it:
# the certificate travels encrypted and clients look only at its key and signature.
_EARLIEST = datetime.datetime(1950, 1, 1, tzinfo=datetime.UTC)


@dataclass(frozen=True, slots=True)
class CertificateTemplate:
    """One ed25519 key and self-signed certificate per server, as XTLS/REALITY makes at start
    (a one-byte serial, empty names, the earliest
    time); each session gets a copy whose signature is the
    session's HMAC."""

    key: Ed25519PrivateKey
    der: bytes

    @classmethod
    def generate(cls) -> CertificateTemplate:
        key = Ed25519PrivateKey.generate()
        empty = x509.Name([])
        cert = (
            x509.CertificateBuilder()
            .subject_name(empty)
            .issuer_name(empty)
            .serial_number(1)  # Go writes 0, which cryptography refuses; same length
            .not_valid_before(_EARLIEST)
            .not_valid_after(_EARLIEST)
            .public_key(key.public_key())
            .sign(key, None)
        )
        return cls(key=key, der=cert.public_bytes(serialization.Encoding.DER))

    @property
    def public_key_raw(self) -> bytes:
        return self.key.public_key().public_bytes_raw()

    def for_session(self, auth_key: bytes) -> bytes:
        """The certificate's DER with its signature (the last 64 bytes: ed25519's BIT STRING
        ends the DER) replaced by HMAC-SHA512(authKey, public key)."""
        mac = hmac.new(auth_key, self.public_key_raw, hashlib.sha512).digest()
        return self.der[:-HMAC_SIZE] + mac


def verify_temporary_certificate(der: bytes, auth_key: bytes) -> bool:
    """The client's side, as Xray's VerifyPeerCertificate: an ed25519 certificate whose
    signature is HMAC-SHA512(authKey, its public key). False for any real site's certificate."""
    try:
        cert = x509.load_der_x509_certificate(der)
        key = cert.public_key()
    except ValueError:
        return False
    if not isinstance(key, Ed25519PublicKey):
        return False
    expected = hmac.new(auth_key, key.public_bytes_raw(), hashlib.sha512).digest()
    return hmac.compare_digest(expected, cert.signature)
