"""A TLS 1.3 client (RFC 8446), sans-I/O: the handshake with a browser-shaped ClientHello
(codecs.client_hellos), HelloRetryRequest, the key schedule (§7), the server's certificate
checked by a CertificateCheck (codecs.tls13_trust), CertificateVerify and Finished, then
application records, KeyUpdate, NewSessionTicket (read and dropped: no resumption), alerts and
close_notify. Crypto is `cryptography`'s: X25519, ML-KEM-768, ECDH P-256/P-384, HKDF, HMAC,
AES-GCM, ChaCha20-Poly1305, signatures. One AEAD call per whole record.

    client = Tls13Client(hello_draft, check)
    send(client.start())                     # the ClientHello record
    client.feed(received, now=time.time())   # server bytes in
    send(client.data_to_send())              # our flight, alerts, records
    for event in client.events(): ...        # HandshakeDone, DataReceived, PeerClosed

Errors from the peer raise TlsError (a ProtocolError), after which data_to_send() holds the
alert a browser would send; CertificateError says why the server's certificate was refused."""

from __future__ import annotations

import contextlib
import struct
import threading
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from hmac import compare_digest
from typing import Any, cast

from cryptography.exceptions import InvalidSignature, InvalidTag
from cryptography.hazmat.primitives import hashes, hmac
from cryptography.hazmat.primitives.asymmetric import (
    ec,
    ed448,
    ed25519,
    mldsa,
    mlkem,
    padding,
    rsa,
)
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import AESGCM, ChaCha20Poly1305
from cryptography.hazmat.primitives.kdf.hkdf import HKDF, HKDFExpand
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from cryptography.x509 import load_der_x509_certificate

from elsewhere.codecs import client_hellos as ch
from elsewhere.codecs.tls13_trust import CertificateCheck, CertificateError
from elsewhere.errors import ProtocolError

# RFC 8446 §5.1 content types
CONTENT_CCS = 20
CONTENT_ALERT = 21
CONTENT_HANDSHAKE = 22
CONTENT_APPLICATION = 23
RECORD = struct.Struct("!BHH")
MAX_PLAIN = 1 << 14  # §5.1
MAX_CIPHERTEXT = MAX_PLAIN + 256  # §5.2
MAX_HANDSHAKE_MESSAGE = 1 << 18  # certificate chains of real sites stay far below
TAG = 16
PLAIN_BUFFER = 512 * 1024  # more than one socket read brings (transports.tls_layer.READ_CHUNK)

# §4 HandshakeType
HS_CLIENT_HELLO = 1
HS_SERVER_HELLO = 2
HS_NEW_SESSION_TICKET = 4
HS_END_OF_EARLY_DATA = 5
HS_ENCRYPTED_EXTENSIONS = 8
HS_CERTIFICATE = 11
HS_CERTIFICATE_REQUEST = 13
HS_CERTIFICATE_VERIFY = 15
HS_FINISHED = 20
HS_KEY_UPDATE = 24
HS_COMPRESSED_CERTIFICATE = 25  # RFC 8879
HS_MESSAGE_HASH = 254

# §6 AlertDescription
ALERT_CLOSE_NOTIFY = 0
ALERT_UNEXPECTED_MESSAGE = 10
ALERT_BAD_RECORD_MAC = 20
ALERT_RECORD_OVERFLOW = 22
ALERT_HANDSHAKE_FAILURE = 40
ALERT_BAD_CERTIFICATE = 42
ALERT_ILLEGAL_PARAMETER = 47
ALERT_DECODE_ERROR = 50
ALERT_DECRYPT_ERROR = 51
ALERT_PROTOCOL_VERSION = 70
ALERT_INTERNAL_ERROR = 80
ALERT_MISSING_EXTENSION = 109
ALERT_UNSUPPORTED_EXTENSION = 110
ALERT_NO_APPLICATION_PROTOCOL = 120
ALERT_FATAL = 2

# §4.1.3: the random of a HelloRetryRequest
HRR_RANDOM = bytes.fromhex("cf21ad74e59a6111be1d8c021e65b891c2a211167abb8c5e079e09e2c8a8339c")
CCS_RECORD = b"\x14\x03\x03\x00\x01\x01"  # middlebox compatibility (§D.4)
SERVER_SIGNATURE_CONTEXT = b" " * 64 + b"TLS 1.3, server CertificateVerify\x00"
MLKEM768_CIPHERTEXT = 1088
X25519_SIZE = 32
SESSION_ID_AT = 39  # type(1) length(3) legacy_version(2) random(32) session id length(1)

SUITES: dict[int, tuple[hashes.HashAlgorithm, int, type[AESGCM] | type[ChaCha20Poly1305]]] = {
    ch.AES_128_GCM_SHA256: (hashes.SHA256(), 16, AESGCM),
    ch.AES_256_GCM_SHA384: (hashes.SHA384(), 32, AESGCM),
    ch.CHACHA20_POLY1305_SHA256: (hashes.SHA256(), 32, ChaCha20Poly1305),
}

