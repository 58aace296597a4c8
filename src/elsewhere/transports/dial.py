"""Opening a client stream to a TLS-family server: TCP, then TLS (SNI, ALPN, optional
certificate pin), then optionally a WebSocket or Xray httpupgrade handshake on a path. The
stream that comes back is a layer whose protocol is a Pending, ready for the protocol header."""

from __future__ import annotations

import asyncio
import functools
import ssl
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from elsewhere.codecs import http_upgrade, websocket
from elsewhere.errors import ConfigError, ProtocolError
from elsewhere.transports.layer import Layer, Pending, stack
from elsewhere.transports.tls import client_context
from elsewhere.transports.websocket import WebSocketLayer

CONNECT_TIMEOUT = 10.0


@dataclass(frozen=True)
class StreamSettings:
    """How to reach the server, as share links and v2ray's streamSettings say it."""

    security: str = "tls"  # "tls" or "none"
    sni: str | None = None
    alpn: tuple[str, ...] = ("http/1.1",)
    insecure: bool = False  # no chain check (only with a pin, or in tests)
    pin: str | None = None  # hex SHA-256 of the server certificate's DER (Xray's "pcs")
    network: str = "tcp"  # "tcp", "ws" or "httpupgrade"
    path: str = "/"
    host: str | None = None  # HTTP Host for ws/httpupgrade (defaults to the SNI or server)

    @classmethod
    def from_options(cls, tag: str, options: Mapping[str, Any]) -> StreamSettings:
        network = options.get("network", options.get("type", "tcp"))
        if network not in ("tcp", "ws", "httpupgrade"):
            raise ConfigError(f'outbound "{tag}": network must be tcp, ws or httpupgrade')
        security = options.get("security", "tls")
        if security not in ("tls", "none"):
            raise ConfigError(f'outbound "{tag}": security must be "tls" or "none"')
        alpn = options.get("alpn", ("http/1.1",))
        if isinstance(alpn, str):
            alpn = tuple(a for a in alpn.split(",") if a)
        return cls(
            security=security,
            sni=options.get("sni"),
            alpn=tuple(alpn),
            insecure=bool(options.get("insecure", False)),
            pin=options.get("pin"),
            network=network,
            path=options.get("path", "/"),
            host=options.get("host"),
        )

    def context(self) -> ssl.SSLContext:
        """Pinned (self-signed servers: the handshake fails on another certificate), verified
        against the system's CAs, or, when a person asked for it, not verified at all. Made
        once per settings: loading the CA store costs ~18 ms, too much per connection."""
        return _context(self.insecure, self.pin, self.alpn)


@functools.lru_cache(maxsize=64)
def _context(insecure: bool, pin: str | None, alpn: tuple[str, ...]) -> ssl.SSLContext:
    return client_context(sni_verify=not insecure, pin_sha256=pin, alpn=alpn)


class _UpgradeWait(asyncio.Protocol):
    """Reads the server's 101 before the stream is handed over."""

    def __init__(self, key: str, websocket_mode: bool) -> None:
        self.key = key
        self.websocket_mode = websocket_mode
        self.buffer = b""
        self.done: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()

    def data_received(self, data: bytes) -> None:
        if self.done.done():
            self.buffer += data
            return
        self.buffer += data
        try:
            if self.websocket_mode:
                end = websocket.parse_handshake_response(self.buffer, self.key)
            else:
                response = http_upgrade.parse_response(self.buffer)
                end = None if response is None else response.header_length
        except ProtocolError as exc:
            self.done.set_exception(exc)
            return
        if end is not None:
            self.buffer = self.buffer[end:]
            self.done.set_result(self.buffer)

    def eof_received(self) -> bool:
        if not self.done.done():
            self.done.set_exception(ConnectionError("server closed before the upgrade"))
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.done.done():
            self.done.set_exception(exc or ConnectionError("connection lost"))


async def dial(settings: StreamSettings, host: str, port: int) -> Layer:
    """A connected stream to the server, through TLS and the upgrade if configured."""
    loop = asyncio.get_running_loop()
    base = Layer()
    use_tls = settings.security == "tls"
    async with asyncio.timeout(CONNECT_TIMEOUT):
        transport, _ = await loop.create_connection(
            lambda: base,
            host,
            port,
            ssl=settings.context() if use_tls else None,
            server_hostname=(settings.sni or host) if use_tls else None,
        )
        try:
            if settings.network == "tcp":
                return base
            key = websocket.new_key()
            http_host = settings.host or settings.sni or host
            wait = _UpgradeWait(key, settings.network == "ws")
            base.set_protocol(wait)
            if settings.network == "ws":
                base.write(websocket.handshake_request(http_host, settings.path, key))
            else:
                base.write(http_upgrade.request_head(http_host, settings.path, key))
            rest = await wait.done
        except BaseException:
            transport.abort()
            raise
    held = Pending()
    base.set_protocol(held)
    if rest:
        held.chunks.append(rest)
    if settings.network == "ws":
        return stack(base, WebSocketLayer(client=True))
    return base
