"""`tls`, the client stack's TLS layer (TLS 1.3, RFC 8446; TLS 1.2, RFC 5246) on the stdlib's
OpenSSL: SNI, ALPN and either a CA-checked name or a pinned certificate (StreamSettings.context).
Over the socket it wraps the stream in place, as create_connection(ssl=) would: no extra hop
per event."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

from elsewhere.errors import ConfigError
from elsewhere.transports.layer import Layer
from elsewhere.transports.registry import Transport, register

if TYPE_CHECKING:
    from elsewhere.transports.settings import StreamSettings


async def dial_tls(lower: Layer | None, settings: StreamSettings, host: str, port: int) -> Layer:
    # only a socket's own transport can take the stdlib's TLS (loop.start_tls)
    if lower is None or type(lower) is not Layer or lower.lower is None:
        raise ConfigError(f"tls goes right over tcp, not in {' > '.join(settings.stack)}")
    secured = await asyncio.get_running_loop().start_tls(
        lower.lower, lower, settings.context(), server_hostname=settings.sni or host
    )
    assert secured is not None
    lower.lower = secured  # the same Layer now reads and writes through TLS
    return lower


register(Transport("tls", dial_tls, role="security", options=("sni", "alpn", "pin", "insecure")))
