"""TLS 1.3's key schedule and record protection (RFC 8446 §7 and §5.2), the parts a client and a
server share: HKDF-Expand-Label, Derive-Secret, the handshake and application traffic secrets,
Finished, and records sealed and opened one whole record per AEAD call. Sans-I/O; every
primitive is `cryptography`'s."""

from __future__ import annotations

import hmac
import struct
from dataclasses import dataclass

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM, ChaCha20Poly1305
from cryptography.hazmat.primitives.kdf.hkdf import HKDF, HKDFExpand

from elsewhere.errors import ProtocolError

CONTENT_CHANGE_CIPHER_SPEC = 20
CONTENT_ALERT = 21
CONTENT_HANDSHAKE = 22
CONTENT_APPLICATION_DATA = 23
RECORD_HEADER = struct.Struct("!BHH")
LEGACY_RECORD_VERSION = 0x0303
MAX_PLAINTEXT = 1 << 14  # §5.1
MAX_CIPHERTEXT = MAX_PLAINTEXT + 256  # §5.2
TAG_SIZE = 16

TLS_AES_128_GCM_SHA256 = 0x1301
TLS_AES_256_GCM_SHA384 = 0x1302
TLS_CHACHA20_POLY1305_SHA256 = 0x1303


@dataclass(frozen=True, slots=True)
class CipherSuite:
    code: int
    aead: type[AESGCM] | type[ChaCha20Poly1305]
    key_size: int
    hash: type[hashes.SHA256] | type[hashes.SHA384]

    @property
    def hash_size(self) -> int:
        return self.hash.digest_size


CIPHER_SUITES = {
    TLS_AES_128_GCM_SHA256: CipherSuite(TLS_AES_128_GCM_SHA256, AESGCM, 16, hashes.SHA256),
    TLS_AES_256_GCM_SHA384: CipherSuite(TLS_AES_256_GCM_SHA384, AESGCM, 32, hashes.SHA384),
    TLS_CHACHA20_POLY1305_SHA256: CipherSuite(
        TLS_CHACHA20_POLY1305_SHA256, ChaCha20Poly1305, 32, hashes.SHA256
    ),
}


# -- the key schedule (§7.1) -------------------------------------------------------------------


def hkdf_extract(suite: CipherSuite, salt: bytes, ikm: bytes) -> bytes:
    return HKDF.extract(suite.hash(), salt, ikm)


def hkdf_expand_label(
    suite: CipherSuite, secret: bytes, label: bytes, context: bytes, length: int
) -> bytes:
    full = b"tls13 " + label
    info = struct.pack("!HB", length, len(full)) + full + bytes((len(context),)) + context
    return HKDFExpand(suite.hash(), length, info).derive(secret)


def derive_secret(suite: CipherSuite, secret: bytes, label: bytes, transcript_hash: bytes) -> bytes:
    return hkdf_expand_label(suite, secret, label, transcript_hash, suite.hash_size)


class Transcript:
    """The running hash of the handshake messages (§4.4.1)."""

    def __init__(self, suite: CipherSuite) -> None:
        self._hash = hashes.Hash(suite.hash())

    def add(self, *messages: bytes) -> None:
        for message in messages:
            self._hash.update(message)

    def digest(self) -> bytes:
        return self._hash.copy().finalize()


class KeySchedule:
    """Early -> handshake -> master secret, without PSK (what REALITY and a fresh handshake use)."""

    def __init__(self, suite: CipherSuite) -> None:
        self.suite = suite
        zeros = bytes(suite.hash_size)
        early = hkdf_extract(suite, b"", zeros)
        self._derived = derive_secret(suite, early, b"derived", _empty_hash(suite))
        self._handshake_secret = b""

    def handshake_secrets(self, shared_secret: bytes, hello_hash: bytes) -> tuple[bytes, bytes]:
        """(client, server) handshake traffic secrets; `hello_hash` covers ClientHello..
        ServerHello."""
        suite = self.suite
        self._handshake_secret = hkdf_extract(suite, self._derived, shared_secret)
        return (
            derive_secret(suite, self._handshake_secret, b"c hs traffic", hello_hash),
            derive_secret(suite, self._handshake_secret, b"s hs traffic", hello_hash),
        )

    def application_secrets(self, server_finished_hash: bytes) -> tuple[bytes, bytes]:
        """(client, server) application traffic secrets; the hash covers ClientHello..server
        Finished."""
        suite = self.suite
        derived = derive_secret(suite, self._handshake_secret, b"derived", _empty_hash(suite))
        master = hkdf_extract(suite, derived, bytes(suite.hash_size))
        return (
            derive_secret(suite, master, b"c ap traffic", server_finished_hash),
            derive_secret(suite, master, b"s ap traffic", server_finished_hash),
        )


