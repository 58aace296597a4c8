"""XHTTP's server side (Xray's splithttp hub.go) on the HTTP core: the requests of one endpoint
become sessions, each a stream (XhttpStream, an asyncio Transport) handed to the protocol above
once its download request is in. Requests off the path or for another host go to `stranger`
(the decoy site); broken ones on the path get Xray's 400/404/405/409/413/500 answers."""

from __future__ import annotations

import asyncio
import ipaddress
import logging
from collections.abc import Callable, Iterable
from typing import Any

from elsewhere.codecs import xhttp
from elsewhere.codecs.xhttp import Classified, Reject, XhttpSettings
from elsewhere.errors import ProtocolError
from elsewhere.web.connection import Exchange, Handler, ServerConnection

log = logging.getLogger("elsewhere.xhttp")

# Upload bytes delivered but not yet taken by a paused reader before packet-up POSTs are no
# longer answered (the client then stops sending: its in-flight POSTs are capped).
MAX_BACKLOG = 4 * 1024 * 1024
Network = ipaddress.IPv4Network | ipaddress.IPv6Network


class XhttpStream(asyncio.Transport):
    """One XHTTP session as a stream: what the client uploads (packet-up POSTs in seq order,
    or a stream-up/stream-one body) is data_received above; what is written goes down in the
    download response."""

    def __init__(self, server: XhttpServer, session: str, client: str | None) -> None:
        super().__init__()
        self.server = server
        self.session = session
        self.client = client
        self.upper: Any = None
        self.down: Exchange | None = None
        self.up: Exchange | None = None  # stream-up's or stream-one's POST
        self.queue = xhttp.UploadQueue(server.settings.max_buffered_posts)
        self.inbox: list[bytes] = []
        self.backlog = 0
        self.eof = False
        self.reading_paused = False
        self.writing_paused = False
        self.closed = False
        self.held_posts: list[tuple[Exchange, bool]] = []  # answered once the backlog drains
        self.reaper: asyncio.TimerHandle | None = None
        self.drip: asyncio.TimerHandle | None = None

    # from the requests
    def feed(self, chunks: Iterable[bytes]) -> None:
        for chunk in chunks:
            if self.upper is None or self.reading_paused or self.inbox:
                self.inbox.append(chunk)
                self.backlog += len(chunk)
            else:
                self.upper.data_received(chunk)
        self._drain()

    def feed_eof(self) -> None:
        self.eof = True
        self._drain()

    def _drain(self) -> None:
        while self.inbox and self.upper is not None and not self.reading_paused:
            chunk = self.inbox.pop(0)
            self.backlog -= len(chunk)
            self.upper.data_received(chunk)
        if self.backlog <= MAX_BACKLOG:
            held, self.held_posts = self.held_posts, []
            for exchange, body in held:
                self.server.answer_post(exchange, body)
        if self.eof and not self.inbox and self.upper is not None and not self.reading_paused:
            self.eof = False
            if not self.upper.eof_received():
                self.close()

    def attach(self, protocol: asyncio.BaseProtocol) -> None:
        self.upper = protocol
        protocol.connection_made(self)
        self._drain()

    def lost(self) -> None:
        """The download (or stream-one) request ended from below."""
        if self.closed:
            return
        self.closed = True
        self._cleanup()
        if self.upper is not None:
            self.upper.connection_lost(None)

    def _cleanup(self) -> None:
        self.server.sessions.pop(self.session, None)
        for timer in (self.reaper, self.drip):
            if timer is not None:
                timer.cancel()
        self.reaper = self.drip = None
        for exchange, _ in self.held_posts:
            exchange.reset()
        self.held_posts = []
        self.inbox = []

    # asyncio.Transport (the protocol above calls these)
    def write(self, data: bytes | bytearray | memoryview) -> None:
        down = self.down
        if down is None or self.closed or not data:
            return
        down.send(bytes(data))
        if not self.writing_paused and down.must_pause and self.upper is not None:
            self.writing_paused = True
            self.upper.pause_writing()

    def writelines(self, list_of_data: Any) -> None:
        self.write(b"".join(list_of_data))

    def writable(self) -> None:
        down = self.down
        if self.writing_paused and down is not None and down.may_resume:
            self.writing_paused = False
            if self.upper is not None:
                self.upper.resume_writing()

    def can_write_eof(self) -> bool:
        return False

    def write_eof(self) -> None:
        self.close()

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        if self.down is not None and not self.down.done:
            self.down.end()
            self.down.conn.forget(self.down)
        if self.up is not None and self.up is not self.down and not self.up.done:
            self.up.reset()
        self._cleanup()
        if self.upper is not None:
            asyncio.get_running_loop().call_soon(self.upper.connection_lost, None)

    def abort(self) -> None:
        if self.closed:
            return
        self.closed = True
        for exchange in (self.down, self.up):
            if exchange is not None:
                exchange.reset()
        self._cleanup()
        if self.upper is not None:
            asyncio.get_running_loop().call_soon(self.upper.connection_lost, None)

    def is_closing(self) -> bool:
        return self.closed

    def pause_reading(self) -> None:
        self.reading_paused = True
        if self.up is not None:
            self.up.pause_reading()

    def resume_reading(self) -> None:
        self.reading_paused = False
        if self.up is not None:
            self.up.resume_reading()
        self._drain()

    def is_reading(self) -> bool:
        return not self.reading_paused

    def set_protocol(self, protocol: asyncio.BaseProtocol) -> None:
        self.upper = protocol

    def get_protocol(self) -> asyncio.BaseProtocol:
        return self.upper

    def get_write_buffer_size(self) -> int:
        return 0 if self.down is None else self.down.conn.http.buffered(self.down.stream)

    def set_write_buffer_limits(self, high: int | None = None, low: int | None = None) -> None:
        return None

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        if name == "peername":
            return (self.client, 0) if self.client else default
        exchange = self.down or self.up
        if exchange is None or exchange.conn.transport is None:
            return default
        return exchange.conn.transport.get_extra_info(name, default)


