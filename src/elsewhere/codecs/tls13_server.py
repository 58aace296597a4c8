"""A TLS 1.3 server handshake and record layer (RFC 8446), sans-I/O, for REALITY: it answers an
authenticated ClientHello with the temporary certificate, signed with ed25519 whatever the
client's signature_algorithms say (browsers' hellos do not list ed25519, and OpenSSL, rightly
for a web server, refuses to sign with a scheme the client did not offer: so this cannot be
OpenSSL), and it copies dest's ServerHello and dest's record lengths, as XTLS/REALITY does, so
that the server's flight has the shape of the real site's. Full handshakes only (no PSK, no
0-RTT, no client certificates, no HelloRetryRequest); KeyUpdate and close_notify handled.

Every primitive is `cryptography`'s (X25519, ML-KEM-768, HKDF, AES-GCM, ChaCha20-Poly1305,
ed25519); codecs/tls13.py holds the key schedule and record protection."""

from __future__ import annotations

import os
import struct
from dataclasses import dataclass

from cryptography.hazmat.primitives.asymmetric import mlkem
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey

from elsewhere.codecs.tls13 import (
    CIPHER_SUITES,
    CONTENT_ALERT,
    CONTENT_APPLICATION_DATA,
    CONTENT_CHANGE_CIPHER_SPEC,
    CONTENT_HANDSHAKE,
    LEGACY_RECORD_VERSION,
    RECORD_HEADER,
    TLS_AES_128_GCM_SHA256,
    KeySchedule,
    RecordProtection,
    RecordSplitter,
    Transcript,
    finished_verify_data,
    handshake_message,
    next_traffic_secret,
)
from elsewhere.codecs.tls_hello import (
    CONTENT_HANDSHAKE as RECORD_HANDSHAKE,
)
from elsewhere.codecs.tls_hello import (
    EXT_ALPN,
    EXT_KEY_SHARE,
    EXT_SUPPORTED_VERSIONS,
    HANDSHAKE_SERVER_HELLO,
    TLS13,
    ClientHello,
    ServerHello,
    parse_server_hello,
)
from elsewhere.errors import ProtocolError

GROUP_X25519 = 0x001D
GROUP_X25519MLKEM768 = 0x11EC
MLKEM768_ENCAPSULATION_KEY = 1184
SCHEME_ED25519 = 0x0807
HS_ENCRYPTED_EXTENSIONS = 8
HS_CERTIFICATE = 11
HS_CERTIFICATE_VERIFY = 15
HS_FINISHED = 20
HS_KEY_UPDATE = 24
HS_NEW_SESSION_TICKET = 4
ALERT_CLOSE_NOTIFY = 0
CHANGE_CIPHER_SPEC_RECORD = b"\x14\x03\x03\x00\x01\x01"
CERTIFICATE_VERIFY_CONTEXT = b" " * 64 + b"TLS 1.3, server CertificateVerify\x00"
# XTLS/REALITY reads at most this much of dest's first flight before it gives up mimicking it.
MAX_DEST_FLIGHT = 8192
COMBINED_RECORD = 512  # a first encrypted record longer than this holds the whole flight


@dataclass(frozen=True, slots=True)
class DestFlight:
    """What the REALITY server learnt from dest's answer to the same ClientHello: its
    ServerHello (copied but for the key share) and the total lengths of its encrypted
    handshake records, which ours are padded to."""

    server_hello: ServerHello
    record_lengths: tuple[int, ...]


