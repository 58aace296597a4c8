"""XHTTP on the TLS-family port (inbounds.tls): the `xhttp` option names the endpoint (path,
host, mode, Xray's `extra`, and `session_timeout`, Xray's 30 s for a session to see its download
request), `trusted_proxies` the CDN or reverse-proxy networks whose X-Forwarded-For is believed.
A connection whose ALPN is h2, that starts with h2c's preface, or whose first HTTP/1.1 request
is on the path is served by web.xhttp_server; each session's stream then carries VLESS or
Trojan exactly as a raw TLS connection would. Everything else on such a connection (an h2
browser, a request off the path) gets the decoy site."""

from __future__ import annotations

import asyncio
import ipaddress
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from elsewhere.codecs import xhttp
from elsewhere.errors import ConfigError
from elsewhere.web import h2_decoy
from elsewhere.web.connection import Exchange, HttpConnection, ServerConnection
from elsewhere.web.decoy_content import DecoyContent, default_content
from elsewhere.web.h1 import H1Server
from elsewhere.web.h2 import PREFACE, H2Server
from elsewhere.web.xhttp_server import Network, XhttpServer, XhttpStream

if TYPE_CHECKING:
    from elsewhere.inbounds.tls import TlsInbound

MAX_REQUEST_LINE = 8192
_TOKEN = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz-")


class XhttpEndpoint:
    def __init__(
        self,
        inbound: TlsInbound,
        settings: xhttp.XhttpSettings,
        trusted: list[Network],
        reap_after: float = xhttp.SESSION_REAP_SECONDS,
    ) -> None:
        self.inbound = inbound
        self.settings = settings
        self._path = settings.path.encode()
        self.server = XhttpServer(
            settings,
            opened=self._opened,
            stranger=self._stranger,
            trusted=trusted,
            reap_after=reap_after,
        )
        self.connections: set[ServerConnection] = set()

    @classmethod
    def parse(cls, inbound: TlsInbound, options: Mapping[str, Any]) -> XhttpEndpoint | None:
        spec = options.get("xhttp")
        if not spec:
            return None
        tag = inbound.tag
        if isinstance(spec, str):
            spec = {"path": spec}
        if not isinstance(spec, Mapping) or not str(spec.get("path", "")).startswith("/"):
            raise ConfigError(f'inbound "{tag}": xhttp needs a path starting with "/", like "/x"')
        try:
            settings = xhttp.XhttpSettings.parse(
                str(spec["path"]), spec.get("host"), spec.get("mode"), spec.get("extra")
            )
        except ConfigError as exc:
            raise ConfigError(f'inbound "{tag}": {exc}') from None
        trusted: list[Network] = []
        for net in options.get("trusted_proxies", ()):
            try:
                trusted.append(ipaddress.ip_network(str(net), strict=False))
            except ValueError:
                raise ConfigError(
                    f'inbound "{tag}": trusted_proxies entry {net!r} is not an address or network'
                ) from None
        reap_after = float(spec.get("session_timeout", xhttp.SESSION_REAP_SECONDS))
        return cls(inbound, settings, trusted, reap_after)

    # deciding (the TLS inbound's _Detect asks)
    def negotiated_h2(self, transport: asyncio.Transport) -> bool:
        ssl_object = transport.get_extra_info("ssl_object")
        return ssl_object is not None and ssl_object.selected_alpn_protocol() == "h2"

    def verdict(self, buf: bytearray) -> str | None:
        """ "h2" (h2c's preface), "h1" (a request line on the path), "" (not ours), or None
        (cannot tell yet)."""
        head = bytes(buf[: len(PREFACE)])
        if PREFACE.startswith(head):
            return "h2" if len(head) == len(PREFACE) else None
        space = buf.find(b" ", 0, 16)
        if space < 0:
            return None if len(buf) < 16 and _TOKEN.issuperset(buf) else ""
        if not _TOKEN.issuperset(buf[:space]):
            return ""
        end = buf.find(b" ", space + 1, space + 1 + MAX_REQUEST_LINE)
        target = bytes(buf[space + 1 : end if end >= 0 else space + 1 + MAX_REQUEST_LINE])
        path = self._path
        if end < 0:
            if len(target) >= MAX_REQUEST_LINE:
                return ""
            if path.startswith(target) or target.startswith(path):
                return None
            return ""
        return "h1" if xhttp.on_path(self.settings, target.decode("latin-1")) else ""

    def take(self, transport: asyncio.Transport, received: bytes, kind: str) -> None:
        http = H2Server() if kind == "h2" else H1Server()
        conn = ServerConnection(http, self.server.take)
        self.connections.add(conn)
        conn.on_lost = self._lost
        transport.set_protocol(conn)
        conn.connection_made(transport)
        if received:
            conn.data_received(received)
        if not transport.is_closing():
            transport.resume_reading()

    def _lost(self, conn: HttpConnection) -> None:
        if isinstance(conn, ServerConnection):
            self.connections.discard(conn)

    # serving
    def _opened(self, stream: XhttpStream) -> None:
        from elsewhere.inbounds.tls import _Detect

        stream.attach(_Detect(self.inbound, inner=True))

    def _content(self) -> DecoyContent:
        content = getattr(self.inbound.fallback, "content", None)
        return content if isinstance(content, DecoyContent) else default_content()

    def _stranger(self, exchange: Exchange) -> None:
        engine = self.inbound.engine
        if engine is not None:
            engine.stats.probes += 1
        h2_decoy.serve(self._content(), exchange)

    def close(self) -> None:
        self.server.close()
        for conn in list(self.connections):
            conn.close()