# SignatureScheme -> how to check it (§4.2.3); RSA PKCS#1 v1.5 and SHA-1 are TLS 1.2's only
_PSS = {
    ch.RSA_PSS_RSAE_SHA256: hashes.SHA256(), ch.RSA_PSS_RSAE_SHA384: hashes.SHA384(),
    ch.RSA_PSS_RSAE_SHA512: hashes.SHA512(),
    0x0809: hashes.SHA256(), 0x080A: hashes.SHA384(), 0x080B: hashes.SHA512(),  # rsa_pss_pss
}
_ECDSA = {
    ch.ECDSA_SECP256R1_SHA256: (hashes.SHA256(), "secp256r1"),
    ch.ECDSA_SECP384R1_SHA384: (hashes.SHA384(), "secp384r1"),
    ch.ECDSA_SECP521R1_SHA512: (hashes.SHA512(), "secp521r1"),
}
ED448 = 0x0808
_MLDSA: dict[int, type] = {
    ch.MLDSA44: mldsa.MLDSA44PublicKey, ch.MLDSA65: mldsa.MLDSA65PublicKey,
    ch.MLDSA87: mldsa.MLDSA87PublicKey,
}


class TlsError(ProtocolError):
    """The server broke TLS 1.3, or sent an alert; `alert` is what we answer (None: nothing)."""

    def __init__(self, message: str, alert: int | None = ALERT_INTERNAL_ERROR) -> None:
        super().__init__(message)
        self.alert = alert


class CertificateRefused(TlsError):
    """The server's certificate did not pass the CertificateCheck."""


class AlertReceived(TlsError):
    """The server sent a fatal alert (or a warning other than close_notify)."""

    def __init__(self, description: int) -> None:
        super().__init__(f"the server sent TLS alert {description}", alert=None)
        self.description = description


# events


@dataclass(frozen=True, slots=True)
class HandshakeDone:
    alpn: str | None
    cipher_suite: int
    group: int
    certificates: tuple[bytes, ...]  # the server's chain as sent, leaf first (DER)


@dataclass(frozen=True, slots=True)
class DataReceived:
    data: bytes


@dataclass(frozen=True, slots=True)
class PeerClosed:
    """close_notify: the server will send nothing more."""


Event = HandshakeDone | DataReceived | PeerClosed
# Called with the ClientHello message (session id and all) and the X25519 key of its X25519
# share; returns the message to send instead (REALITY seals its token into the session id).
HelloFinisher = Callable[[bytes, X25519PrivateKey], bytes]


# key schedule (§7.1)


def hkdf_expand_label(
    algorithm: hashes.HashAlgorithm, secret: bytes, label: bytes, context: bytes, length: int
) -> bytes:
    full = b"tls13 " + label
    info = struct.pack("!HB", length, len(full)) + full + bytes((len(context),)) + context
    return HKDFExpand(algorithm, length, info).derive(secret)


def hkdf_extract(algorithm: hashes.HashAlgorithm, salt: bytes, ikm: bytes) -> bytes:
    return HKDF.extract(algorithm, salt, ikm)


def derive_secret(
    algorithm: hashes.HashAlgorithm, secret: bytes, label: bytes, transcript_hash: bytes
) -> bytes:
    return hkdf_expand_label(algorithm, secret, label, transcript_hash, algorithm.digest_size)


def _empty_hash(algorithm: hashes.HashAlgorithm) -> bytes:
    digest = hashes.Hash(algorithm)
    return digest.finalize()


class KeySchedule:
    """Early -> handshake -> master secrets for one cipher suite, no PSK (§7.1)."""

    def __init__(self, algorithm: hashes.HashAlgorithm) -> None:
        self.algorithm = algorithm
        zeros = bytes(algorithm.digest_size)
        early = hkdf_extract(algorithm, b"\0", zeros)
        self._derived = derive_secret(algorithm, early, b"derived", _empty_hash(algorithm))
        self.handshake_secret = b""
        self.master_secret = b""

    def handshake(self, shared_secret: bytes, transcript_hash: bytes) -> tuple[bytes, bytes]:
        """(client, server) handshake traffic secrets."""
        a = self.algorithm
        self.handshake_secret = hkdf_extract(a, self._derived, shared_secret)
        client = derive_secret(a, self.handshake_secret, b"c hs traffic", transcript_hash)
        server = derive_secret(a, self.handshake_secret, b"s hs traffic", transcript_hash)
        derived = derive_secret(a, self.handshake_secret, b"derived", _empty_hash(a))
        self.master_secret = hkdf_extract(a, derived, bytes(a.digest_size))
        return client, server

    def application(self, transcript_hash: bytes) -> tuple[bytes, bytes]:
        """(client, server) application traffic secrets, from the hash through server Finished."""
        a = self.algorithm
        return (
            derive_secret(a, self.master_secret, b"c ap traffic", transcript_hash),
            derive_secret(a, self.master_secret, b"s ap traffic", transcript_hash),
        )

    def finished(self, base_key: bytes, transcript_hash: bytes) -> bytes:
        a = self.algorithm
        key = hkdf_expand_label(a, base_key, b"finished", b"", a.digest_size)
        mac = hmac.HMAC(key, a)
        mac.update(transcript_hash)
        return mac.finalize()


