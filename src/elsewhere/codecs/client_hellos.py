"""Browser-shaped TLS 1.3 ClientHellos (RFC 8446 §4.1.2) for codecs.tls13_client: the cipher
suites, extensions, their order rules and contents of a current Chrome (152, BoringSSL) and
Firefox (155, as curl-impersonate sends it), so a censor's JA3/JA4 sees a browser.

Chrome permutes its extensions per connection (between a leading and a trailing GREASE
extension, RFC 8701), GREASEs its cipher list, groups, key shares and versions, sends an ECH
GREASE extension (draft-ietf-tls-esni §6.2) with a payload of 144/176/208/240 bytes, and the
trust anchor ids (0xca34) of its root store in a shuffled order; ALPS (0x44cd) only when h2 is
offered. Firefox keeps one order and no GREASE. Both offer X25519MLKEM768 first (the hybrid
share of draft-kwiatkowski-tls-ecdhe-mlkem: ML-KEM-768 encapsulation key, then X25519).
Neither pads here: with a 1216-byte hybrid share the hello is never in BoringSSL's and NSS's
256..511-byte padding window (RFC 7685).

The uTLS presets (refraction-networking/utls HelloChrome_133, HelloFirefox_120) are one browser
release behind: uTLS Chrome lacks trust anchor ids, and that is what the 2026-06 wave blocked."""

from __future__ import annotations

import ipaddress
import struct
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TypeVar

from elsewhere.errors import ConfigError

# RFC 8446 §4.2 / IANA TLS ExtensionType values
EXT_SERVER_NAME = 0x0000
EXT_STATUS_REQUEST = 0x0005
EXT_SUPPORTED_GROUPS = 0x000A
EXT_EC_POINT_FORMATS = 0x000B
EXT_SIGNATURE_ALGORITHMS = 0x000D
EXT_ALPN = 0x0010
EXT_SCT = 0x0012
EXT_EXTENDED_MASTER_SECRET = 0x0017
EXT_COMPRESS_CERTIFICATE = 0x001B  # RFC 8879
EXT_RECORD_SIZE_LIMIT = 0x001C  # RFC 8449
EXT_DELEGATED_CREDENTIALS = 0x0022  # RFC 9345
EXT_SESSION_TICKET = 0x0023
EXT_SUPPORTED_VERSIONS = 0x002B
EXT_COOKIE = 0x002C
EXT_PSK_KEY_EXCHANGE_MODES = 0x002D
EXT_KEY_SHARE = 0x0033
EXT_ALPS = 0x44CD  # Chrome's application_settings (new code point, Chrome 131+)
EXT_TRUST_ANCHORS = 0xCA34  # draft-ietf-tls-trust-anchor-ids, Chrome's code point
EXT_ECH = 0xFE0D  # encrypted_client_hello
EXT_RENEGOTIATION_INFO = 0xFF01

GROUP_SECP256R1 = 0x0017
GROUP_SECP384R1 = 0x0018
GROUP_SECP521R1 = 0x0019
GROUP_X25519 = 0x001D
GROUP_FFDHE2048 = 0x0100
GROUP_FFDHE3072 = 0x0101
GROUP_X25519MLKEM768 = 0x11EC

TLS13 = 0x0304
TLS12 = 0x0303
TLS10 = 0x0301  # the record version of a first ClientHello (RFC 8446 §5.1)

AES_128_GCM_SHA256 = 0x1301
AES_256_GCM_SHA384 = 0x1302
CHACHA20_POLY1305_SHA256 = 0x1303

