"""The XHTTP client (Xray's splithttp dialer.go, client.go, mux.go): each stream is a session of
HTTP requests on a small pool of long-lived connections, like Xray's xmux defaults (3
connections, each for 600-900 requests and 1800-3000 s), so that a censor counting TLS
handshakes to one name sees a browser's few, not one per stream. HTTP/2 multiplexes every
session on the pool; HTTP/1.1 (ALPN http/1.1, or no TLS) holds one connection per request in
flight and keeps idle ones for the next.

packet-up: GET <path><session> downloads; what is written goes up as POST <path><session>/<seq>
bodies of at most scMaxEachPostBytes, no closer than scMinPostsIntervalMs, a few in flight.
stream-up: the upload is one long POST. stream-one: one POST carries both ways.

As a registered transport (transports.registry) it stands in for the whole `tcp > tls > xhttp`
stack (or `tcp > xhttp` without TLS) instead of taking one connection from the layer below: the
pool opens its own. Options: `mode`, `extra` (Xray's JSON), and the common `path` and `host`;
HTTP/1.1 only when the outbound says exactly `alpn = "http/1.1"`, else HTTP/2 (as Xray
decides)."""

from __future__ import annotations

import asyncio
import functools
import ssl
from collections import deque
from typing import Any

from elsewhere.codecs import xhttp
from elsewhere.codecs.xhttp import XhttpSettings
from elsewhere.errors import ConfigError, ProtocolError
from elsewhere.transports.layer import Layer, Pending
from elsewhere.transports.registry import Transport, register
from elsewhere.transports.settings import StreamSettings
from elsewhere.transports.tls import client_context
from elsewhere.transports.xhttp_pool import CONNECT_TIMEOUT, Pool, Target, close_pools, pool_for
from elsewhere.web.connection import ClientConnection, Exchange, Handler
from elsewhere.web.events import Response

__all__ = ["Pool", "Target", "XhttpClientStream", "close_pools", "open_stream", "pool_for"]

MAX_POSTS_IN_FLIGHT = 4  # packet-up POSTs sent and not yet answered, per stream
UPLOAD_HIGH = 2 * 1024 * 1024  # bytes waiting to go up before the writer is paused
UPLOAD_LOW = 512 * 1024


class _Down(Handler):
    def __init__(self, stream: XhttpClientStream) -> None:
        self.stream = stream

    def response(self, response: Response) -> None:
        if response.status != 200:
            self.stream.failed(f"download answered {response.status}")
        else:
            self.stream.opened()

    def data(self, data: bytes) -> None:
        self.stream.received(data)

    def end(self) -> None:
        self.stream.ended()

    def reset(self) -> None:
        self.stream.lost()

    def writable(self) -> None:
        self.stream.writable()


class _Post(Handler):
    """A packet-up POST (or stream-up's long one) waiting for its answer."""

    def __init__(self, stream: XhttpClientStream, pool: Pool, conn: ClientConnection) -> None:
        self.stream = stream
        self.pool = pool
        self.conn = conn
        self.status = 0
        self.exchange: Exchange | None = None

    def response(self, response: Response) -> None:
        self.status = response.status
        if response.status != 200:
            self.stream.failed(f"upload answered {response.status}")

    def end(self) -> None:
        if self.exchange is not None:
            self.conn.forget(self.exchange)
        self.pool.release(self.conn)
        if self.status == 200:
            self.stream.posted()

    def reset(self) -> None:
        if not self.stream.closing:
            self.stream.failed("upload reset")

    def writable(self) -> None:
        self.stream.writable()


