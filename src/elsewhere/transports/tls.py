"""TLS contexts for the TLS family (TLS 1.3, RFC 8446; TLS 1.2, RFC 5246; ALPN, RFC 7301) on the
stdlib's OpenSSL: a server context shaped like a common nginx/Caddy site that picks up renewed
certificate files without a restart, and a client context that checks either the CA chain and
the server name, or a pinned certificate hash.

Pins are what the share links carry (`pcs`, Xray's pinnedPeerCertSha256): the SHA-256 of the
leaf certificate's DER, written as hex (openssl's colons allowed); base64 of the same 32 bytes
(Xray's older pinnedPeerCertificateChainSha256) is accepted too. Not sing-box's
certificate_public_key_sha256, which hashes the public key instead."""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import logging
import os
import ssl
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.types import PrivateKeyTypes

from elsewhere.errors import ConfigError

log = logging.getLogger("elsewhere.tls")

PIN_SIZE = 32  # SHA-256
DEFAULT_ALPN = ("http/1.1",)
# TLS 1.2 suites of Mozilla's "intermediate" profile, which is what nginx and Caddy sites
# commonly offer: forward-secret AEAD only. TLS 1.3 suites and the key-exchange groups stay at
# OpenSSL's defaults, as nginx leaves them (X25519, P-256, P-384, ...).
TLS12_CIPHERS = ":".join(
    (
        "ECDHE-ECDSA-AES128-GCM-SHA256",
        "ECDHE-RSA-AES128-GCM-SHA256",
        "ECDHE-ECDSA-AES256-GCM-SHA384",
        "ECDHE-RSA-AES256-GCM-SHA384",
        "ECDHE-ECDSA-CHACHA20-POLY1305",
        "ECDHE-RSA-CHACHA20-POLY1305",
    )
)
# How often, at most, a handshake looks at the certificate files' stamps. certbot renews 30
# days ahead, so a minute of delay costs nothing and keeps stat() off most handshakes.
RELOAD_CHECK_EVERY = 60.0


class PinMismatchError(ssl.SSLCertVerificationError):
    """The server's certificate is not the pinned one (raised from the handshake itself)."""


# pins


def certificate_pin(der: bytes) -> str:
    """The pin of a certificate as share links carry it: SHA-256 of its DER, upper-case hex."""
    return hashlib.sha256(der).hexdigest().upper()


def parse_pin(text: str) -> bytes:
    """The 32 bytes of a pin given as hex (colons allowed) or base64 (standard or URL-safe)."""
    cleaned = text.strip().replace(":", "")
    digest: bytes | None = None
    if len(cleaned) == 2 * PIN_SIZE:
        try:
            digest = bytes.fromhex(cleaned)
        except ValueError:
            digest = None
    if digest is None:
        try:
            digest = base64.b64decode(
                cleaned.replace("-", "+").replace("_", "/") + "=" * (-len(cleaned) % 4),
                validate=True,
            )
        except binascii.Error:
            digest = None
    if digest is None or len(digest) != PIN_SIZE:
        raise ConfigError(
            f"pin {text!r} is not a SHA-256 certificate hash: give 64 hex digits "
            "(as `elsewhere` prints it, or `openssl x509 -noout -fingerprint -sha256`)"
        )
    return digest


def check_pin(ssl_object: ssl.SSLObject | ssl.SSLSocket, pin: str | bytes) -> None:
    """Raise PinMismatchError unless the peer's leaf certificate hashes to `pin`."""
    digest = parse_pin(pin) if isinstance(pin, str) else pin
    der = ssl_object.getpeercert(binary_form=True)
    if der is None:
        raise PinMismatchError("the server sent no certificate, so the pin cannot match")
    if not hmac.compare_digest(hashlib.sha256(der).digest(), digest):
        seen, pinned = certificate_pin(der), digest.hex().upper()
        raise PinMismatchError(f"server certificate {seen} does not match the pin {pinned}")


def _pinned_classes(digest: bytes) -> tuple[type[ssl.SSLObject], type[ssl.SSLSocket]]:
    """SSLObject/SSLSocket classes whose handshake fails unless the pin matches, so that a
    pinned context cannot be used without the check (asyncio and uvloop call do_handshake on
    the object the context creates, and treat an SSLError from it as a failed handshake)."""

    class PinnedSSLObject(ssl.SSLObject):
        def do_handshake(self) -> None:
            super().do_handshake()
            check_pin(self, digest)

    class PinnedSSLSocket(ssl.SSLSocket):
        def do_handshake(self, block: bool = False) -> None:
            super().do_handshake(block)
            check_pin(self, digest)

    return PinnedSSLObject, PinnedSSLSocket