class RecordCipher:
    """One direction's AEAD (§5.2-5.3): key and IV from the traffic secret, nonce = IV xor the
    record's sequence number."""

    def __init__(self, suite: int, secret: bytes) -> None:
        algorithm, key_size, aead = SUITES[suite]
        self.suite = suite
        self.algorithm = algorithm
        self.secret = secret
        self.aead = aead(hkdf_expand_label(algorithm, secret, b"key", b"", key_size))
        self.iv = int.from_bytes(hkdf_expand_label(algorithm, secret, b"iv", b"", 12), "big")
        self.sequence = 0

    def next(self) -> RecordCipher:
        """The cipher after a KeyUpdate (§7.2)."""
        a = self.algorithm
        return RecordCipher(
            self.suite, hkdf_expand_label(a, self.secret, b"traffic upd", b"", a.digest_size)
        )

    def _nonce(self) -> bytes:
        nonce = (self.iv ^ self.sequence).to_bytes(12, "big")
        self.sequence += 1
        return nonce

    def seal(self, content_type: int, data: bytes | memoryview) -> bytes:
        """One TLSCiphertext record holding `data` (at most 2^14 bytes)."""
        header = RECORD.pack(CONTENT_APPLICATION, ch.TLS12, len(data) + 1 + TAG)
        inner = bytes(data) + bytes((content_type,))
        return header + self.aead.encrypt(self._nonce(), inner, header)

    def seal_into(self, content_type: int, data: memoryview, out: memoryview) -> int:
        """Seal one record of `data` (at most 2^14 bytes) into `out`; returns its size. The
        plaintext goes through a per-thread scratch buffer once: no other copy."""
        size = len(data)
        scratch = _scratch.inner
        scratch[:size] = data
        scratch[size] = content_type
        length = size + 1 + TAG
        header = RECORD.pack(CONTENT_APPLICATION, ch.TLS12, length)
        out[: RECORD.size] = header
        self.aead.encrypt_into(
            self._nonce(), scratch[: size + 1], header, out[RECORD.size : RECORD.size + length]
        )
        return RECORD.size + length

    def open_into(self, header: bytes, ciphertext: memoryview, out: memoryview) -> tuple[int, int]:
        """Open one record into `out` (room for len(ciphertext) - 16 bytes): (content type,
        content length); the content is out[:length]."""
        inner = len(ciphertext) - TAG
        if inner <= 0:
            raise TlsError("a record too short to hold anything", ALERT_BAD_RECORD_MAC)
        try:
            self.aead.decrypt_into(self._nonce(), ciphertext, header, out[:inner])
        except InvalidTag:
            raise TlsError("a record did not decrypt", ALERT_BAD_RECORD_MAC) from None
        end = inner - 1
        while end >= 0 and not out[end]:  # §5.4 padding (no browser-facing server pads)
            end -= 1
        if end < 0:
            raise TlsError("a record held only padding", ALERT_UNEXPECTED_MESSAGE)
        return out[end], end

    def open(self, header: bytes, ciphertext: bytes | memoryview) -> tuple[int, bytes]:
        try:
            inner = self.aead.decrypt(self._nonce(), ciphertext, header)
        except InvalidTag:
            raise TlsError("a record did not decrypt", ALERT_BAD_RECORD_MAC) from None
        if inner and inner[-1]:
            return inner[-1], inner[:-1]
        inner = inner.rstrip(b"\0")  # §5.4 padding
        if not inner:
            raise TlsError("a record held only padding", ALERT_UNEXPECTED_MESSAGE)
        return inner[-1], inner[:-1]


class _Scratch(threading.local):
    """Per-thread buffers (an event loop runs on one thread): one record's inner plaintext on
    the way out, and what one feed decrypts on the way in (a fresh quarter-MiB buffer per
    read costs page faults: glibc hands such sizes back to the kernel)."""

    def __init__(self) -> None:
        self.inner = memoryview(bytearray(MAX_PLAIN + 1))
        self.plain = memoryview(bytearray(PLAIN_BUFFER))


_scratch = _Scratch()


# key exchange


