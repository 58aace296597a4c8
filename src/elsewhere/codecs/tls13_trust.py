"""How codecs.tls13_client judges the server's certificate chain: against trusted roots and the
server's name (RFC 5280 path validation and RFC 6125 names, by cryptography.x509.verification,
the WebPKI rules Chrome and Firefox apply), or by a pin (the SHA-256 of the leaf's DER, share
links' `pcs`), or not at all when a person asked for it. The CertificateVerify signature is
checked by the client whatever the check here: it proves the server holds the leaf's key.
Time comes in as `now`; loading the roots is the transport's business."""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Protocol

from cryptography import x509
from cryptography.x509.verification import PolicyBuilder, Store, VerificationError

ALERT_BAD_CERTIFICATE = 42
ALERT_CERTIFICATE_EXPIRED = 45
ALERT_UNKNOWN_CA = 48


class CertificateError(Exception):
    """The server's certificate is not acceptable; the message says why, for one log line."""

    def __init__(self, message: str, alert: int = ALERT_BAD_CERTIFICATE) -> None:
        super().__init__(message)
        self.alert = alert


class CertificateCheck(Protocol):
    def check(self, chain: Sequence[bytes], now: float) -> None:
        """Raise CertificateError unless `chain` (DER, leaf first) is acceptable at `now`."""


def _load(der: bytes) -> x509.Certificate:
    try:
        return x509.load_der_x509_certificate(der)
    except ValueError:
        raise CertificateError("the server's certificate does not parse") from None


def _date(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%d")


class ChainCheck:
    """A chain to one of `store`'s roots, valid now, for `name` (a DNS name or an address)."""

    def __init__(self, store: Store, name: str) -> None:
        self.store = store
        self.name = name.strip("[]").rstrip(".")
        subject: x509.verification.Subject
        try:
            subject = x509.IPAddress(ipaddress.ip_address(self.name))
        except ValueError:
            subject = x509.DNSName(self.name)
        self.subject = subject

    def check(self, chain: Sequence[bytes], now: float) -> None:
        leaf = _load(chain[0])
        moment = datetime.fromtimestamp(now, UTC)
        if leaf.not_valid_after_utc < moment:
            raise CertificateError(
                f"the server's certificate expired on {_date(leaf.not_valid_after_utc)}",
                ALERT_CERTIFICATE_EXPIRED,
            )
        if leaf.not_valid_before_utc > moment:
            raise CertificateError(
                f"the server's certificate is valid only from {_date(leaf.not_valid_before_utc)}"
                " (check this machine's clock)", ALERT_CERTIFICATE_EXPIRED,
            )
        intermediates = [_load(der) for der in chain[1:]]
        verifier = PolicyBuilder().store(self.store).time(moment).build_server_verifier(
            self.subject
        )
        try:
            verifier.verify(leaf, intermediates)
        except VerificationError as exc:
            raise CertificateError(self._reason(leaf, str(exc)), self._alert(leaf)) from None

    def _reason(self, leaf: x509.Certificate, detail: str) -> str:
        names = _names(leaf)
        if not _name_matches(self.name, names):
            shown = ", ".join(names[:4]) or "no names"
            return f"the server's certificate is for {shown}, not {self.name}"
        if leaf.issuer == leaf.subject:
            return (
                "the server's certificate is self-signed and no pin was given "
                "(add the server's pcs= pin to the link)"
            )
        return f"the server's certificate chain is not trusted: {detail}"

    def _alert(self, leaf: x509.Certificate) -> int:
        return ALERT_UNKNOWN_CA if _name_matches(self.name, _names(leaf)) else ALERT_BAD_CERTIFICATE


class PinCheck:
    """The leaf is the pinned certificate (no chain, name or date: what was pinned is trusted,
    as Xray's pinnedPeerCertSha256)."""

    def __init__(self, digest: bytes) -> None:
        self.digest = digest

    def check(self, chain: Sequence[bytes], now: float) -> None:
        seen = hashlib.sha256(chain[0]).digest()
        if not hmac.compare_digest(seen, self.digest):
            raise CertificateError(
                f"server certificate {seen.hex().upper()} does not match the pin "
                f"{self.digest.hex().upper()}"
            )


class AnyCertificate:
    """No check (a person asked for insecure, or tests)."""

    def check(self, chain: Sequence[bytes], now: float) -> None:
        return None


def _names(certificate: x509.Certificate) -> list[str]:
    try:
        san = certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return []
    dns = san.get_values_for_type(x509.DNSName)
    return [*dns, *(str(ip) for ip in san.get_values_for_type(x509.IPAddress))]


def _name_matches(name: str, names: Sequence[str]) -> bool:
    name = name.lower()
    for candidate in names:
        candidate = candidate.lower()
        if candidate == name:
            return True
        if candidate.startswith("*.") and "." in name and name.split(".", 1)[1] == candidate[2:]:
            return True
    return False