# client


def client_context(
    *,
    sni_verify: bool = True,
    ca_file: str | os.PathLike[str] | None = None,
    pin_sha256: str | None = None,
    alpn: Sequence[str] = DEFAULT_ALPN,
) -> ssl.SSLContext:
    """A client context. With `pin_sha256` the chain is not verified (self-signed servers) and
    the pin is checked inside the handshake instead: a mismatch fails it with PinMismatchError.
    Without a pin, the chain is verified against `ca_file` (or the system's CAs) and the name
    against the SNI, unless `sni_verify` is False (tests, or a person who asked for insecure)."""
    try:
        context = ssl.create_default_context(cafile=os.fspath(ca_file) if ca_file else None)
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError(f"cannot load CA file {ca_file}: {_reason(exc)}") from None
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    if pin_sha256 is not None:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        context.sslobject_class, context.sslsocket_class = _pinned_classes(parse_pin(pin_sha256))
    elif not sni_verify:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    if alpn:
        context.set_alpn_protocols(list(alpn))
    return context


# server


@dataclass(frozen=True)
class CertificateInfo:
    """What a loaded certificate says, for logs and share links."""

    names: tuple[str, ...]  # DNS names and IP addresses of the subjectAltName
    not_after: datetime
    pin: str
    self_signed: bool


def check_certificate_files(
    cert_file: str | os.PathLike[str],
    key_file: str | os.PathLike[str],
    *,
    now: datetime | None = None,
) -> CertificateInfo:
    """Read a PEM chain and its key; raise ConfigError with one line a person can act on when a
    file is missing, unreadable, not PEM, the key is not the certificate's, or it has expired."""
    cert_path, key_path = Path(cert_file), Path(key_file)
    try:
        chain = x509.load_pem_x509_certificates(_read(cert_path, "certificate"))
    except ValueError:
        raise ConfigError(
            f"certificate {cert_path} holds no PEM certificate "
            "(expected -----BEGIN CERTIFICATE-----, like certbot's fullchain.pem)"
        ) from None
    key_bytes = _read(key_path, "key")
    try:
        key: PrivateKeyTypes = serialization.load_pem_private_key(key_bytes, password=None)
    except TypeError:
        raise ConfigError(
            f"key {key_path} is encrypted; give an unencrypted key "
            "(openssl pkey -in KEY -out KEY.plain)"
        ) from None
    except (ValueError, UnsupportedAlgorithm):
        raise ConfigError(
            f"key {key_path} holds no PEM private key "
            "(expected -----BEGIN PRIVATE KEY-----, like certbot's privkey.pem)"
        ) from None
    leaf = chain[0]
    spki = serialization.PublicFormat.SubjectPublicKeyInfo
    der = serialization.Encoding.DER
    if leaf.public_key().public_bytes(der, spki) != key.public_key().public_bytes(der, spki):
        raise ConfigError(
            f"key {key_path} does not belong to certificate {cert_path} "
            "(take both from the same directory, e.g. fullchain.pem and privkey.pem)"
        )
    now = now or datetime.now(UTC)
    if leaf.not_valid_after_utc < now:
        raise ConfigError(
            f"certificate {cert_path} expired on {_date(leaf.not_valid_after_utc)}; "
            "renew it (certbot renew) or use acme = true"
        )
    if leaf.not_valid_before_utc > now:
        raise ConfigError(
            f"certificate {cert_path} is valid only from {_date(leaf.not_valid_before_utc)}; "
            "check this machine's clock"
        )
    return CertificateInfo(
        names=certificate_names(leaf),
        not_after=leaf.not_valid_after_utc,
        pin=certificate_pin(leaf.public_bytes(der)),
        self_signed=leaf.issuer == leaf.subject,
    )


def certificate_names(certificate: x509.Certificate) -> tuple[str, ...]:
    """The DNS names and IP addresses a certificate is for (its subjectAltName)."""
    try:
        san = certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return ()
    dns = san.get_values_for_type(x509.DNSName)
    ips = [str(ip) for ip in san.get_values_for_type(x509.IPAddress)]
    return (*dns, *ips)