class _Download(Handler):
    def __init__(self, stream: XhttpStream, one: bool) -> None:
        self.stream = stream
        self.one = one  # stream-one: this request's body is the upload

    def data(self, data: bytes) -> None:
        if self.one:
            self.stream.feed((data,))

    def end(self) -> None:
        if self.one:
            self.stream.feed_eof()

    def reset(self) -> None:
        self.stream.lost()

    def writable(self) -> None:
        self.stream.writable()


class _StreamUp(Handler):
    def __init__(self, stream: XhttpStream) -> None:
        self.stream = stream

    def data(self, data: bytes) -> None:
        self.stream.feed((data,))

    def end(self) -> None:
        self.stream.feed_eof()

    def reset(self) -> None:
        if not self.stream.closed:
            self.stream.abort()


class _Packet(Handler):
    """One packet-up POST: its body (at most scMaxEachPostBytes) goes in the session's queue."""

    def __init__(self, server: XhttpServer, exchange: Exchange, target: Classified) -> None:
        self.server = server
        self.exchange = exchange
        self.target = target
        self.body: list[bytes] = []
        self.size = 0
        self.refused = False

    def data(self, data: bytes) -> None:
        if self.refused:
            return
        self.size += len(data)
        if self.size > self.server.settings.max_each_post_bytes:
            self.refused = True
            self.body = []
            self.server.refuse(self.exchange, 413)
            return
        self.body.append(data)

    def end(self) -> None:
        if self.refused:
            return
        self.server.packet(self.exchange, self.target, b"".join(self.body), self.size)


class _Drain(Handler):
    """An answered request whose body is read and dropped."""

    def __init__(self, server: XhttpServer, exchange: Exchange) -> None:
        self.server = server
        self.exchange = exchange

    def end(self) -> None:
        self.server.done(self.exchange)