class XhttpClientStream(Layer):
    """One XHTTP session as a stream for the protocol above (VLESS, Trojan): a Layer with no
    stream below, its bytes carried by the pool's requests."""

    def __init__(self, pool: Pool, mode: str) -> None:
        super().__init__()
        self.pool = pool
        self.target = pool.target
        self.mode = mode
        self.session = "" if mode == "stream-one" else xhttp.new_session_id()
        self.down: Exchange | None = None
        self.down_conn: ClientConnection | None = None
        self.up: Exchange | None = None  # stream-up / stream-one body
        self.pending = _Chunks()  # packet-up bytes not yet posted
        self.seq = 0
        self.in_flight = 0
        self.last_post = 0.0
        self.post_timer: asyncio.TimerHandle | None = None
        self.posting = False
        self.writing_paused = False
        self.closing = False
        self.ready: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._lost_told = False

    async def start(self) -> None:
        settings, target = self.target.settings, self.target
        conn = await self.pool.connection()
        self.down_conn = conn
        kind = "stream-one" if self.mode == "stream-one" else "download"
        method, path, headers = xhttp.request(
            settings, kind, scheme=target.scheme, authority=target.authority, session=self.session
        )
        self.down = conn.open(
            method, path, target.authority, headers, _Down(self), end=method == "GET"
        )
        if self.mode == "stream-one":
            self.up = self.down
        elif self.mode == "stream-up":
            up_conn = await self.pool.connection()
            method, path, headers = xhttp.request(
                settings,
                "stream-up",
                scheme=target.scheme,
                authority=target.authority,
                session=self.session,
            )
            handler = _Post(self, self.pool, up_conn)
            self.up = up_conn.open(method, path, target.authority, headers, handler)
            handler.exchange = self.up
        if self.mode == "stream-one" or self.pool.http2:
            return  # h2 answers the head at once; stream-one's answer may wait for its body
        async with asyncio.timeout(CONNECT_TIMEOUT):
            await asyncio.shield(self.ready)

    # from the download
    def opened(self) -> None:
        if not self.ready.done():
            self.ready.set_result(None)

    def failed(self, why: str) -> None:
        if not self.ready.done():
            self.ready.set_exception(ProtocolError(f"xhttp: {why}"))
            self.ready.exception()
        self.abort()

    def received(self, data: bytes) -> None:
        self.upper.data_received(data)

    def ended(self) -> None:
        if self.closing:
            return
        if not self.upper.eof_received():
            self.close()

    def lost(self) -> None:
        if not self.ready.done():
            self.ready.set_exception(ConnectionError("xhttp: download lost"))
            self.ready.exception()
        self.closing = True
        self._stop_posting()
        self._tell_lost()

    def writable(self) -> None:
        if self.writing_paused and self._may_resume():
            self.writing_paused = False
            self.upper.resume_writing()
        self._post()

    # asyncio.Transport (the protocol above calls these)
    def write(self, data: bytes | bytearray | memoryview) -> None:
        if self.closing or not data:
            return
        if self.up is not None:
            self.up.send(bytes(data))
            if not self.writing_paused and self.up.must_pause:
                self.writing_paused = True
                self.upper.pause_writing()
            return
        self.pending.append(bytes(data))
        self._post()
        if not self.writing_paused and len(self.pending) > UPLOAD_HIGH:
            self.writing_paused = True
            self.upper.pause_writing()

    def _may_resume(self) -> bool:
        if self.up is not None:
            return self.up.may_resume
        return len(self.pending) <= UPLOAD_LOW

    def _post(self) -> None:
        """packet-up: send the next POST if there is something to send and room for it."""
        if self.closing or self.posting or not self.pending or self.up is not None:
            return
        if self.in_flight >= MAX_POSTS_IN_FLIGHT or self.post_timer is not None:
            return
        settings = self.target.settings
        loop = asyncio.get_running_loop()
        wait = xhttp.pick(settings.min_posts_interval_ms) / 1000 - (loop.time() - self.last_post)
        if wait > 0:
            self.post_timer = loop.call_later(wait, self._timer_post)
            return
        self.posting = True
        task = loop.create_task(self._send_post())
        task.add_done_callback(_quiet)

    def _timer_post(self) -> None:
        self.post_timer = None
        self._post()

    async def _send_post(self) -> None:
        settings, target = self.target.settings, self.target
        try:
            conn = await self.pool.connection()
        except (OSError, TimeoutError, ssl.SSLError):
            self.posting = False
            self.abort()
            return
        self.posting = False
        if self.closing:
            self.pool.release(conn)
            return
        size = min(len(self.pending), settings.max_each_post_bytes)
        body = self.pending.take(size)
        method, path, headers = xhttp.request(
            settings,
            "packet",
            scheme=target.scheme,
            authority=target.authority,
            session=self.session,
            seq=self.seq,
            length=size,
        )
        self.seq += 1
        self.in_flight += 1
        self.last_post = asyncio.get_running_loop().time()
        handler = _Post(self, self.pool, conn)
        exchange = handler.exchange = conn.open(method, path, target.authority, headers, handler)
        exchange.send(body)
        exchange.end()
        if self.writing_paused and self._may_resume():
            self.writing_paused = False
            self.upper.resume_writing()
        self._post()

    def posted(self) -> None:
        self.in_flight -= 1
        self._post()

    def can_write_eof(self) -> bool:
        return self.mode != "packet-up"

    def write_eof(self) -> None:
        if self.up is not None and not self.closing:
            self.up.end()

    def _stop_posting(self) -> None:
        if self.post_timer is not None:
            self.post_timer.cancel()
            self.post_timer = None
        self.pending.clear()

    def close(self) -> None:
        if self.closing:
            return
        self.closing = True
        self._stop_posting()
        for exchange in (self.down, self.up):
            if exchange is not None and not exchange.done:
                exchange.reset()
        self._drop_h1()
        asyncio.get_running_loop().call_soon(self._tell_lost)

    def abort(self) -> None:
        self.close()

    def _drop_h1(self) -> None:
        """An HTTP/1.1 download cut short leaves its connection mid-response: it goes."""
        conn = self.down_conn
        if conn is not None and not conn.http2:
            conn.close()

    def _tell_lost(self) -> None:
        if self._lost_told:
            return
        self._lost_told = True
        if self.down_conn is not None and self.down is not None:
            self.down_conn.forget(self.down)
        self.upper.connection_lost(None)

    def is_closing(self) -> bool:
        return self.closing

    def pause_reading(self) -> None:
        if self.down is not None:
            self.down.pause_reading()

    def resume_reading(self) -> None:
        if self.down is not None:
            self.down.resume_reading()

    def is_reading(self) -> bool:
        return self.down is None or not self.down.paused

    def get_write_buffer_size(self) -> int:
        return len(self.pending)

    def set_write_buffer_limits(self, high: int | None = None, low: int | None = None) -> None:
        return None

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        conn = self.down_conn
        if conn is None or conn.transport is None:
            return default
        return conn.transport.get_extra_info(name, default)