# SignatureScheme (RFC 8446 §4.2.3)
ECDSA_SECP256R1_SHA256 = 0x0403
ECDSA_SECP384R1_SHA384 = 0x0503
ECDSA_SECP521R1_SHA512 = 0x0603
ECDSA_SHA1 = 0x0203
RSA_PSS_RSAE_SHA256 = 0x0804
RSA_PSS_RSAE_SHA384 = 0x0805
RSA_PSS_RSAE_SHA512 = 0x0806
RSA_PKCS1_SHA256 = 0x0401
RSA_PKCS1_SHA384 = 0x0501
RSA_PKCS1_SHA512 = 0x0601
RSA_PKCS1_SHA1 = 0x0201
ED25519 = 0x0807
MLDSA44 = 0x0904  # draft-ietf-tls-mldsa
MLDSA65 = 0x0905
MLDSA87 = 0x0906

CERT_COMPRESSION_ZLIB = 1
CERT_COMPRESSION_BROTLI = 2
CERT_COMPRESSION_ZSTD = 3

# BoringSSL's GREASE ECH: HPKE X25519 (enc 32 bytes), HKDF-SHA256, AES-128-GCM; the payload a
# random multiple of 32 from 128 to 224 bytes plus the 16-byte AEAD tag
ECH_GREASE_PAYLOADS = (144, 176, 208, 240)
HPKE_KDF_SHA256 = 0x0001
HPKE_AEAD_AES128GCM = 0x0001

Random = Callable[[int], bytes]
_T = TypeVar("_T")


def _u8(data: bytes) -> bytes:
    return bytes((len(data),)) + data


def _u16(data: bytes) -> bytes:
    return struct.pack("!H", len(data)) + data


def _u16s(values: Sequence[int]) -> bytes:
    return struct.pack(f"!{len(values)}H", *values)


def _grease(random: Random, count: int) -> list[int]:
    """`count` GREASE values (RFC 8701) from one random draw, as BoringSSL makes them per
    connection; neighbours that would repeat are changed, as BoringSSL does for its two
    GREASE extensions."""
    values = [(b & 0xF0) | 0x0A for b in random(count)]
    found = [v << 8 | v for v in values]
    for i in range(1, count):
        if found[i] == found[i - 1]:
            found[i] ^= 0x1010
    return found


# Chrome 152's trust anchor ids: its root store as relative OIDs (sent in a shuffled order)
CHROME_TRUST_ANCHORS = tuple(bytes.fromhex(h) for h in (
    "d6790901", "d6790904", "d6790905", "d6790906", "d6790907", "d6790908", "d679090a",
    "d679090b", "d679090c", "d679090d", "d679090f", "82df130201", "82df130206", "82df13020d",
    "82df13020e", "82df13020f", "82df130212", "82df130213", "82df130214", "839a648c9b2d0107",
    "839a648c9b2d0108", "839a648c9b2d0109", "839a648c9b2d010a", "839a648c9b2d010b",
    "839a648c9b2d010c", "839a648c9b2d010d", "839a648c9b2d0112", "839a648c9b2d0113",
))


@dataclass(frozen=True)
class Shape:
    """What one browser sends; `chrome` and `firefox` below."""

    name: str
    cipher_suites: tuple[int, ...]  # 0 stands for a GREASE value
    groups: tuple[int, ...]  # supported_groups; 0 = GREASE
    key_share_groups: tuple[int, ...]  # the shares sent at first; 0 = a 1-byte GREASE share
    signature_algorithms: tuple[int, ...]
    versions: tuple[int, ...]  # supported_versions; 0 = GREASE
    cert_compression: tuple[int, ...]
    extensions: tuple[int, ...]  # in order (Chrome: the set it permutes)
    grease: bool
    permute: bool
    delegated_credentials: tuple[int, ...] = ()
    record_size_limit: int = 0