def _empty_hash(suite: CipherSuite) -> bytes:
    return hashes.Hash(suite.hash()).finalize()


def finished_verify_data(
    suite: CipherSuite, traffic_secret: bytes, transcript_hash: bytes
) -> bytes:
    """§4.4.4: HMAC(finished_key, transcript hash)."""
    key = hkdf_expand_label(suite, traffic_secret, b"finished", b"", suite.hash_size)
    return hmac.new(key, transcript_hash, suite.hash.name).digest()


def next_traffic_secret(suite: CipherSuite, secret: bytes) -> bytes:
    """§7.2: application_traffic_secret_N+1 (KeyUpdate)."""
    return hkdf_expand_label(suite, secret, b"traffic upd", b"", suite.hash_size)


def handshake_message(kind: int, body: bytes) -> bytes:
    return bytes((kind,)) + len(body).to_bytes(3, "big") + body


# -- record protection (§5.2, §5.3) ------------------------------------------------------------


class RecordProtection:
    """One direction's AEAD: the key and IV from a traffic secret, the 64-bit sequence number
    XORed into the IV per record."""

    def __init__(self, suite: CipherSuite, traffic_secret: bytes) -> None:
        self.suite = suite
        self.secret = traffic_secret
        key = hkdf_expand_label(suite, traffic_secret, b"key", b"", suite.key_size)
        self._aead = suite.aead(key)
        self._iv = int.from_bytes(hkdf_expand_label(suite, traffic_secret, b"iv", b"", 12), "big")
        self._seq = 0

    def _nonce(self) -> bytes:
        nonce = (self._iv ^ self._seq).to_bytes(12, "big")
        self._seq += 1
        return nonce

    def seal(
        self, content_type: int, data: bytes | bytearray | memoryview, padding: int = 0
    ) -> bytes:
        """One record: header | AEAD(data | type | zeros) with the header as AAD. `data` must
        fit a record (MAX_PLAINTEXT)."""
        inner = bytes(data) + bytes((content_type,)) + bytes(padding)
        header = RECORD_HEADER.pack(CONTENT_APPLICATION_DATA, LEGACY_RECORD_VERSION,
                                    len(inner) + TAG_SIZE)
        return header + self._aead.encrypt(self._nonce(), inner, header)

    def seal_stream(self, content_type: int, data: bytes | bytearray | memoryview) -> bytes:
        """`data` cut into full records (the last one shorter), sealed and joined."""
        view = memoryview(data)
        if len(view) <= MAX_PLAINTEXT:
            return self.seal(content_type, view)
        return b"".join(
            self.seal(content_type, view[start : start + MAX_PLAINTEXT])
            for start in range(0, len(view), MAX_PLAINTEXT)
        )

    def open(self, header: bytes, body: bytes) -> tuple[int, bytes]:
        """(content type, content) of one protected record; ProtocolError if it does not
        authenticate (bad_record_mac)."""
        try:
            inner = self._aead.decrypt(self._nonce(), body, header)
        except InvalidTag:
            raise ProtocolError("TLS record does not authenticate") from None
        end = len(inner.rstrip(b"\0"))  # §5.4: zeros pad after the real content type
        if not end:
            raise ProtocolError("TLS record with no content type")
        return inner[end - 1], inner[: end - 1]


class RecordSplitter:
    """Whole records out of a byte stream: feed bytes, take (header, body) pairs. Records are
    sliced from the fed buffer by an offset (one copy each), not cut from its front."""

    def __init__(self) -> None:
        self._buffer = b""
        self._offset = 0

    def feed(self, data: bytes | memoryview) -> None:
        if self._offset >= len(self._buffer):
            self._buffer, self._offset = bytes(data), 0
        else:
            self._buffer = self._buffer[self._offset :] + data
            self._offset = 0

    def next_record(self) -> tuple[bytes, bytes] | None:
        buffer, start = self._buffer, self._offset
        if len(buffer) - start < RECORD_HEADER.size:
            return None
        _content, _version, length = RECORD_HEADER.unpack_from(buffer, start)
        if length > MAX_CIPHERTEXT:
            raise ProtocolError(f"TLS record of {length} bytes")
        body_start = start + RECORD_HEADER.size
        end = body_start + length
        if len(buffer) < end:
            return None
        self._offset = end
        return buffer[start:body_start], buffer[body_start:end]

    def take_rest(self) -> bytes:
        """What was fed and not taken as records (the raw stream after a switch to direct copy)."""
        rest = self._buffer[self._offset :]
        self._buffer, self._offset = b"", 0
        return rest
