"""The asyncio shell of one HTTP connection: moves bytes between a transport and a sans-I/O
web.h1/web.h2 connection and hands each request (server) or response (client) to the handler
of its exchange. Backpressure: the socket's pause_writing and h2's windows reach every exchange
(`writable`), and an exchange whose reader is paused keeps its stream's window closed (h2) or
the socket's reading paused (HTTP/1.1, one exchange at a time)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from typing import Any, Protocol, cast

from elsewhere.web.events import Closed, Data, End, Event, Request, Reset, Response, Writable
from elsewhere.web.h1 import H1Client, H1Server
from elsewhere.web.h2 import H2Client, H2Server

# An exchange whose stream holds this much unsent (h2 window closed) tells its writer to pause.
STREAM_HIGH = 1024 * 1024
STREAM_LOW = 256 * 1024


class ExchangeHandler(Protocol):
    """What the owner of one exchange hears."""

    def response(self, response: Response) -> None: ...  # client side only
    def data(self, data: bytes) -> None: ...
    def end(self) -> None: ...
    def reset(self) -> None: ...
    def writable(self) -> None: ...


class Handler:
    """An ExchangeHandler that does nothing (override what matters)."""

    def response(self, response: Response) -> None:
        return None

    def data(self, data: bytes) -> None:
        return None

    def end(self) -> None:
        return None

    def reset(self) -> None:
        return None

    def writable(self) -> None:
        return None


class Exchange:
    """One request and its response on a connection."""

    __slots__ = ("conn", "done", "handler", "paused", "request", "stream", "unacked")

    def __init__(self, conn: HttpConnection, stream: int, request: Request | None = None) -> None:
        self.conn = conn
        self.stream = stream
        self.request = request
        self.handler: ExchangeHandler = Handler()
        self.paused = False
        self.unacked = 0
        self.done = False  # reset or ended both ways: nothing more comes

    # what the owner calls
    def respond(
        self,
        status: int,
        headers: Sequence[tuple[str, str]],
        *,
        end: bool = False,
        close: bool = False,
    ) -> None:
        http = cast("H1Server | H2Server", self.conn.http)
        http.respond(self.stream, status, headers, end=end, close=close)
        self.conn.flush()
        if end and not http.http2:
            self.conn.pump()

    def send(self, data: bytes) -> None:
        self.conn.http.send(self.stream, data)
        self.conn.flush()

    def end(self) -> None:
        self.conn.http.end(self.stream)
        self.conn.flush()
        if not self.conn.http.http2:
            self.conn.pump()

    def reset(self) -> None:
        if not self.done:
            self.done = True
            self.conn.http.reset(self.stream)
            self.conn.forget(self)
            self.conn.flush()

    @property
    def must_pause(self) -> bool:
        """Should the writer stop (socket buffer full, or this stream's window closed)?"""
        return self.conn.writing_paused or self.conn.http.buffered(self.stream) > STREAM_HIGH

    @property
    def may_resume(self) -> bool:
        return not self.conn.writing_paused and self.conn.http.buffered(self.stream) <= STREAM_LOW

    def pause_reading(self) -> None:
        if not self.paused:
            self.paused = True
            if not self.conn.http.http2 and self.conn.transport is not None:
                self.conn.transport.pause_reading()

    def resume_reading(self) -> None:
        if self.paused:
            self.paused = False
            if self.unacked:
                size, self.unacked = self.unacked, 0
                self.conn.http.consumed(self.stream, size)
                self.conn.flush()
            if not self.conn.http.http2 and self.conn.transport is not None:
                self.conn.transport.resume_reading()

    def peer(self) -> str | None:
        peer = self.conn.peername
        return None if not peer else str(peer[0])


class HttpConnection(asyncio.Protocol):
    """Shared by both sides: the transport, the sans-I/O connection and its exchanges."""

    def __init__(self, http: H1Server | H2Server | H1Client | H2Client) -> None:
        self.http: Any = http
        self.transport: asyncio.Transport | None = None
        self.exchanges: dict[int, Exchange] = {}
        self.writing_paused = False
        self.peername: Any = None
        self.lost = False
        self.on_lost: Callable[[HttpConnection], None] | None = None
        self._dispatching = False
        self._pump_wanted = False

    # asyncio.Protocol
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)
        self.peername = transport.get_extra_info("peername")
        self.flush()

    def data_received(self, data: bytes) -> None:
        self.dispatch(self.http.receive(data))
        self.flush()

    def pump(self) -> None:
        """Pipelined HTTP/1.1 requests wait in h11 until the one before is answered: take
        them now (called when an exchange ends)."""
        if self._dispatching:
            self._pump_wanted = True
            return
        while not self.lost and (events := self.http.events()):
            self.dispatch(events)
        self.flush()

    def eof_received(self) -> bool:
        self.dispatch(self.http.receive_eof())
        self.flush()
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = True
        for exchange in list(self.exchanges.values()):
            exchange.done = True
            exchange.handler.reset()
        self.exchanges.clear()
        if self.on_lost is not None:
            self.on_lost(self)

    def pause_writing(self) -> None:
        self.writing_paused = True

    def resume_writing(self) -> None:
        self.writing_paused = False
        self._writable()

    # private
    def flush(self) -> None:
        transport = self.transport
        if transport is None or transport.is_closing():
            return
        out = self.http.data_to_send()
        if out:
            transport.writelines(out)
        if self.http.closed:
            transport.close()

    def forget(self, exchange: Exchange) -> None:
        self.exchanges.pop(exchange.stream, None)

    def _writable(self) -> None:
        for exchange in list(self.exchanges.values()):
            exchange.handler.writable()

    def dispatch(self, events: list[Event]) -> None:
        self._dispatching = True
        try:
            self._dispatch(events)
        finally:
            self._dispatching = False
        if self._pump_wanted:
            self._pump_wanted = False
            self.pump()

    def _dispatch(self, events: list[Event]) -> None:
        for event in events:
            if isinstance(event, Data):
                exchange = self.exchanges.get(event.stream)
                size = len(event.data)
                if exchange is None:
                    self.http.consumed(event.stream, size)
                    continue
                if exchange.paused:
                    exchange.unacked += size
                else:
                    self.http.consumed(event.stream, size)
                exchange.handler.data(event.data)
            elif isinstance(event, Request):
                self.request(event)
            elif isinstance(event, Response):
                exchange = self.exchanges.get(event.stream)
                if exchange is not None:
                    exchange.handler.response(event)
            elif isinstance(event, End):
                exchange = self.exchanges.get(event.stream)
                if exchange is not None:
                    exchange.handler.end()
            elif isinstance(event, Reset):
                exchange = self.exchanges.pop(event.stream, None)
                if exchange is not None:
                    exchange.done = True
                    exchange.handler.reset()
            elif isinstance(event, Writable):
                self._writable()
            elif isinstance(event, Closed) and self.transport is not None:
                self.flush()
                self.transport.close()

    def request(self, request: Request) -> None:
        """A request head came (server side)."""

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()