CHROME = Shape(
    name="chrome",
    cipher_suites=(
        0, AES_128_GCM_SHA256, AES_256_GCM_SHA384, CHACHA20_POLY1305_SHA256,
        0xC02B, 0xC02F, 0xC02C, 0xC030, 0xCCA9, 0xCCA8, 0xC013, 0xC014, 0x009C, 0x009D, 0x002F,
        0x0035,
    ),
    groups=(0, GROUP_X25519MLKEM768, GROUP_X25519, GROUP_SECP256R1, GROUP_SECP384R1),
    key_share_groups=(0, GROUP_X25519MLKEM768, GROUP_X25519),
    signature_algorithms=(
        MLDSA44, MLDSA65, MLDSA87,
        ECDSA_SECP256R1_SHA256, RSA_PSS_RSAE_SHA256, RSA_PKCS1_SHA256, ECDSA_SECP384R1_SHA384,
        RSA_PSS_RSAE_SHA384, RSA_PKCS1_SHA384, RSA_PSS_RSAE_SHA512, RSA_PKCS1_SHA512,
    ),
    versions=(0, TLS13, TLS12),
    cert_compression=(CERT_COMPRESSION_BROTLI,),
    extensions=(
        EXT_SERVER_NAME, EXT_EXTENDED_MASTER_SECRET, EXT_RENEGOTIATION_INFO, EXT_SUPPORTED_GROUPS,
        EXT_EC_POINT_FORMATS, EXT_SESSION_TICKET, EXT_ALPN, EXT_STATUS_REQUEST,
        EXT_SIGNATURE_ALGORITHMS, EXT_SCT, EXT_KEY_SHARE, EXT_PSK_KEY_EXCHANGE_MODES,
        EXT_SUPPORTED_VERSIONS, EXT_COMPRESS_CERTIFICATE, EXT_ALPS, EXT_ECH, EXT_TRUST_ANCHORS,
    ),
    grease=True,
    permute=True,
)

FIREFOX = Shape(
    name="firefox",
    cipher_suites=(
        AES_128_GCM_SHA256, CHACHA20_POLY1305_SHA256, AES_256_GCM_SHA384,
        0xC02B, 0xC02F, 0xCCA9, 0xCCA8, 0xC02C, 0xC030, 0xC013, 0xC014, 0x009C, 0x009D, 0x002F,
        0x0035,
    ),
    groups=(
        GROUP_X25519MLKEM768, GROUP_X25519, GROUP_SECP256R1, GROUP_SECP384R1, GROUP_SECP521R1,
        GROUP_FFDHE2048, GROUP_FFDHE3072,
    ),
    key_share_groups=(GROUP_X25519MLKEM768, GROUP_X25519, GROUP_SECP256R1),
    signature_algorithms=(
        ECDSA_SECP256R1_SHA256, ECDSA_SECP384R1_SHA384, ECDSA_SECP521R1_SHA512,
        RSA_PSS_RSAE_SHA256, RSA_PSS_RSAE_SHA384, RSA_PSS_RSAE_SHA512, RSA_PKCS1_SHA256,
        RSA_PKCS1_SHA384, RSA_PKCS1_SHA512, ECDSA_SHA1, RSA_PKCS1_SHA1,
    ),
    versions=(TLS13, TLS12),
    cert_compression=(CERT_COMPRESSION_ZLIB, CERT_COMPRESSION_BROTLI, CERT_COMPRESSION_ZSTD),
    extensions=(
        EXT_SERVER_NAME, EXT_EXTENDED_MASTER_SECRET, EXT_RENEGOTIATION_INFO, EXT_SUPPORTED_GROUPS,
        EXT_EC_POINT_FORMATS, EXT_SESSION_TICKET, EXT_ALPN, EXT_STATUS_REQUEST,
        EXT_DELEGATED_CREDENTIALS, EXT_SCT, EXT_KEY_SHARE, EXT_SUPPORTED_VERSIONS,
        EXT_SIGNATURE_ALGORITHMS, EXT_PSK_KEY_EXCHANGE_MODES, EXT_RECORD_SIZE_LIMIT,
        EXT_COMPRESS_CERTIFICATE, EXT_ECH,
    ),
    grease=False,
    permute=False,
    delegated_credentials=(
        ECDSA_SECP256R1_SHA256, ECDSA_SECP384R1_SHA384, ECDSA_SECP521R1_SHA512, ECDSA_SHA1,
    ),
    record_size_limit=0x4001,
)

