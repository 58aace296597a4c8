"""Opening a client stream to a TLS-family server: TCP, then TLS (SNI, ALPN, optional
certificate pin), then optionally a WebSocket or Xray httpupgrade handshake on a path. The
stream that comes back is a layer whose protocol is a Pending, ready for the protocol header.
With a browser fingerprint (`fp`) and the optional curl_cffi installed, a WebSocket goes out
through transports.browser_ws instead, with that browser's TLS ClientHello."""

from __future__ import annotations

import asyncio
import functools
import logging
import ssl
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any

from elsewhere.codecs import http_upgrade, websocket
from elsewhere.errors import ConfigError, ProtocolError
from elsewhere.transports.layer import Layer, Pending, stack
from elsewhere.transports.tls import client_context
from elsewhere.transports.websocket import WebSocketLayer

log = logging.getLogger("elsewhere.transports")

# browser_ws.dial_browser_ws(settings, impersonate, host, port, timeout)
BrowserDial = Callable[["StreamSettings", str, str, int, float], Awaitable[Layer]]

CONNECT_TIMEOUT = 10.0
# Share links' `fp` (Xray's uTLS preset names) -> curl-impersonate targets. uTLS's randomised
# presets have no curl counterpart: they go out as the most common browser instead.
FINGERPRINTS = {
    "chrome": "chrome",
    "firefox": "firefox",
    "safari": "safari",
    "ios": "safari_ios",
    "android": "chrome_android",
    "edge": "edge",
    "360": "chrome",
    "qq": "chrome",
    "random": "chrome",
    "randomized": "chrome",
    "randomizednoalpn": "chrome",
}


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
    fingerprint: str | None = None  # `fp`: a browser whose TLS hello ws goes out with (curl_cffi)

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
        fingerprint = str(options.get("fp") or "").lower() or None
        if fingerprint == "none":
            fingerprint = None
        if fingerprint is not None and fingerprint not in FINGERPRINTS:
            raise ConfigError(
                f'outbound "{tag}": fp {fingerprint!r} is not a browser fingerprint; '
                f"use one of {', '.join(FINGERPRINTS)}"
            )
        return cls(
            security=security,
            sni=options.get("sni"),
            alpn=tuple(alpn),
            insecure=bool(options.get("insecure", False)),
            pin=options.get("pin"),
            network=network,
            path=options.get("path", "/"),
            host=options.get("host"),
            fingerprint=fingerprint,
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
    if settings.fingerprint is not None and use_tls:
        browser = _browser_dialer(settings.network)
        if browser is not None:
            async with asyncio.timeout(CONNECT_TIMEOUT):
                impersonate = FINGERPRINTS[settings.fingerprint]
                return await browser(settings, impersonate, host, port, CONNECT_TIMEOUT)
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


@functools.cache
def _browser_dialer(network: str) -> BrowserDial | None:
    """transports.browser_ws's dial when it can serve `network`, else None, saying why once."""
    if network != "ws":
        log.warning(
            "fp (browser TLS fingerprint) is used for network ws only; "
            "%s goes out with Python's TLS hello", network
        )
        return None
    try:
        from elsewhere.transports.browser_ws import dial_browser_ws
    except ImportError:
        log.warning(
            "fp asks for a browser's TLS fingerprint but curl_cffi is not installed "
            "(pip install 'elsewhere[browser]'); WebSocket goes out with Python's TLS hello, "
            "which a censor can tell from a browser's"
        )
        return None
    return dial_browser_ws
