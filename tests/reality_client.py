"""A REALITY client for tests, as Xray's and sing-box's behave on the wire: a TLS 1.3 hello with
an X25519 share whose session id carries the sealed token (codecs/reality.py), then the TLS 1.3
client handshake on codecs/tls13.py's key schedule, checking the temporary certificate the way
Xray's VerifyPeerCertificate does. Only what the server tests need (X25519, no HRR, no
resumption); elsewhere's own client is codecs/tls13_client.py's."""

from __future__ import annotations

import asyncio
import os
import struct
import time
from dataclasses import dataclass

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey

from elsewhere.codecs import reality
from elsewhere.codecs.tls13 import (
    CIPHER_SUITES,
    CONTENT_APPLICATION_DATA,
    CONTENT_HANDSHAKE,
    KeySchedule,
    RecordProtection,
    RecordSplitter,
    Transcript,
    finished_verify_data,
    handshake_message,
)
from elsewhere.codecs.tls13_server import CERTIFICATE_VERIFY_CONTEXT
from elsewhere.codecs.tls_hello import parse_server_hello
from hellos import as_records, client_hello_message


class NotAuthenticated(Exception):
    """The server showed a certificate that is not REALITY's: we met dest."""


@dataclass
class RealityParams:
    public_key: bytes
    short_id: str = ""
    server_name: str = "localhost"
    version: tuple[int, int, int] = reality.CLIENT_VERSION
    clock_skew: float = 0.0


def hello_for(params: RealityParams) -> tuple[bytes, X25519PrivateKey, bytes]:
    """(records to send, our X25519 key, the auth key)."""
    key = X25519PrivateKey.generate()
    random = os.urandom(32)
    message = client_hello_message(
        random=random, session_id=bytes(32), server_name=params.server_name,
        key_shares=((0x001D, key.public_key().public_bytes_raw()),),
    )
    auth_key = reality.client_auth_key(key, params.public_key, random)
    token = reality.SessionToken(
        version=params.version, timestamp=int(time.time() + params.clock_skew),
        short_id=reality.parse_short_id(params.short_id),
    )
    return as_records(reality.seal_hello(message, auth_key, token)), key, auth_key


class RealityConnection:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer
        self.splitter = RecordSplitter()
        self.incoming: RecordProtection | None = None
        self.outgoing: RecordProtection | None = None

    async def record(self) -> tuple[bytes, bytes]:
        while (record := self.splitter.next_record()) is None:
            data = await self.reader.read(65536)
            if not data:
                raise EOFError("the server closed")
            self.splitter.feed(data)
        return record

    async def handshake(self, params: RealityParams, hello: tuple[bytes, X25519PrivateKey, bytes]
                        ) -> None:
        records, key, auth_key = hello
        message = records[5:]
        self.writer.write(records)
        header, body = await self.record()
        server_hello = parse_server_hello(body)
        suite = CIPHER_SUITES[server_hello.cipher_suite]
        assert server_hello.key_share is not None
        shared = key.exchange(X25519PublicKey.from_public_bytes(server_hello.key_share[1]))
        transcript = Transcript(suite)
        transcript.add(message, body)
        schedule = KeySchedule(suite)
        client_hs, server_hs = schedule.handshake_secrets(shared, transcript.digest())
        reader = RecordProtection(suite, server_hs)
        pending = b""
        certificate = b""
        while True:
            header, body = await self.record()
            if header[0] != CONTENT_APPLICATION_DATA:
                continue  # the ChangeCipherSpec
            _, plain = reader.open(header, body)
            pending += plain
            done = False
            while len(pending) >= 4 and len(pending) >= 4 + int.from_bytes(pending[1:4], "big"):
                size = 4 + int.from_bytes(pending[1:4], "big")
                msg, pending = pending[:size], pending[size:]
                kind = msg[0]
                if kind == 11:  # Certificate: context(1) list(3) first cert_data(3)...
                    length = int.from_bytes(msg[5:8], "big")
                    certificate = msg[8 + 3 : 8 + 3 + int.from_bytes(msg[8:11], "big")]
                    assert length
                    if not reality.verify_temporary_certificate(certificate, auth_key):
                        raise NotAuthenticated("the server did not authenticate")
                elif kind == 15:  # CertificateVerify
                    cert = x509.load_der_x509_certificate(certificate)
                    public = cert.public_key()
                    assert isinstance(public, Ed25519PublicKey)
                    scheme, size = struct.unpack("!HH", msg[4:8])
                    assert scheme == 0x0807
                    signed = CERTIFICATE_VERIFY_CONTEXT + transcript.digest()
                    public.verify(msg[8 : 8 + size], signed)
                elif kind == 20:  # Finished
                    expected = finished_verify_data(suite, server_hs, transcript.digest())
                    assert msg[4:] == expected, "the server's Finished does not verify"
                    done = True
                transcript.add(msg)
            if done:
                break
        client_ap, server_ap = schedule.application_secrets(transcript.digest())
        finished = handshake_message(
            20, finished_verify_data(suite, client_hs, transcript.digest())
        )
        writer = RecordProtection(suite, client_hs)
        self.writer.write(b"\x14\x03\x03\x00\x01\x01" + writer.seal(CONTENT_HANDSHAKE, finished))
        self.outgoing = RecordProtection(suite, client_ap)
        self.incoming = RecordProtection(suite, server_ap)

    def send(self, data: bytes) -> None:
        assert self.outgoing is not None
        self.writer.write(self.outgoing.seal_stream(CONTENT_APPLICATION_DATA, data))

    async def receive(self) -> bytes:
        """The next application data (b"" once the server said close_notify)."""
        assert self.incoming is not None
        while True:
            header, body = await self.record()
            kind, plain = self.incoming.open(header, body)
            if kind == CONTENT_APPLICATION_DATA:
                return plain
            if kind == 21:
                return b""

    def close(self) -> None:
        self.writer.close()


async def connect(port: int, params: RealityParams) -> RealityConnection:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    connection = RealityConnection(reader, writer)
    try:
        await connection.handshake(params, hello_for(params))
    except BaseException:
        writer.close()
        raise
    return connection
