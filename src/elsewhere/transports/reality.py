"""`reality`, a client stack's security layer for REALITY servers (Xray-core, sing-box, ours):
elsewhere's TLS 1.3 client with the link's browser hello (`fp`, Chrome by default), its session
id carrying the REALITY token sealed for the server's key (`pbk`) and short id (`sid`), and the
server's temporary certificate checked by its HMAC instead of a chain. A server that does not
authenticate us (it spliced the hello to its dest site) ends the dial with one line saying so.

Link and outbound options: `pbk` (the server's X25519 public key, base64url), `sid` (short id,
0-16 hex digits), `sni` (one of the server's serverNames), `fp`. The ALPN is the browser's
(h2, http/1.1) unless the outbound names one."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from elsewhere.codecs import reality
from elsewhere.codecs.reality_client import RealityHello
from elsewhere.errors import ConfigError
from elsewhere.transports.layer import Layer
from elsewhere.transports.registry import Transport, register
from elsewhere.transports.tls13_layer import open_tls13

if TYPE_CHECKING:
    from elsewhere.transports.settings import StreamSettings

BROWSER_ALPN = ("h2", "http/1.1")


def reality_keys(settings: StreamSettings) -> tuple[bytes, bytes]:
    """(server public key, 8-byte short id) from the outbound's options; ConfigError names
    what is missing or wrong."""
    pbk = settings.options.get("pbk") or settings.options.get("public_key")
    if not pbk:
        raise ConfigError("security = reality needs the server's public key: pbk = \"...\"")
    sid = str(settings.options.get("sid", settings.options.get("short_id", "")) or "")
    return reality.decode_key(str(pbk)), reality.parse_short_id(sid)


async def dial_reality(
    lower: Layer | None, settings: StreamSettings, host: str, port: int
) -> Layer:
    if lower is None or lower.lower is None:
        raise ConfigError(f"reality needs a connection below it, not {' > '.join(settings.stack)}")
    public_key, short_id = reality_keys(settings)
    if not settings.sni:
        raise ConfigError("security = reality needs sni: one of the server's serverNames")
    auth = RealityHello(public_key, short_id, time.time())
    alpn = settings.alpn if "alpn" in settings.options else BROWSER_ALPN
    return await open_tls13(
        lower, settings.sni, alpn=alpn, fingerprint=settings.fingerprint, check=auth,
        finish_hello=auth.finish,
    )


register(Transport(
    "reality", dial_reality, role="security", options=("pbk", "sid", "sni", "fp", "spx"),
    fingerprint=True,
))
