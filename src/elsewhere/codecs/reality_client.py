"""The client's half of a REALITY handshake (XTLS/REALITY, as Xray-core's and sing-box's clients
do it), on codecs.tls13_client: the token sealed into the ClientHello's session id with the key
from our X25519 share and the server's public key (codecs.reality), and the server's
"temporary certificate" checked by its HMAC instead of a chain. A server that does not hold the
private key answers with the real dest site's own certificate: that is refused, and the session
closed, with one line saying so."""

from __future__ import annotations

from collections.abc import Sequence

from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from elsewhere.codecs import reality
from elsewhere.codecs.tls13_trust import ALERT_BAD_CERTIFICATE, CertificateError

NOT_AUTHENTICATED = (
    "the server did not authenticate as a REALITY server (wrong pbk or sid, this machine's "
    "clock off by more than the server's maxTimeDiff, or no REALITY server at that address); "
    "the session is closed"
)


class RealityHello:
    """One REALITY client handshake: give `finish` to Tls13Client as its finish_hello and
    this object as its CertificateCheck."""

    def __init__(
        self,
        server_public_key: bytes,
        short_id: bytes,
        now: float,
        version: tuple[int, int, int] = reality.CLIENT_VERSION,
    ) -> None:
        self.server_public_key = server_public_key
        self.token = reality.SessionToken(version=version, timestamp=int(now), short_id=short_id)
        self.auth_key: bytes | None = None

    def finish(self, message: bytes, key: X25519PrivateKey) -> bytes:
        """The ClientHello with the sealed token in its session id (again after an HRR)."""
        self.auth_key = reality.client_auth_key(key, self.server_public_key, message[6:38])
        return reality.seal_hello(message, self.auth_key, self.token)

    def check(self, chain: Sequence[bytes], now: float) -> None:
        if self.auth_key is None or not reality.verify_temporary_certificate(
            chain[0], self.auth_key
        ):
            raise CertificateError(NOT_AUTHENTICATED, ALERT_BAD_CERTIFICATE)