class _Chunks:
    """Written bytes waiting to be posted: taken from the front without moving the rest."""

    __slots__ = ("_chunks", "_size")

    def __init__(self) -> None:
        self._chunks: deque[bytes] = deque()
        self._size = 0

    def append(self, data: bytes) -> None:
        self._chunks.append(data)
        self._size += len(data)

    def take(self, size: int) -> bytes:
        chunks = self._chunks
        if len(chunks[0]) == size:
            self._size -= size
            return chunks.popleft()
        out = bytearray()
        while len(out) < size:
            chunk = chunks.popleft()
            want = size - len(out)
            if len(chunk) > want:
                chunks.appendleft(chunk[want:])
                chunk = chunk[:want]
            out += chunk
        self._size -= size
        return bytes(out)

    def clear(self) -> None:
        self._chunks.clear()
        self._size = 0

    def __len__(self) -> int:
        return self._size


def _quiet(task: asyncio.Task[None]) -> None:
    if not task.cancelled():
        task.exception()


async def open_stream(target: Target) -> XhttpClientStream:
    """A new session to `target` on its pool; its protocol is a Pending."""
    pool = pool_for(target)
    stream = XhttpClientStream(pool, target.settings.client_mode())
    stream.upper = Pending()
    try:
        await stream.start()
    except BaseException:
        stream.close()
        raise
    return stream


# -- the registered transport ------------------------------------------------------------

H2_FIRST = ("h2", "http/1.1")


@functools.lru_cache(maxsize=64)
def _context(insecure: bool, pin: str | None, alpn: tuple[str, ...]) -> ssl.SSLContext:
    return client_context(sni_verify=not insecure, pin_sha256=pin, alpn=alpn)


def target_of(settings: StreamSettings, host: str, port: int) -> Target:
    """Where the pool connects and what it asks for, from an outbound's settings."""
    options = settings.options
    xs = XhttpSettings.parse(
        settings.path, settings.host, options.get("mode"), options.get("extra")
    )
    tls = None
    if settings.security == "tls":
        alpn = settings.alpn if "alpn" in options else H2_FIRST
        tls = _context(settings.insecure, settings.pin, tuple(alpn))
    authority = settings.host or settings.sni or host
    return Target(host, port, tls, settings.sni, authority, xs)


async def dial_pooled(lower: Layer | None, settings: StreamSettings, host: str, port: int) -> Layer:
    return await open_stream(target_of(settings, host, port))


async def dial_alone(lower: Layer | None, settings: StreamSettings, host: str, port: int) -> Layer:
    raise ConfigError(
        f"xhttp opens its own connections: use it as tcp > tls > xhttp or tcp > xhttp, "
        f"not in {' > '.join(settings.stack)}"
    )


register(Transport("xhttp", dial_alone, options=("mode", "extra")))
register(Transport("xhttp-tls", dial_pooled, replaces=("tcp", "tls", "xhttp")))
register(Transport("xhttp-plain", dial_pooled, replaces=("tcp", "xhttp")))
