"""`ws` (RFC 6455) and `httpupgrade` (Xray's: a WebSocket handshake, then raw bytes), the HTTP
Upgrade layers. Client: the upgrade request on the configured path and Host, the server's 101
read before the stream is handed up. Server (acceptors): the request checked against our path
and Host, the 101 sent. Over `ws` the stream is framed (WebSocketLayer) both ways."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

from elsewhere.codecs import http_upgrade, websocket
from elsewhere.errors import ProtocolError
from elsewhere.transports.layer import Layer, Pending, stack
from elsewhere.transports.registry import Acceptor, Transport, register, register_acceptor
from elsewhere.transports.websocket import WebSocketLayer

if TYPE_CHECKING:
    from elsewhere.transports.settings import StreamSettings


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


async def _upgrade(lower: Layer, settings: StreamSettings, host: str, websocket_mode: bool) -> None:
    """Send the upgrade request over `lower` and wait for the 101; what came after it is held
    by a Pending on `lower`."""
    key = websocket.new_key()
    http_host = settings.host or settings.sni or host
    wait = _UpgradeWait(key, websocket_mode)
    lower.set_protocol(wait)
    if websocket_mode:
        lower.write(websocket.handshake_request(http_host, settings.path, key))
    else:
        lower.write(http_upgrade.request_head(http_host, settings.path, key))
    rest = await wait.done
    held = Pending()
    lower.set_protocol(held)
    if rest:
        held.chunks.append(rest)


async def dial_ws(lower: Layer | None, settings: StreamSettings, host: str, port: int) -> Layer:
    assert lower is not None, "ws needs a stream below it"
    await _upgrade(lower, settings, host, websocket_mode=True)
    return stack(lower, WebSocketLayer(client=True))


async def dial_httpupgrade(
    lower: Layer | None, settings: StreamSettings, host: str, port: int
) -> Layer:
    assert lower is not None, "httpupgrade needs a stream below it"
    await _upgrade(lower, settings, host, websocket_mode=False)
    return lower


def parse_ws(
    buffer: bytes | bytearray, path: str, host: str | None
) -> http_upgrade.UpgradeRequest | None:
    return websocket.parse_handshake(buffer, path=path, host=host)


def accept_ws(transport: asyncio.Transport, request: http_upgrade.UpgradeRequest) -> Layer:
    transport.write(websocket.accept_response(request.websocket_key or "", request.protocol))
    return WebSocketLayer(client=False)


def parse_httpupgrade(
    buffer: bytes | bytearray, path: str, host: str | None
) -> http_upgrade.UpgradeRequest | None:
    return http_upgrade.parse_request(buffer, path=path, host=host)


def accept_httpupgrade(
    transport: asyncio.Transport, request: http_upgrade.UpgradeRequest
) -> Layer:
    transport.write(http_upgrade.upgrade_response(request.websocket_key))
    return Layer()


register(Transport("ws", dial_ws, options=("path", "host")))
register(Transport("httpupgrade", dial_httpupgrade, options=("path", "host")))
register_acceptor(Acceptor("ws", option="websocket", parse=parse_ws, accept=accept_ws))
register_acceptor(
    Acceptor(
        "httpupgrade", option="httpupgrade", parse=parse_httpupgrade, accept=accept_httpupgrade
    )
)
