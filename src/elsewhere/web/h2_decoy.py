"""The decoy site over HTTP/2: a stranger's h2 request is put to web.decoy.DecoySite (the
nginx-exact HTTP/1.1 site) as the HTTP/1.1 request it stands for, and the answer goes back on
the h2 stream without HTTP/1.1's connection headers, as nginx's h2 module serves the same
files. Request bodies are read and dropped: the static site answers none (405 for POST)."""

from __future__ import annotations

import time

import h11

from elsewhere.web.connection import Exchange, Handler, ServerConnection
from elsewhere.web.decoy import DecoySite
from elsewhere.web.decoy_content import DecoyContent

# HTTP/1.1-only fields, which RFC 9113 §8.2.2 forbids on HTTP/2
_HOP_BY_HOP = {"connection", "keep-alive", "proxy-connection", "transfer-encoding", "upgrade"}
_NO_BODY_FIELDS = {"content-length", "transfer-encoding", "connection", "te", "upgrade"}


def _request_head(exchange: Exchange) -> bytes:
    request = exchange.request
    assert request is not None
    lines = [
        f"{request.method} {request.target or '/'} HTTP/1.1",
        f"Host: {request.authority or ''}",
    ]
    for name, value in request.headers:
        if name in _NO_BODY_FIELDS or name == "host" or "\r" in value or "\n" in value:
            continue
        lines.append(f"{name}: {value}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1", "replace")


def answer(content: DecoyContent, exchange: Exchange) -> tuple[int, list[tuple[str, str]], bytes]:
    """(status, headers, body) the decoy gives this request."""
    request = exchange.request
    assert request is not None
    site = DecoySite(content, now=time.time())
    site.feed(_request_head(exchange), time.time())
    raw = site.data_to_send()
    parser = h11.Connection(h11.CLIENT)
    parser.send(h11.Request(method=request.method or "GET", target="/", headers=[("host", "x")]))
    parser.send(h11.EndOfMessage())
    parser.receive_data(raw)
    parser.receive_data(b"")
    status, headers, body = 400, [], bytearray()
    while True:
        try:
            event = parser.next_event()
        except h11.RemoteProtocolError:
            break
        if isinstance(event, h11.Response):
            status = event.status_code
            headers = [
                (k.decode("latin-1").lower(), v.decode("latin-1"))
                for k, v in event.headers.raw_items()
                if k.decode("latin-1").lower() not in _HOP_BY_HOP
            ]
        elif isinstance(event, h11.Data):
            body += event.data
        elif event is h11.NEED_DATA or isinstance(event, h11.EndOfMessage | h11.ConnectionClosed):
            break
    return status, headers, bytes(body)


class _Discard(Handler):
    def __init__(self, exchange: Exchange) -> None:
        self.exchange = exchange

    def end(self) -> None:
        conn = self.exchange.conn
        if isinstance(conn, ServerConnection):
            conn.finished(self.exchange)


def serve(content: DecoyContent, exchange: Exchange) -> None:
    """Answer `exchange` (an h2 request) as the decoy site would."""
    status, headers, body = answer(content, exchange)
    exchange.handler = _Discard(exchange)
    if exchange.request is not None and exchange.request.method == "HEAD":
        body = b""
    exchange.respond(status, headers, end=not body)
    if body:
        exchange.send(body)
        exchange.end()