def read_dest_flight(data: bytes) -> DestFlight | bool | None:
    """dest's first bytes -> a DestFlight once enough has come; None while more is needed;
    False when they are not a TLS 1.3 flight REALITY can copy (a HelloRetryRequest, TLS 1.2,
    an alert, too long), and the connection must be spliced instead."""
    offset = 0
    records: list[tuple[int, bytes]] = []
    while len(data) >= offset + 5:
        content, version, length = RECORD_HEADER.unpack_from(data, offset)
        end = offset + 5 + length
        if version != LEGACY_RECORD_VERSION or length > MAX_DEST_FLIGHT:
            return False
        if len(data) < end:
            break
        records.append((content, data[offset:end]))
        offset = end
    if offset > MAX_DEST_FLIGHT:
        return False
    if not records:
        return None
    content, first = records[0]
    if content != RECORD_HANDSHAKE or first[5] != HANDSHAKE_SERVER_HELLO:
        return False
    try:
        hello = parse_server_hello(first[5:])
    except ProtocolError:
        return False
    share = hello.key_share
    if (
        hello.supported_version != TLS13 or hello.cipher_suite not in CIPHER_SUITES
        or share is None or len(first) - 5 != len(hello.message)
        or not (
            (share[0] == GROUP_X25519 and len(share[1]) == 32)
            or (share[0] == GROUP_X25519MLKEM768 and len(share[1]) == 1088 + 32)
        )
    ):
        return False
    if len(records) < 2:
        return None
    if records[1] != (CONTENT_CHANGE_CIPHER_SPEC, CHANGE_CIPHER_SPEC_RECORD):
        return False
    encrypted = [record for content, record in records[2:] if content == CONTENT_APPLICATION_DATA]
    if len(encrypted) != len(records) - 2:
        return False
    if encrypted and len(encrypted[0]) > COMBINED_RECORD:
        return DestFlight(hello, (len(encrypted[0]),))
    if len(encrypted) < 4:
        return None
    return DestFlight(hello, tuple(len(record) for record in encrypted[:4]))


@dataclass(frozen=True, slots=True)
class ServerIdentity:
    """The certificate chain the server shows and the ed25519 key that signs for it."""

    chain: tuple[bytes, ...]  # DER, leaf first
    key: Ed25519PrivateKey