SHAPES = {"chrome": CHROME, "firefox": FIREFOX}
# Share links' `fp` (Xray's uTLS preset names) -> the shape sent. Chromium browsers send
# Chrome's hello; for Safari and iOS there is no shape here yet, and Chrome's, the most common
# browser's, is the least surprising stand-in.
FINGERPRINT_SHAPES = {
    "chrome": "chrome", "firefox": "firefox", "edge": "chrome", "android": "chrome",
    "360": "chrome", "qq": "chrome", "safari": "chrome", "ios": "chrome", "random": "chrome",
    "randomized": "chrome", "randomizednoalpn": "chrome",
}
DEFAULT_FINGERPRINT = "chrome"


def shape_for(fingerprint: str | None) -> Shape:
    """The shape an `fp` value names (None: the default, Chrome); ConfigError for others."""
    name = (fingerprint or DEFAULT_FINGERPRINT).lower()
    if name == "none":
        name = DEFAULT_FINGERPRINT
    try:
        return SHAPES[FINGERPRINT_SHAPES[name]]
    except KeyError:
        raise ConfigError(
            f"fp {fingerprint!r} is not a browser fingerprint; use one of "
            f"{', '.join(FINGERPRINT_SHAPES)}"
        ) from None


def wire_server_name(server_name: str | None) -> str | None:
    """The name that goes into SNI: browsers send none for an IP address (RFC 6066 §3)."""
    if not server_name:
        return None
    try:
        ipaddress.ip_address(server_name.strip("[]"))
    except ValueError:
        return server_name.rstrip(".").lower()
    return None