class _KeyShares:
    """Our private keys for the groups we sent shares for."""

    def __init__(self) -> None:
        self.x25519: dict[int, X25519PrivateKey] = {}
        self.mlkem: dict[int, mlkem.MLKEM768PrivateKey] = {}
        self.ecdh: dict[int, ec.EllipticCurvePrivateKey] = {}

    def make(self, group: int) -> bytes:
        if group == ch.GROUP_X25519:
            key = X25519PrivateKey.generate()
            self.x25519[group] = key
            return key.public_key().public_bytes_raw()
        if group == ch.GROUP_X25519MLKEM768:
            kem = mlkem.MLKEM768PrivateKey.generate()
            key = X25519PrivateKey.generate()
            self.mlkem[group], self.x25519[group] = kem, key
            return kem.public_key().public_bytes_raw() + key.public_key().public_bytes_raw()
        curve = {ch.GROUP_SECP256R1: ec.SECP256R1(), ch.GROUP_SECP384R1: ec.SECP384R1(),
                 ch.GROUP_SECP521R1: ec.SECP521R1()}.get(group)
        if curve is None:
            raise TlsError(f"cannot make a key share for group {group:#06x}")
        private = ec.generate_private_key(curve)
        self.ecdh[group] = private
        return private.public_key().public_bytes(Encoding.X962, PublicFormat.UncompressedPoint)

    def can_make(self, group: int) -> bool:
        return group in (
            ch.GROUP_X25519, ch.GROUP_X25519MLKEM768, ch.GROUP_SECP256R1, ch.GROUP_SECP384R1,
            ch.GROUP_SECP521R1,
        )

    def has(self, group: int) -> bool:
        return group in self.x25519 or group in self.ecdh

    def x25519_key(self) -> X25519PrivateKey | None:
        """The key of the X25519 share, else of the hybrid's X25519 half (REALITY's order)."""
        return self.x25519.get(ch.GROUP_X25519) or self.x25519.get(ch.GROUP_X25519MLKEM768)

    def shared_secret(self, group: int, server_share: bytes) -> bytes:
        try:
            if group == ch.GROUP_X25519:
                return self._x25519(group, server_share)
            if group == ch.GROUP_X25519MLKEM768:
                if len(server_share) != MLKEM768_CIPHERTEXT + X25519_SIZE:
                    raise ValueError("hybrid share of the wrong size")
                kem = self.mlkem[group].decapsulate(server_share[:MLKEM768_CIPHERTEXT])
                return kem + self._x25519(group, server_share[MLKEM768_CIPHERTEXT:])
            private = self.ecdh[group]
            public = ec.EllipticCurvePublicKey.from_encoded_point(private.curve, server_share)
            return private.exchange(ec.ECDH(), public)
        except (ValueError, KeyError):
            raise TlsError("the server's key share is not valid", ALERT_ILLEGAL_PARAMETER) from None

    def _x25519(self, group: int, share: bytes) -> bytes:
        if len(share) != X25519_SIZE:
            raise ValueError("X25519 share of the wrong size")
        return self.x25519[group].exchange(X25519PublicKey.from_public_bytes(share))


# the client

_START, _WAIT_SH, _WAIT_EE, _WAIT_CERT_CR, _WAIT_CERT, _WAIT_CV, _WAIT_FINISHED = range(7)
_CONNECTED, _CLOSED = 7, 8