class XhttpServer:
    """The sessions of one endpoint. `opened(stream)` is called when a session's download
    starts (the stream's protocol is then to be set with stream.attach); `stranger(exchange)`
    answers what is not ours; `trusted` are the networks whose X-Forwarded-For is believed."""

    def __init__(
        self,
        settings: XhttpSettings,
        *,
        opened: Callable[[XhttpStream], None],
        stranger: Callable[[Exchange], None],
        trusted: Iterable[Network] = (),
        reap_after: float = xhttp.SESSION_REAP_SECONDS,
    ) -> None:
        self.settings = settings
        self.opened = opened
        self.stranger = stranger
        self.trusted = tuple(trusted)
        self.reap_after = reap_after
        self.sessions: dict[str, XhttpStream] = {}
        self.rejected = 0  # answers of 4xx/5xx on the path (a counter for operators)
        self.reaped = 0  # sessions dropped without their download
        self.on_reaped: Callable[[], None] | None = None  # for tests: a session was reaped

    def take(self, exchange: Exchange) -> None:
        request = exchange.request
        assert request is not None
        settings = self.settings
        if not xhttp.on_path(settings, request.target) or not xhttp.host_matches(
            settings, request.authority
        ):
            self.stranger(exchange)
            return
        try:
            target = xhttp.classify(settings, request.method, request.target, request.headers)
            length = xhttp.header(request.headers, "content-length")
            if (
                target.kind == "packet"
                and length is not None
                and length.isdigit()
                and int(length) > settings.max_each_post_bytes
            ):
                raise Reject(413, "too large")
        except Reject as reject:
            log.debug("xhttp: %s: %s", reject.status, reject)
            self.refuse(exchange, reject.status)
            return
        if target.kind == "options":
            exchange.respond(200, self._headers(exchange, target), end=True)
            exchange.handler = _Drain(self, exchange)
        elif target.kind == "download":
            self._download(exchange, target)
        elif target.kind == "stream-up":
            self._stream_up(exchange, target)
        else:
            exchange.handler = _Packet(self, exchange, target)

    def _headers(
        self, exchange: Exchange, target: Classified, body: bool = True
    ) -> list[tuple[str, str]]:
        assert exchange.request is not None
        return xhttp.response_headers(
            self.settings, target.kind, exchange.request.headers, body=body
        )

    def refuse(self, exchange: Exchange, status: int) -> None:
        self.rejected += 1
        assert exchange.request is not None
        headers = xhttp.error_headers(self.settings, exchange.request.headers)
        # a body we will not read: HTTP/1.1 cannot go on after it, h2 resets the stream
        exchange.respond(
            status, headers, end=True, close=not exchange.conn.http.http2 and status == 413
        )
        exchange.handler = _Drain(self, exchange)

    def done(self, exchange: Exchange) -> None:
        conn = exchange.conn
        if isinstance(conn, ServerConnection):
            conn.finished(exchange)

    def _client(self, exchange: Exchange) -> str | None:
        assert exchange.request is not None
        return xhttp.forwarded_for(exchange.request.headers, exchange.peer(), self.trusted)

    def session(self, exchange: Exchange, sid: str) -> XhttpStream:
        """Xray's upsertSession: an unknown id makes a session, dropped if its download has
        not come within 30 s."""
        stream = self.sessions.get(sid)
        if stream is None:
            stream = XhttpStream(self, sid, self._client(exchange))
            self.sessions[sid] = stream
            loop = asyncio.get_running_loop()
            stream.reaper = loop.call_later(self.reap_after, self._reap, stream)
        return stream

    def _reap(self, stream: XhttpStream) -> None:
        stream.reaper = None
        if stream.down is None and not stream.closed:
            log.debug("xhttp: session reaped (no download in %s s)", self.reap_after)
            self.reaped += 1
            stream.abort()
            if self.on_reaped is not None:
                self.on_reaped()

    def _download(self, exchange: Exchange, target: Classified) -> None:
        if target.session:
            stream = self.session(exchange, target.session)
            if stream.down is not None:
                self.refuse(exchange, 409)
                return
            if stream.reaper is not None:
                stream.reaper.cancel()
                stream.reaper = None
        else:  # stream-one
            stream = XhttpStream(self, "", self._client(exchange))
            stream.up = exchange
        stream.down = exchange
        exchange.handler = _Download(stream, one=not target.session)
        exchange.respond(200, self._headers(exchange, target))
        self.opened(stream)

    def _stream_up(self, exchange: Exchange, target: Classified) -> None:
        stream = self.session(exchange, target.session)
        if stream.up is not None:
            self.refuse(exchange, 409)
            return
        stream.up = exchange
        exchange.handler = _StreamUp(stream)
        exchange.respond(200, self._headers(exchange, target))
        assert exchange.request is not None
        if xhttp.header(exchange.request.headers, "referer") is not None:
            self._drip(stream, exchange)
        if stream.reading_paused:
            exchange.pause_reading()

    def _drip(self, stream: XhttpStream, exchange: Exchange) -> None:
        """stream-up's response carries padding every 20-80 s, so that a CDN sees it alive."""
        if exchange.done or stream.closed:
            return
        exchange.send(xhttp.padding(self.settings.padding_bytes).encode())
        delay = xhttp.pick(self.settings.stream_up_server_secs)
        stream.drip = asyncio.get_running_loop().call_later(delay, self._drip, stream, exchange)

    def packet(self, exchange: Exchange, target: Classified, payload: bytes, size: int) -> None:
        assert target.seq is not None
        stream = self.session(exchange, target.session)
        if stream.closed:
            self.refuse(exchange, 500)
            return
        try:
            ready = stream.queue.push(target.seq, payload)
        except ProtocolError as exc:
            log.debug("xhttp: session torn down: %s", exc)
            self.refuse(exchange, 500)
            stream.close()  # its download ends, as Xray's once the reader fails
            return
        exchange.handler = _Drain(self, exchange)
        stream.feed(ready)
        if stream.backlog > MAX_BACKLOG:
            stream.held_posts.append((exchange, size > 0))
        else:
            self.answer_post(exchange, size > 0)

    def answer_post(self, exchange: Exchange, body: bool) -> None:
        if exchange.done:
            return
        exchange.respond(200, self._headers(exchange, Classified("packet"), body=body), end=True)
        self.done(exchange)

    def close(self) -> None:
        for stream in list(self.sessions.values()):
            stream.abort()