class Tls13Server:
    """One server connection. start() gives the server's flight; then receive() the client's
    bytes and take application data with next_data() until it returns None; send() seals,
    close() says close_notify. take_output() has what the connection must send on its own
    (the answer to a KeyUpdate)."""

    def __init__(
        self,
        hello: ClientHello,
        identity: ServerIdentity,
        *,
        dest: DestFlight | None = None,
        alpn: tuple[str, ...] = (),
    ) -> None:
        if not hello.offers_tls13:
            raise ProtocolError("the client does not offer TLS 1.3")
        self.hello = hello
        self.identity = identity
        self.dest = dest
        self.alpn_choices = alpn
        self.alpn: str | None = None
        suite_code = dest.server_hello.cipher_suite if dest else _pick_suite(hello)
        self.suite = CIPHER_SUITES[suite_code]
        self.transcript = Transcript(self.suite)
        self.schedule = KeySchedule(self.suite)
        self._splitter = RecordSplitter()
        self._reader: RecordProtection | None = None
        self._writer: RecordProtection | None = None
        self._client_handshake_secret = b""
        self._client_application_secret = b""
        self._expected_finished = b""
        self._handshake_buffer = b""
        self._output = bytearray()
        self.handshake_complete = False
        self.peer_closed = False
        self.closed = False

    # -- the handshake --------------------------------------------------------------------------

    def start(self) -> bytes:
        """ServerHello, ChangeCipherSpec (middlebox compatibility, §D.4, as dest sent it),
        EncryptedExtensions, Certificate, CertificateVerify, Finished."""
        server_hello, shared = self._server_hello()
        self.transcript.add(self.hello.message, server_hello)
        client_hs, server_hs = self.schedule.handshake_secrets(shared, self.transcript.digest())
        self._client_handshake_secret = client_hs
        self._reader = RecordProtection(self.suite, client_hs)
        writer = RecordProtection(self.suite, server_hs)

        extensions = b""
        chosen = next((p for p in self.hello.alpn if p in self.alpn_choices), None)
        if chosen is not None:
            self.alpn = chosen
            name = chosen.encode()
            protocols = bytes((len(name),)) + name
            extensions += struct.pack("!HHH", EXT_ALPN, len(protocols) + 2, len(protocols))
            extensions += protocols
        encrypted_extensions = handshake_message(
            HS_ENCRYPTED_EXTENSIONS, struct.pack("!H", len(extensions)) + extensions
        )
        entries = b"".join(
            len(der).to_bytes(3, "big") + der + b"\x00\x00" for der in self.identity.chain
        )
        certificate = handshake_message(HS_CERTIFICATE, b"\x00" + len(entries).to_bytes(3, "big")
                                        + entries)
        self.transcript.add(encrypted_extensions, certificate)
        signature = self.identity.key.sign(CERTIFICATE_VERIFY_CONTEXT + self.transcript.digest())
        verify = handshake_message(
            HS_CERTIFICATE_VERIFY, struct.pack("!HH", SCHEME_ED25519, len(signature)) + signature
        )
        self.transcript.add(verify)
        finished = handshake_message(
            HS_FINISHED, finished_verify_data(self.suite, server_hs, self.transcript.digest())
        )
        self.transcript.add(finished)
        client_ap, server_ap = self.schedule.application_secrets(self.transcript.digest())
        self._client_application_secret = client_ap
        self._expected_finished = finished_verify_data(
            self.suite, client_hs, self.transcript.digest()
        )
        messages = (encrypted_extensions, certificate, verify, finished)
        lengths = self.dest.record_lengths if self.dest else ()
        if len(lengths) == 1:
            records = [_padded(writer, CONTENT_HANDSHAKE, b"".join(messages), lengths[0])]
        elif len(lengths) == 4:
            records = [
                _padded(writer, CONTENT_HANDSHAKE, message, length)
                for message, length in zip(messages, lengths, strict=True)
            ]
        else:
            records = [writer.seal(CONTENT_HANDSHAKE, b"".join(messages))]
        self._writer = RecordProtection(self.suite, server_ap)
        return _plain_record(RECORD_HANDSHAKE, server_hello) + CHANGE_CIPHER_SPEC_RECORD + b"".join(
            records
        )

    def _server_hello(self) -> tuple[bytes, bytes]:
        """Our ServerHello and the (EC)DHE shared secret."""
        hello = self.hello
        if self.dest is not None:
            copied = self.dest.server_hello
            assert copied.key_share is not None
            group = copied.key_share[0]
        else:
            group = GROUP_X25519 if hello.key_share(GROUP_X25519) else GROUP_X25519MLKEM768
        client_share = hello.key_share(group)
        if client_share is None:
            raise ProtocolError("the client sent no key share for the group")
        ephemeral = X25519PrivateKey.generate()
        x25519_public = ephemeral.public_key().public_bytes_raw()
        try:
            if group == GROUP_X25519:
                if len(client_share) != 32:
                    raise ProtocolError("X25519 share of the wrong size")
                shared = ephemeral.exchange(X25519PublicKey.from_public_bytes(client_share))
                share = x25519_public
            else:
                if len(client_share) != MLKEM768_ENCAPSULATION_KEY + 32:
                    raise ProtocolError("X25519MLKEM768 share of the wrong size")
                encapsulation_key = mlkem.MLKEM768PublicKey.from_public_bytes(
                    client_share[:MLKEM768_ENCAPSULATION_KEY]
                )
                mlkem_secret, ciphertext = encapsulation_key.encapsulate()
                shared = mlkem_secret + ephemeral.exchange(
                    X25519PublicKey.from_public_bytes(client_share[MLKEM768_ENCAPSULATION_KEY:])
                )
                share = ciphertext + x25519_public
        except ValueError as exc:
            raise ProtocolError(f"unusable key share: {exc}") from None
        if self.dest is not None:
            # dest's ServerHello byte for byte, but for the key share (same group, same size)
            message = self.dest.server_hello.message
            at = self.dest.server_hello.key_share_offset
            return message[:at] + share + message[at + len(share) :], shared
        shares = struct.pack("!HH", group, len(share)) + share
        extensions = (
            struct.pack("!HHH", EXT_SUPPORTED_VERSIONS, 2, TLS13)
            + struct.pack("!HH", EXT_KEY_SHARE, len(shares)) + shares
        )
        body = (
            struct.pack("!H", LEGACY_RECORD_VERSION) + os.urandom(32)
            + bytes((len(hello.session_id),)) + hello.session_id
            + struct.pack("!HB", self.suite.code, 0)
            + struct.pack("!H", len(extensions)) + extensions
        )
        return handshake_message(HANDSHAKE_SERVER_HELLO, body), shared

    # -- records in -----------------------------------------------------------------------------

    def receive(self, data: bytes | memoryview) -> None:
        self._splitter.feed(data)

    def next_data(self) -> bytes | None:
        """The content of the next application data record (b"" for a record that carried
        none), or None when no whole record is waiting. Handshake and alert records are dealt
        with on the way; a bad one raises ProtocolError (the adapter closes the connection)."""
        while True:
            record = self._splitter.next_record()
            if record is None or self.peer_closed:
                return None
            header, body = record
            content = header[0]
            if content == CONTENT_CHANGE_CIPHER_SPEC and not self.handshake_complete:
                if body != b"\x01":
                    raise ProtocolError("malformed ChangeCipherSpec")
                continue  # §5: dropped during the handshake
            if content != CONTENT_APPLICATION_DATA:
                raise ProtocolError("unprotected record after the ServerHello")
            assert self._reader is not None
            inner_type, plain = self._reader.open(header, body)
            if inner_type == CONTENT_APPLICATION_DATA:
                if not self.handshake_complete:
                    raise ProtocolError("application data before the client's Finished")
                return plain
            if inner_type == CONTENT_HANDSHAKE:
                self._handshake_bytes(plain)
            elif inner_type == CONTENT_ALERT:
                if plain[-1:] == bytes((ALERT_CLOSE_NOTIFY,)):
                    self.peer_closed = True
                    return None
                raise ProtocolError(f"TLS alert {plain.hex()} from the client")
            else:
                raise ProtocolError(f"TLS record of content type {inner_type}")

    def _handshake_bytes(self, data: bytes) -> None:
        buffer = self._handshake_buffer + data
        while len(buffer) >= 4:
            length = int.from_bytes(buffer[1:4], "big")
            if len(buffer) < 4 + length:
                break
            message, buffer = buffer[: 4 + length], buffer[4 + length :]
            self._handshake_message(message)
        self._handshake_buffer = buffer

    def _handshake_message(self, message: bytes) -> None:
        kind = message[0]
        if not self.handshake_complete:
            if kind != HS_FINISHED or message[4:] != self._expected_finished:
                raise ProtocolError("the client's Finished does not verify")
            self.handshake_complete = True
            self._reader = RecordProtection(self.suite, self._client_application_secret)
            return
        if kind == HS_KEY_UPDATE and len(message) == 5:
            assert self._reader is not None and self._writer is not None
            self._reader = RecordProtection(
                self.suite, next_traffic_secret(self.suite, self._reader.secret)
            )
            if message[4] == 1:  # update_requested: answer with our own, not requesting
                self._output += self._writer.seal(
                    CONTENT_HANDSHAKE, handshake_message(HS_KEY_UPDATE, b"\x00")
                )
                self._writer = RecordProtection(
                    self.suite, next_traffic_secret(self.suite, self._writer.secret)
                )
            return
        raise ProtocolError(f"unexpected handshake message {kind} after the handshake")

    def take_rest(self) -> bytes:
        """Bytes received but not taken as records: after Vision's switch to direct copy
        they are the raw inner stream."""
        return self._splitter.take_rest()

    def take_output(self) -> bytes:
        output = bytes(self._output)
        self._output.clear()
        return output

    # -- records out ----------------------------------------------------------------------------

    def send(self, data: bytes | bytearray | memoryview) -> bytes:
        assert self._writer is not None
        return self._writer.seal_stream(CONTENT_APPLICATION_DATA, data)

    def close(self) -> bytes:
        """close_notify (warning level), once."""
        if self.closed or self._writer is None:
            return b""
        self.closed = True
        return self._writer.seal(CONTENT_ALERT, b"\x01" + bytes((ALERT_CLOSE_NOTIFY,)))


def _pick_suite(hello: ClientHello) -> int:
    """The client's first TLS 1.3 suite we have (a server without dest to copy)."""
    for code in hello.cipher_suites:
        if code in CIPHER_SUITES:
            return code
    if TLS_AES_128_GCM_SHA256 not in hello.cipher_suites:
        raise ProtocolError("no TLS 1.3 cipher suite in common")
    return TLS_AES_128_GCM_SHA256


def _plain_record(content_type: int, payload: bytes) -> bytes:
    return RECORD_HEADER.pack(content_type, LEGACY_RECORD_VERSION, len(payload)) + payload


def _padded(writer: RecordProtection, content_type: int, message: bytes, total: int) -> bytes:
    """A record of `total` bytes on the wire when the message fits, else just the message."""
    overhead = RECORD_HEADER.size + 1 + 16
    return writer.seal(content_type, message, padding=max(0, total - overhead - len(message)))
