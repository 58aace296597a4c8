"""The client's TLS as a stream layer: codecs.tls13_client (our own TLS 1.3, a browser's
ClientHello) between the socket and the protocol above, so that every elsewhere TLS client
shows a censor Chrome's or Firefox's hello, not Python's. Certificates are checked as strictly
as the stdlib's client did (transports.tls): the chain against the system's roots and the
name, or the pinned leaf, or nothing when a person asked for insecure.

Failures raise what the stdlib's TLS raised, so callers keep their handling: PinMismatchError
or ssl.SSLCertVerificationError for a certificate, ssl.SSLError for the rest, with one line
saying why."""

from __future__ import annotations

import asyncio
import functools
import logging
import os
import ssl
import time
import warnings
from collections.abc import Callable
from typing import Any, cast

from cryptography import x509
from cryptography.utils import CryptographyDeprecationWarning
from cryptography.x509.verification import Store

from elsewhere.codecs import client_hellos
from elsewhere.codecs.tls13_client import (
    CertificateRefused,
    DataReceived,
    HandshakeDone,
    HelloFinisher,
    PeerClosed,
    Tls13Client,
    TlsError,
)
from elsewhere.codecs.tls13_trust import (
    AnyCertificate,
    CertificateCheck,
    ChainCheck,
    PinCheck,
)
from elsewhere.errors import ConfigError
from elsewhere.transports.layer import Layer, Pending
from elsewhere.transports.tls import PinMismatchError, parse_pin

log = logging.getLogger("elsewhere.tls")


@functools.cache
def system_roots(ca_file: str | None = None) -> Store:
    """The trusted roots: `ca_file`, or the system's bundle (OpenSSL's default paths, as the
    stdlib's create_default_context loads them). Loaded once: ~150 certificates to parse."""
    path = ca_file
    if path is None:
        paths = ssl.get_default_verify_paths()
        path = os.environ.get(paths.openssl_cafile_env) or paths.cafile or paths.openssl_cafile
    try:
        with open(path, "rb") as file, warnings.catch_warnings():
            # a few old roots have negative serial numbers; OpenSSL takes them too
            warnings.simplefilter("ignore", CryptographyDeprecationWarning)
            roots = x509.load_pem_x509_certificates(file.read())
    except (OSError, ValueError) as exc:
        raise ConfigError(f"cannot load trusted certificates from {path}: {exc}") from None
    return Store(roots)


def certificate_check(
    name: str, *, insecure: bool = False, pin: str | None = None, ca_file: str | None = None
) -> CertificateCheck:
    """The check a TLS client with these settings applies (transports.tls.client_context's
    rules): a pin wins, then insecure, then the chain and the name."""
    if pin is not None:
        return PinCheck(parse_pin(pin))
    if insecure:
        return AnyCertificate()
    return ChainCheck(system_roots(ca_file), name)


class Tls13Layer(Layer):
    """A TLS 1.3 client over a socket transport: ciphertext below, plaintext above. The
    handshake runs before anything above hears of the stream (`handshake` resolves); after
    it, whole chunks go through Tls13Client, which seals and opens whole records."""

    def __init__(self, client: Tls13Client, upper: asyncio.BaseProtocol | None = None) -> None:
        super().__init__(upper)
        self.client = client
        self.handshake: asyncio.Future[HandshakeDone] = (
            asyncio.get_running_loop().create_future()
        )
        self.done: HandshakeDone | None = None
        self._eof_passed = False
        self._clock: Callable[[], float] = time.time

    def begin(self, transport: asyncio.Transport) -> None:
        """Take over `transport` (its protocol becomes this layer) and send the ClientHello."""
        self.lower = transport
        transport.set_protocol(self)
        transport.write(self.client.start())

    # asyncio.Protocol (the socket below)

    def data_received(self, data: bytes) -> None:
        client = self.client
        try:
            client.feed(data, self._clock())
        except TlsError as exc:
            self._flush()
            self._failed(exc)
            return
        self._flush()
        for event in client.events():
            if isinstance(event, DataReceived):
                self.upper.data_received(event.data)
            elif isinstance(event, HandshakeDone):
                self.done = event
                if not self.handshake.done():
                    self.handshake.set_result(event)
            elif isinstance(event, PeerClosed):
                self._peer_ended()
            if self._closing:
                return

    def eof_received(self) -> bool | None:
        if not self.handshake.done():
            self.handshake.set_exception(
                ConnectionResetError("the server closed the connection during the TLS handshake")
            )
            return False
        return self._peer_ended()

    def connection_lost(self, exc: Exception | None) -> None:
        self._closing = True
        if not self.handshake.done():
            self.handshake.set_exception(
                exc or ConnectionResetError("connection lost during the TLS handshake")
            )
            return
        self.upper.connection_lost(exc)

    # asyncio.Transport (the protocol above)

    def write(self, data: bytes | bytearray | memoryview) -> None:
        if not data or self._closing or self.lower is None:
            return
        self.lower.write(self.client.send(data))

    def write_eof(self) -> None:
        raise NotImplementedError("TLS here has no half-close; close() sends close_notify")

    def can_write_eof(self) -> bool:
        return False

    def close(self) -> None:
        if self._closing:
            return
        self._closing = True
        if self.lower is not None:
            if self.client.established:
                self.lower.write(self.client.close())
            self.lower.close()

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        if name == "tls" and self.done is not None:
            return self.done
        if name == "alpn" and self.done is not None:
            return self.done.alpn
        return super().get_extra_info(name, default)

    # private

    def _flush(self) -> None:
        out = self.client.data_to_send()
        if out and self.lower is not None and not self.lower.is_closing():
            self.lower.write(out)

    def _peer_ended(self) -> bool:
        if self._eof_passed:
            return False
        self._eof_passed = True
        keep_open = bool(self.upper.eof_received())
        if not keep_open:
            self.close()
        return keep_open

    def _failed(self, exc: TlsError) -> None:
        error = _as_ssl_error(exc)
        if not self.handshake.done():
            self.handshake.set_exception(error)
        else:  # past the handshake: corruption or tampering, nobody to be stealthy to
            log.debug("TLS connection ended: %s", exc)
        self.abort()


def _as_ssl_error(exc: TlsError) -> ssl.SSLError:
    message = str(exc)
    if isinstance(exc, CertificateRefused):
        if "does not match the pin" in message:
            return PinMismatchError(message)
        return ssl.SSLCertVerificationError(message)
    return ssl.SSLError(message)


async def open_tls13(
    lower: Layer,
    server_name: str,
    *,
    alpn: tuple[str, ...],
    fingerprint: str | None,
    check: CertificateCheck,
    finish_hello: HelloFinisher | None = None,
) -> Tls13Layer:
    """TLS 1.3 over the connected `lower` (a tcp Layer over its socket's transport), with the
    hello of `fingerprint` (chrome by default). Returns once the handshake is done, the new
    layer's protocol a Pending holding what came after it."""
    socket_transport = cast("asyncio.Transport | None", lower.lower)
    if socket_transport is None:
        raise ConnectionResetError("the connection closed before TLS began")
    shape = client_hellos.shape_for(fingerprint)
    draft = client_hellos.HelloDraft.new(shape, server_name, alpn, os.urandom)
    layer = Tls13Layer(Tls13Client(draft, check, finish_hello), Pending())
    held = lower.get_protocol()
    layer.begin(socket_transport)
    try:
        await layer.handshake
    except BaseException:
        layer.abort()
        raise
    if isinstance(held, Pending) and (held.chunks or held.eof):
        raise ssl.SSLError("the server spoke before the TLS handshake")
    return layer