@dataclass
class HelloDraft:
    """One connection's ClientHello: the random choices made once (GREASE values, extension
    order, ECH GREASE, session id), rendered again with other key shares and a cookie after a
    HelloRetryRequest (RFC 8446 §4.1.2: the second hello is the first with those changed)."""

    shape: Shape
    server_name: str | None
    alpn: tuple[str, ...]
    random: bytes
    session_id: bytes
    order: tuple[int, ...]
    grease: tuple[int, ...]  # cipher, group, first extension, last extension, version
    ech: bytes
    anchors: tuple[bytes, ...]
    extra: dict[int, bytes] = field(default_factory=dict)

    @classmethod
    def new(
        cls, shape: Shape, server_name: str | None, alpn: Sequence[str], random: Random
    ) -> HelloDraft:
        grease = tuple(_grease(random, 5)) if shape.grease else (0, 0, 0, 0, 0)
        order = list(shape.extensions)
        if not alpn:
            order.remove(EXT_ALPN)
        if EXT_ALPS in order and "h2" not in alpn:  # BoringSSL: ALPS only for offered h2
            order.remove(EXT_ALPS)
        if wire_server_name(server_name) is None:
            order.remove(EXT_SERVER_NAME)
        anchors: tuple[bytes, ...] = ()
        if shape.permute:
            order = _shuffled(order, random)
            anchors = tuple(_shuffled(list(CHROME_TRUST_ANCHORS), random))
        payload = ECH_GREASE_PAYLOADS[random(1)[0] % len(ECH_GREASE_PAYLOADS)]
        ech = (
            b"\x00" + struct.pack("!HH", HPKE_KDF_SHA256, HPKE_AEAD_AES128GCM) + random(1)
            + _u16(random(32)) + _u16(random(payload))
        )
        return cls(
            shape=shape, server_name=wire_server_name(server_name), alpn=tuple(alpn),
            random=random(32), session_id=random(32), order=tuple(order), grease=grease,
            ech=ech, anchors=anchors,
        )

    def message(
        self, shares: Sequence[tuple[int, bytes]], cookie: bytes | None = None,
        retry: bool = False,
    ) -> bytes:
        """The ClientHello handshake message (type, length, body) with these key shares; the
        second hello after a HelloRetryRequest (`retry`) has no GREASE share (BoringSSL: the
        server must see only the group it asked for, RFC 8446 §4.2.8)."""
        shape = self.shape
        g_cipher, g_group, g_first, g_last, g_version = self.grease
        ciphers = [c or g_cipher for c in shape.cipher_suites]
        key_shares = b"".join(
            struct.pack("!H", group) + _u16(data)
            for group, data in (shares if retry else self._with_grease(shares))
        )
        bodies = self._bodies(g_group, g_version, key_shares)
        order = list(self.order)
        if cookie is not None:
            order.insert(order.index(EXT_KEY_SHARE) + 1, EXT_COOKIE)
            bodies[EXT_COOKIE] = _u16(cookie)
        extensions = [struct.pack("!H", kind) + _u16(bodies[kind]) for kind in order]
        if shape.grease:
            extensions.insert(0, struct.pack("!HH", g_first, 0))
            extensions.append(struct.pack("!HHB", g_last, 1, 0))
        body = b"".join((
            struct.pack("!H", TLS12), self.random, _u8(self.session_id), _u16(_u16s(ciphers)),
            b"\x01\x00", _u16(b"".join(extensions)),
        ))
        return b"\x01" + len(body).to_bytes(3, "big") + body

    def _with_grease(self, shares: Sequence[tuple[int, bytes]]) -> list[tuple[int, bytes]]:
        if self.shape.grease:
            return [(self.grease[1], b"\x00"), *shares]
        return list(shares)

    def _bodies(self, g_group: int, g_version: int, key_shares: bytes) -> dict[int, bytes]:
        shape = self.shape
        bodies = {
            EXT_EXTENDED_MASTER_SECRET: b"",
            EXT_RENEGOTIATION_INFO: b"\x00",
            EXT_SUPPORTED_GROUPS: _u16(_u16s([g or g_group for g in shape.groups])),
            EXT_EC_POINT_FORMATS: b"\x01\x00",
            EXT_SESSION_TICKET: b"",
            EXT_ALPN: _u16(b"".join(_u8(p.encode()) for p in self.alpn)),
            EXT_STATUS_REQUEST: b"\x01\x00\x00\x00\x00",
            EXT_SIGNATURE_ALGORITHMS: _u16(_u16s(shape.signature_algorithms)),
            EXT_SCT: b"",
            EXT_KEY_SHARE: _u16(key_shares),
            EXT_PSK_KEY_EXCHANGE_MODES: b"\x01\x01",  # psk_dhe_ke
            EXT_SUPPORTED_VERSIONS: _u8(_u16s([v or g_version for v in shape.versions])),
            EXT_COMPRESS_CERTIFICATE: _u8(_u16s(shape.cert_compression)),
            EXT_ALPS: _u16(_u8(b"h2")),
            EXT_ECH: self.ech,
            EXT_TRUST_ANCHORS: _u16(b"".join(_u8(a) for a in self.anchors)),
            EXT_DELEGATED_CREDENTIALS: _u16(_u16s(shape.delegated_credentials)),
            EXT_RECORD_SIZE_LIMIT: struct.pack("!H", shape.record_size_limit),
        }
        if self.server_name is not None:
            name = self.server_name.encode("idna")
            bodies[EXT_SERVER_NAME] = _u16(b"\x00" + _u16(name))
        return bodies


def _shuffled(items: Sequence[_T], random: Random) -> list[_T]:
    """Fisher-Yates with bytes from `random` (16 bits per draw: bias below 1/2000)."""
    out = list(items)
    draws = random(2 * len(out))
    for i in range(len(out) - 1, 0, -1):
        j = int.from_bytes(draws[2 * i : 2 * i + 2], "big") % (i + 1)
        out[i], out[j] = out[j], out[i]
    return out