def server_context(
    cert_file: str | os.PathLike[str],
    key_file: str | os.PathLike[str],
    *,
    alpn: Sequence[str] = DEFAULT_ALPN,
    now: datetime | None = None,
) -> ssl.SSLContext:
    """A server context: TLS 1.2 and 1.3 (1.3 preferred by OpenSSL itself), Mozilla-intermediate
    TLS 1.2 suites, ALPN as given, session tickets on, no compression. Raises ConfigError for
    files a person got wrong (see check_certificate_files)."""
    check_certificate_files(cert_file, key_file, now=now)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.set_ciphers(TLS12_CIPHERS)
    # nginx's default (ssl_prefer_server_ciphers off) and Mozilla's advice: the client picks.
    context.options &= ~ssl.OP_CIPHER_SERVER_PREFERENCE
    context.options |= ssl.OP_NO_COMPRESSION
    context.options &= ~ssl.OP_NO_TICKET
    # as nginx sets it on OpenSSL 3 (ngx_ssl_create): a client that closes mid-handshake gets
    # no alert, as from nginx, and a stream cut without close_notify reads as an ordinary end
    context.options |= ssl.OP_IGNORE_UNEXPECTED_EOF
    if alpn:
        context.set_alpn_protocols(list(alpn))
    try:
        context.load_cert_chain(os.fspath(cert_file), os.fspath(key_file))
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError(f"cannot load {cert_file} / {key_file}: {_reason(exc)}") from None
    return context


Stamp = tuple[tuple[int, int, int, int] | None, ...]


class ServerCertificate:
    """A server context that follows its certificate files. Give `context` to the listener; on a
    handshake at most every `check_every` seconds the files' stamps are compared, and when they
    changed (a certbot renewal, an ACME renewal, a new self-signed one) a fresh context is loaded
    and the handshake switches to it from the SNI callback. A bad new file is logged and the
    old certificate kept, so a half-finished renewal never takes the server down."""

    def __init__(
        self,
        cert_file: str | os.PathLike[str],
        key_file: str | os.PathLike[str],
        *,
        alpn: Sequence[str] = DEFAULT_ALPN,
        check_every: float = RELOAD_CHECK_EVERY,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.cert_file = Path(cert_file)
        self.key_file = Path(key_file)
        self.alpn = tuple(alpn)
        self.check_every = check_every
        self.clock = clock
        self._stamp = self._file_stamp()
        self.info = check_certificate_files(self.cert_file, self.key_file)
        self.context = server_context(self.cert_file, self.key_file, alpn=self.alpn)
        self.context.sni_callback = self._on_client_hello
        self._current = self.context
        self._checked = clock()
        self._failed: Stamp | None = None

    @property
    def pin(self) -> str:
        return self.info.pin

    def reload(self) -> bool:
        """Re-read the files now; True if a different certificate is now served. Raises
        ConfigError (and keeps the old certificate) when the new files are bad."""
        stamp = self._file_stamp()
        info = check_certificate_files(self.cert_file, self.key_file)
        context = server_context(self.cert_file, self.key_file, alpn=self.alpn)
        self._stamp, self._failed = stamp, None
        if info == self.info:
            return False
        self.info, self._current = info, context
        log.info("certificate %s reloaded, valid until %s", self.cert_file, _date(info.not_after))
        return True

    def maybe_reload(self) -> None:
        """Reload if the files changed and `check_every` seconds passed since the last look."""
        now = self.clock()
        if now - self._checked < self.check_every:
            return
        self._checked = now
        stamp = self._file_stamp()
        if stamp == self._stamp or stamp == self._failed:
            return
        try:
            self.reload()
        except ConfigError as exc:
            self._failed = stamp  # say it once per bad version of the files
            log.warning("keeping the old certificate: %s", exc)

    def _on_client_hello(
        self, ssl_object: ssl.SSLObject, server_name: str | None, context: ssl.SSLContext
    ) -> None:
        self.maybe_reload()
        if self._current is not self.context:
            ssl_object.context = self._current

    def _file_stamp(self) -> Stamp:
        stamps: list[tuple[int, int, int, int] | None] = []
        for path in (self.cert_file, self.key_file):
            try:
                st = path.stat()  # follows certbot's live/ symlinks to the archive/ files
            except OSError:
                stamps.append(None)
            else:
                stamps.append((st.st_mtime_ns, st.st_size, st.st_ino, st.st_dev))
        return tuple(stamps)


# private


def _read(path: Path, what: str) -> bytes:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        raise ConfigError(f"{what} file {path} does not exist") from None
    except PermissionError:
        raise ConfigError(
            f"{what} file {path} is not readable by this user; run as a user that may read it"
        ) from None
    except IsADirectoryError:
        raise ConfigError(f"{what} file {path} is a directory; give the file inside it") from None
    except OSError as exc:
        raise ConfigError(f"cannot read {what} file {path}: {exc.strerror or exc}") from None


def _date(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%d %H:%M UTC")


def _reason(exc: BaseException) -> str:
    if isinstance(exc, ssl.SSLError) and exc.reason:
        return exc.reason.lower().replace("_", " ")
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    return str(exc)