class Tls13Client:
    """One client connection (see the module's docstring)."""

    def __init__(
        self, draft: ch.HelloDraft, check: CertificateCheck,
        finish_hello: HelloFinisher | None = None,
    ) -> None:
        self.draft = draft
        self.check = check
        self.finish_hello = finish_hello
        self._state = _START
        self._incoming = bytearray()
        self._outgoing: list[bytes] = []
        self._events: list[Event] = []
        self._handshake_buffer = bytearray()
        self._shares = _KeyShares()
        self._transcript: hashes.Hash | None = None
        self._hello = b""
        self._session_id = b""
        self._first_shares: list[tuple[int, bytes]] = []
        self._retried = False
        self._ccs_sent = False
        self._ccs_seen = False
        self._suite = 0
        self._group = 0
        self._schedule: KeySchedule | None = None
        self._read: RecordCipher | None = None
        self._write: RecordCipher | None = None
        self._client_hs_secret = b""
        self._server_hs_secret = b""
        self._alpn: str | None = None
        self._certificates: tuple[bytes, ...] = ()
        self._certificate_requested: bytes | None = None
        self._now = 0.0
        self.closed_by_peer = False

    # public

    @property
    def established(self) -> bool:
        return self._state == _CONNECTED

    def start(self) -> bytes:
        """The ClientHello record (also what data_to_send() would give now)."""
        assert self._state == _START
        shares = [(g, self._shares.make(g)) for g in self.draft.shape.key_share_groups if g]
        message = self.draft.message(shares)
        if self.finish_hello is not None:
            key = self._shares.x25519_key()
            assert key is not None, "a finished hello needs an X25519 share"
            message = self.finish_hello(message, key)
        self._hello = message
        self._session_id = message[SESSION_ID_AT : SESSION_ID_AT + len(self.draft.session_id)]
        self._first_shares = shares
        self._state = _WAIT_SH
        return self._plain_record(CONTENT_HANDSHAKE, message, ch.TLS10)

    def feed(self, data: bytes | bytearray | memoryview, now: float) -> None:
        """Take bytes from the server; raises TlsError (its alert is then in data_to_send())."""
        if self._state == _CLOSED:
            return
        self._now = now
        try:
            self._read_records(data)
        except TlsError as exc:
            self._fail(exc)
            raise

    def events(self) -> Iterator[Event]:
        while self._events:
            yield self._events.pop(0)

    def data_to_send(self) -> bytes:
        out = b"".join(self._outgoing)
        self._outgoing.clear()
        return out

    def send(self, data: bytes | bytearray | memoryview) -> bytearray:
        """`data` as application records, ready for the wire (not queued): whole records of
        2^14 bytes, each sealed by one AEAD call straight into the one output buffer."""
        if self._state != _CONNECTED or self._write is None:
            raise TlsError("send before the handshake finished or after close", None)
        view = memoryview(data).cast("B")
        size = len(view)
        records = -(-size // MAX_PLAIN)
        out = bytearray(size + records * (RECORD.size + 1 + TAG))
        target = memoryview(out)
        seal_into = self._write.seal_into
        at = 0
        for start in range(0, size, MAX_PLAIN):
            at += seal_into(CONTENT_APPLICATION, view[start : start + MAX_PLAIN], target[at:])
        return out

    def close(self) -> bytes:
        """close_notify (§6.1), and this side is done."""
        if self._state == _CLOSED:
            return b""
        alert = self._alert_record(ALERT_CLOSE_NOTIFY, level=1)
        self._state = _CLOSED
        return alert

    def key_update(self, request_peer: bool = False) -> bytes:
        """A KeyUpdate (§4.6.3) and our new write key."""
        if self._state != _CONNECTED or self._write is None:
            raise TlsError("key update before the handshake finished", None)
        record = self._write.seal(CONTENT_HANDSHAKE, b"\x18\x00\x00\x01" + bytes((request_peer,)))
        self._write = self._write.next()
        return record

    # records

    def _read_records(self, data: bytes | bytearray | memoryview) -> None:
        if self._incoming:  # the start of a record came before
            self._incoming += data
            buffer = bytes(self._incoming)
            self._incoming.clear()
        else:
            buffer = data if isinstance(data, bytes) else bytes(data)
        view = memoryview(buffer)  # immutable: record bodies are views, not copies
        size = len(buffer)
        pos = 0
        # application data of all the whole records here, decrypted one after another
        target = _scratch.plain if size <= PLAIN_BUFFER else memoryview(bytearray(size))
        filled = 0
        try:
            while size - pos >= RECORD.size and self._state != _CLOSED:
                content, version, length = RECORD.unpack_from(buffer, pos)
                if length > MAX_CIPHERTEXT or version >> 8 != 3:
                    raise TlsError("not a TLS record from the server", ALERT_RECORD_OVERFLOW)
                end = pos + RECORD.size + length
                if end > size:
                    break
                header = buffer[pos : pos + RECORD.size]
                body = view[pos + RECORD.size : end]
                pos = end
                if content == CONTENT_APPLICATION and self._read is not None:
                    content, count = self._read.open_into(header, body, target[filled:])
                    if content == CONTENT_APPLICATION:
                        if self._state != _CONNECTED:
                            raise TlsError("data before the handshake finished",
                                           ALERT_UNEXPECTED_MESSAGE)
                        filled += count
                        continue
                    inner = bytes(target[filled : filled + count])
                    filled = self._deliver(target, filled)
                    self._record(content, inner, encrypted=True)
                else:
                    filled = self._deliver(target, filled)
                    self._record(content, bytes(body), encrypted=False)
        finally:
            if pos < size:
                self._incoming += view[pos:]
            self._deliver(target, filled)
            view.release()

    def _deliver(self, target: memoryview, filled: int) -> int:
        """Application data decrypted so far goes out as one event."""
        if filled:
            self._events.append(DataReceived(bytes(target[:filled])))
        return 0

    def _record(self, content: int, payload: bytes, encrypted: bool) -> None:
        if content == CONTENT_CCS:
            # one, unencrypted, during the handshake only (§5)
            if encrypted or payload != b"\x01" or self._ccs_seen or self._state >= _CONNECTED:
                raise TlsError("unexpected change_cipher_spec", ALERT_UNEXPECTED_MESSAGE)
            self._ccs_seen = True
        elif content == CONTENT_ALERT:
            self._on_alert(payload)
        elif content == CONTENT_HANDSHAKE:
            if not payload:
                raise TlsError("empty handshake record", ALERT_UNEXPECTED_MESSAGE)
            if encrypted != (self._state not in (_WAIT_SH,)):
                raise TlsError("handshake record under the wrong keys", ALERT_UNEXPECTED_MESSAGE)
            self._handshake_buffer += payload
            self._handshake_messages()
        else:
            raise TlsError(f"record of unknown type {content}", ALERT_UNEXPECTED_MESSAGE)

    def _on_alert(self, payload: bytes) -> None:
        if len(payload) != 2:
            raise TlsError("malformed alert", ALERT_DECODE_ERROR)
        _level, description = payload
        if description == ALERT_CLOSE_NOTIFY:
            self.closed_by_peer = True
            self._events.append(PeerClosed())
            if self._state != _CONNECTED:
                self._state = _CLOSED
                raise TlsError("the server closed during the handshake", None)
            return
        self._state = _CLOSED
        raise AlertReceived(description)

    def _handshake_messages(self) -> None:
        buffer = self._handshake_buffer
        while len(buffer) >= 4:
            length = int.from_bytes(buffer[1:4], "big")
            if length > MAX_HANDSHAKE_MESSAGE:
                raise TlsError("handshake message too large", ALERT_DECODE_ERROR)
            if len(buffer) < 4 + length:
                return
            message = bytes(buffer[: 4 + length])
            del buffer[: 4 + length]
            self._handshake(message[0], message[4:], message)
            if self._state == _WAIT_EE and buffer and self._read is None:
                raise TlsError("ServerHello shared a record with encrypted messages",
                               ALERT_UNEXPECTED_MESSAGE)

    # handshake (§4)

    def _handshake(self, kind: int, body: bytes, message: bytes) -> None:
        state = self._state
        if state == _WAIT_SH and kind == HS_SERVER_HELLO:
            self._server_hello(body, message)
        elif state == _WAIT_EE and kind == HS_ENCRYPTED_EXTENSIONS:
            self._encrypted_extensions(body)
            self._update(message)
            self._state = _WAIT_CERT_CR
        elif state == _WAIT_CERT_CR and kind == HS_CERTIFICATE_REQUEST:
            context = _Reader(body).vector(1)
            self._certificate_requested = context
            self._update(message)
            self._state = _WAIT_CERT
        elif state in (_WAIT_CERT_CR, _WAIT_CERT) and kind in (
            HS_CERTIFICATE, HS_COMPRESSED_CERTIFICATE
        ):
            plain = body if kind == HS_CERTIFICATE else self._decompress(body)
            self._certificate(plain)
            self._update(message)
            self._state = _WAIT_CV
        elif state == _WAIT_CV and kind == HS_CERTIFICATE_VERIFY:
            self._certificate_verify(body)
            self._update(message)
            self._state = _WAIT_FINISHED
        elif state == _WAIT_FINISHED and kind == HS_FINISHED:
            self._finished(body, message)
        elif state == _CONNECTED and kind == HS_NEW_SESSION_TICKET:
            pass  # no resumption: a browser with no cache entry sends no PSK either
        elif state == _CONNECTED and kind == HS_KEY_UPDATE:
            self._key_update(body)
        else:
            raise TlsError(f"unexpected handshake message {kind}", ALERT_UNEXPECTED_MESSAGE)

    def _server_hello(self, body: bytes, message: bytes) -> None:
        r = _Reader(body)
        legacy_version = r.u16()
        random = r.take(32)
        session_id = r.vector(1)
        suite = r.u16()
        compression = r.u8()
        extensions = r.extensions()
        r.end()
        versions = extensions.get(0x002B)
        if versions is None:
            raise TlsError(
                "the server does not speak TLS 1.3 (it answered TLS "
                f"{'1.2' if legacy_version == ch.TLS12 else hex(legacy_version)})",
                ALERT_PROTOCOL_VERSION,
            )
        if versions != struct.pack("!H", ch.TLS13) or legacy_version != ch.TLS12:
            raise TlsError("the server chose a version other than TLS 1.3", ALERT_ILLEGAL_PARAMETER)
        if session_id != self._session_id:
            raise TlsError("the server did not echo our session id", ALERT_ILLEGAL_PARAMETER)
        if suite not in SUITES or suite not in self.draft.shape.cipher_suites or compression:
            raise TlsError("the server chose a cipher suite we did not offer",
                           ALERT_ILLEGAL_PARAMETER)
        if random == HRR_RANDOM:
            self._hello_retry(suite, extensions, message)
            return
        if self._retried and suite != self._suite:
            raise TlsError("the cipher suite changed after HelloRetryRequest",
                           ALERT_ILLEGAL_PARAMETER)
        share = extensions.get(ch.EXT_KEY_SHARE)
        if share is None or len(share) < 4:
            raise TlsError("the server sent no key share", ALERT_MISSING_EXTENSION)
        group, key_length = struct.unpack_from("!HH", share)
        if not self._shares.has(group) or len(share) != 4 + key_length:
            raise TlsError("the server's key share is for a group we sent none for",
                           ALERT_ILLEGAL_PARAMETER)
        for kind in extensions:
            if kind not in (ch.EXT_KEY_SHARE, ch.EXT_SUPPORTED_VERSIONS, 0x0029):
                raise TlsError(f"ServerHello with extension {kind:#06x}",
                               ALERT_UNSUPPORTED_EXTENSION)
        if 0x0029 in extensions:
            raise TlsError("the server accepted a PSK we did not offer", ALERT_ILLEGAL_PARAMETER)
        shared = self._shares.shared_secret(group, share[4:])
        self._suite, self._group = suite, group
        self._start_transcript(suite)
        self._update(message)
        algorithm = SUITES[suite][0]
        self._schedule = KeySchedule(algorithm)
        client, server = self._schedule.handshake(shared, self._hash())
        self._client_hs_secret, self._server_hs_secret = client, server
        self._read = RecordCipher(suite, server)
        self._state = _WAIT_EE

    def _hello_retry(self, suite: int, extensions: dict[int, bytes], message: bytes) -> None:
        """§4.1.4: send the hello again with a share for the group the server asked for."""
        if self._retried:
            raise TlsError("a second HelloRetryRequest", ALERT_UNEXPECTED_MESSAGE)
        self._retried = True
        share = extensions.get(ch.EXT_KEY_SHARE)
        cookie_ext = extensions.get(ch.EXT_COOKIE)
        group = struct.unpack("!H", share)[0] if share is not None and len(share) == 2 else None
        if group is None and cookie_ext is None:
            raise TlsError("HelloRetryRequest asking for nothing", ALERT_ILLEGAL_PARAMETER)
        if group is not None and (
            group not in self.draft.shape.groups or self._shares.has(group)
            or not self._shares.can_make(group)
        ):
            raise TlsError("HelloRetryRequest for a group we cannot use", ALERT_ILLEGAL_PARAMETER)
        cookie = _Reader(cookie_ext).vector(2) if cookie_ext is not None else None
        self._suite = suite
        # the transcript starts again from message_hash(ClientHello1) (§4.4.1)
        algorithm = SUITES[suite][0]
        first = hashes.Hash(algorithm)
        first.update(self._hello)
        self._transcript = hashes.Hash(algorithm)
        digest = first.finalize()
        self._update(bytes((HS_MESSAGE_HASH, 0, 0, len(digest))) + digest)
        self._update(message)
        if group is not None:
            self._shares = _KeyShares()
            shares = [(group, self._shares.make(group))]
        else:  # a cookie only: the same shares again
            shares = self._first_shares
        hello = self.draft.message(shares, cookie, retry=True)
        if self.finish_hello is not None:
            key = self._shares.x25519_key()
            if key is not None:
                hello = self.finish_hello(hello, key)
        self._update(hello)
        self._hello = hello
        self._session_id = hello[SESSION_ID_AT : SESSION_ID_AT + len(self.draft.session_id)]
        self._send_ccs()
        self._outgoing.append(self._plain_record(CONTENT_HANDSHAKE, hello, ch.TLS12))

    def _encrypted_extensions(self, body: bytes) -> None:
        r = _Reader(body)
        extensions = r.extensions()
        r.end()
        alpn = extensions.get(ch.EXT_ALPN)
        if alpn is not None:
            protocols = _Reader(_Reader(alpn).vector(2))
            chosen = protocols.vector(1).decode("latin-1")
            protocols.end()
            if chosen not in self.draft.alpn:
                raise TlsError(f"the server chose ALPN {chosen!r}, which we did not offer",
                               ALERT_ILLEGAL_PARAMETER)
            self._alpn = chosen

    def _decompress(self, body: bytes) -> bytes:
        r = _Reader(body)
        algorithm = r.u16()
        size = r.u24()
        data = r.vector(3)
        r.end()
        if algorithm not in self.draft.shape.cert_compression or size > MAX_HANDSHAKE_MESSAGE:
            raise TlsError("certificate compressed with an algorithm we did not offer",
                           ALERT_BAD_CERTIFICATE)
        try:
            if algorithm == ch.CERT_COMPRESSION_ZLIB:
                plain = zlib.decompressobj().decompress(data, size + 1)
            elif algorithm == ch.CERT_COMPRESSION_BROTLI:  # Chrome's only one; CDNs use it
                brotli = _brotli()
                decompressor = brotli.Decompressor()
                plain = decompressor.process(data, output_buffer_limit=size + 1)
                if not decompressor.is_finished():
                    raise TlsError("compressed certificate larger than it said",
                                   ALERT_BAD_CERTIFICATE)
            else:
                raise TlsError(
                    f"the server compressed its certificate with algorithm {algorithm}, "
                    "which this build cannot read", ALERT_BAD_CERTIFICATE,
                )
        except TlsError:
            raise
        except Exception:  # zlib.error, brotli.error: the peer's bytes do not decompress
            raise TlsError("compressed certificate does not decompress",
                           ALERT_BAD_CERTIFICATE) from None
        if len(plain) != size:
            raise TlsError("compressed certificate of the wrong size", ALERT_BAD_CERTIFICATE)
        return plain

    def _certificate(self, body: bytes) -> None:
        r = _Reader(body)
        if r.vector(1):
            raise TlsError("server Certificate with a request context", ALERT_ILLEGAL_PARAMETER)
        entries = _Reader(r.vector(3))
        r.end()
        chain: list[bytes] = []
        while entries.left():
            chain.append(entries.vector(3))
            entries.vector(2)  # per-certificate extensions (OCSP, SCT): not used
        if not chain:
            raise TlsError("the server sent no certificate", ALERT_BAD_CERTIFICATE)
        try:
            self.check.check(chain, self._now)
        except CertificateError as exc:
            raise CertificateRefused(str(exc), exc.alert) from None
        self._certificates = tuple(chain)

    def _certificate_verify(self, body: bytes) -> None:
        r = _Reader(body)
        scheme = r.u16()
        signature = r.vector(2)
        r.end()
        if scheme not in self.draft.shape.signature_algorithms and scheme not in (
            ch.ED25519, ED448, *_PSS
        ):
            raise TlsError(f"CertificateVerify with scheme {scheme:#06x} we did not offer",
                           ALERT_ILLEGAL_PARAMETER)
        signed = SERVER_SIGNATURE_CONTEXT + self._hash()
        try:
            key = load_der_x509_certificate(self._certificates[0]).public_key()
            if scheme in _PSS and isinstance(key, rsa.RSAPublicKey):
                algorithm = _PSS[scheme]
                key.verify(signature, signed, padding.PSS(
                    mgf=padding.MGF1(algorithm), salt_length=algorithm.digest_size), algorithm)
            elif scheme in _ECDSA and isinstance(key, ec.EllipticCurvePublicKey):
                algorithm, curve = _ECDSA[scheme]
                if key.curve.name != curve:
                    raise InvalidSignature
                key.verify(signature, signed, ec.ECDSA(algorithm))
            elif (
                (scheme == ch.ED25519 and isinstance(key, ed25519.Ed25519PublicKey))
                or (scheme == ED448 and isinstance(key, ed448.Ed448PublicKey))
            ):
                key.verify(signature, signed)
            elif scheme in _MLDSA and isinstance(key, _MLDSA[scheme]):
                cast("mldsa.MLDSA65PublicKey", key).verify(signature, signed)
            else:
                raise InvalidSignature
        except (InvalidSignature, ValueError):
            raise TlsError("the server's CertificateVerify signature is wrong",
                           ALERT_DECRYPT_ERROR) from None

    def _finished(self, body: bytes, message: bytes) -> None:
        assert self._schedule is not None
        expected = self._schedule.finished(self._server_hs_secret, self._hash())
        if not compare_digest(body, expected):
            raise TlsError("the server's Finished is wrong", ALERT_DECRYPT_ERROR)
        self._update(message)
        client_ap, server_ap = self._schedule.application(self._hash())
        handshake_write = RecordCipher(self._suite, self._client_hs_secret)
        flight: list[bytes] = []
        if self._certificate_requested is not None:  # we have none: an empty Certificate
            empty = b"\x0b" + (len(self._certificate_requested) + 4).to_bytes(3, "big") + bytes(
                (len(self._certificate_requested),)) + self._certificate_requested + b"\0\0\0"
            self._update(empty)
            flight.append(empty)
        verify = self._schedule.finished(self._client_hs_secret, self._hash())
        finished = b"\x14" + len(verify).to_bytes(3, "big") + verify
        self._update(finished)
        flight.append(finished)
        self._send_ccs()
        self._outgoing.append(handshake_write.seal(CONTENT_HANDSHAKE, b"".join(flight)))
        self._read = RecordCipher(self._suite, server_ap)
        self._write = RecordCipher(self._suite, client_ap)
        self._state = _CONNECTED
        self._events.append(
            HandshakeDone(self._alpn, self._suite, self._group, self._certificates)
        )

    def _key_update(self, body: bytes) -> None:
        if len(body) != 1 or body[0] > 1:
            raise TlsError("malformed KeyUpdate", ALERT_DECODE_ERROR)
        if self._handshake_buffer:
            raise TlsError("KeyUpdate not at a record boundary", ALERT_UNEXPECTED_MESSAGE)
        assert self._read is not None and self._write is not None
        self._read = self._read.next()
        if body[0]:  # update_requested: answer with ours, not requesting (§4.6.3)
            self._outgoing.append(self.key_update(request_peer=False))

    # helpers

    def _start_transcript(self, suite: int) -> None:
        if self._transcript is None:  # (after an HRR it already runs)
            self._transcript = hashes.Hash(SUITES[suite][0])
            self._transcript.update(self._hello)

    def _update(self, message: bytes) -> None:
        assert self._transcript is not None
        self._transcript.update(message)

    def _hash(self) -> bytes:
        assert self._transcript is not None
        return self._transcript.copy().finalize()

    def _send_ccs(self) -> None:
        if not self._ccs_sent:  # once, before our second flight (§D.4), as Chrome and NSS
            self._ccs_sent = True
            self._outgoing.append(CCS_RECORD)

    def _plain_record(self, content: int, data: bytes, version: int) -> bytes:
        return RECORD.pack(content, version, len(data)) + data

    def _alert_record(self, description: int, level: int = ALERT_FATAL) -> bytes:
        alert = bytes((level, description))
        if self._write is not None:
            return self._write.seal(CONTENT_ALERT, alert)
        if self._state == _WAIT_EE or self._state in (_WAIT_CERT_CR, _WAIT_CERT, _WAIT_CV,
                                                     _WAIT_FINISHED):
            return RecordCipher(self._suite, self._client_hs_secret).seal(CONTENT_ALERT, alert)
        return self._plain_record(CONTENT_ALERT, alert, ch.TLS12)

    def _fail(self, exc: TlsError) -> None:
        if exc.alert is not None and self._state != _CLOSED:
            with contextlib.suppress(KeyError, ValueError):
                self._outgoing.append(self._alert_record(exc.alert))
        self._state = _CLOSED


def _brotli() -> Any:
    """The brotli module (a pinned dependency), imported when a server first uses it, so that
    a venv set up before it was added still speaks TLS to every other server."""
    try:
        import brotli
    except ImportError:
        raise TlsError(
            "the server compressed its certificate with brotli: install the brotli package "
            "(./scripts/setup)", ALERT_BAD_CERTIFICATE,
        ) from None
    return brotli


class _Reader:
    """Bounds-checked reads; running short is a decode_error."""

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.offset = 0

    def left(self) -> int:
        return len(self.data) - self.offset

    def take(self, count: int) -> bytes:
        if count > self.left():
            raise TlsError("handshake message runs past its end", ALERT_DECODE_ERROR)
        piece = self.data[self.offset : self.offset + count]
        self.offset += count
        return piece

    def u8(self) -> int:
        return self.take(1)[0]

    def u16(self) -> int:
        return int.from_bytes(self.take(2), "big")

    def u24(self) -> int:
        return int.from_bytes(self.take(3), "big")

    def vector(self, size_bytes: int) -> bytes:
        return self.take(int.from_bytes(self.take(size_bytes), "big"))

    def extensions(self) -> dict[int, bytes]:
        found: dict[int, bytes] = {}
        if not self.left():
            return found
        r = _Reader(self.vector(2))
        while r.left():
            kind = r.u16()
            if kind in found:
                raise TlsError("an extension twice", ALERT_ILLEGAL_PARAMETER)
            found[kind] = r.vector(2)
        return found

    def end(self) -> None:
        if self.left():
            raise TlsError("trailing bytes in a handshake message", ALERT_DECODE_ERROR)
