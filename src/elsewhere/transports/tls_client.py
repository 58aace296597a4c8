"""`tls`, the client stack's TLS layer: elsewhere's own TLS 1.3 client (transports.tls13_layer
over codecs.tls13_client) with a browser's ClientHello, Chrome's unless the link's `fp` names
another, so a censor sees a browser and not Python. SNI, ALPN, and either a CA-checked name or
a pinned certificate, as strict as the stdlib's client was (transports.tls). TLS 1.3 only: a
server that offers only TLS 1.2 is refused in one line (every elsewhere server and the peers
it speaks with do 1.3)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from elsewhere.errors import ConfigError
from elsewhere.transports.layer import Layer
from elsewhere.transports.registry import Transport, register
from elsewhere.transports.tls13_layer import certificate_check, open_tls13

if TYPE_CHECKING:
    from elsewhere.transports.settings import StreamSettings


async def dial_tls(lower: Layer | None, settings: StreamSettings, host: str, port: int) -> Layer:
    if lower is None or lower.lower is None:
        raise ConfigError(f"tls needs a connection below it, not {' > '.join(settings.stack)}")
    name = settings.sni or host
    check = certificate_check(name, insecure=settings.insecure, pin=settings.pin)
    return await open_tls13(
        lower, name, alpn=settings.alpn, fingerprint=settings.fingerprint, check=check
    )


register(Transport(
    "tls", dial_tls, role="security", options=("sni", "alpn", "pin", "insecure", "fp"),
    fingerprint=True,
))