RequestTaker = Callable[[Exchange], None]


class ServerConnection(HttpConnection):
    """Each request goes to `take(exchange)`, which sets the exchange's handler and answers."""

    def __init__(self, http: H1Server | H2Server, take: RequestTaker) -> None:
        super().__init__(http)
        self.take = take

    def request(self, request: Request) -> None:
        exchange = Exchange(self, request.stream, request)
        self.exchanges[request.stream] = exchange
        self.take(exchange)

    def finished(self, exchange: Exchange) -> None:
        """The owner is done with `exchange` (answered, body read)."""
        self.forget(exchange)


class ClientConnection(HttpConnection):
    """Opens exchanges; `scheme` goes in h2's :scheme."""

    def __init__(self, http: H1Client | H2Client, scheme: str = "https") -> None:
        super().__init__(http)
        self.scheme = scheme

    @property
    def http2(self) -> bool:
        return bool(self.http.http2)

    def open(
        self,
        method: str,
        target: str,
        authority: str,
        headers: Sequence[tuple[str, str]],
        handler: ExchangeHandler,
        *,
        end: bool = False,
    ) -> Exchange:
        if self.http2:
            stream = self.http.request(
                method, target, authority, headers, scheme=self.scheme, end=end
            )
        else:
            stream = self.http.request(method, target, authority, headers, end=end)
        exchange = Exchange(self, stream)
        exchange.handler = handler
        self.exchanges[stream] = exchange
        self.flush()
        return exchange

    @property
    def usable(self) -> bool:
        if self.lost or self.http.closed:
            return False
        if self.http2:
            return bool(self.http.can_open)
        return bool(self.http.idle) and not self.exchanges
