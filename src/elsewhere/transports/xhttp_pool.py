"""XHTTP's client connections (Xray's xmux, splithttp/mux.go): per server and endpoint a pool
of at most 3 long-lived connections (Xray's defaults: 600-900 requests and 1800-3000 s each, then
replaced) that every session's requests share over HTTP/2; over HTTP/1.1, where a connection
carries one request at a time, idle connections are kept for the next request."""

from __future__ import annotations

import asyncio
import ssl
import time
import weakref
from collections.abc import Callable
from dataclasses import dataclass

from elsewhere.codecs import xhttp
from elsewhere.codecs.xhttp import XhttpSettings
from elsewhere.web.connection import ClientConnection
from elsewhere.web.h1 import H1Client
from elsewhere.web.h2 import H2Client

CONNECT_TIMEOUT = 10.0
IDLE_CLOSE = 120.0  # a pooled connection without a request this long is closed
H1_IDLE_KEPT = 8  # idle HTTP/1.1 connections kept for reuse


@dataclass(frozen=True)
class Target:
    """Where and how: the server, TLS (context and SNI, None for plain HTTP), the HTTP Host."""

    host: str
    port: int
    tls: ssl.SSLContext | None
    sni: str | None
    authority: str
    settings: XhttpSettings

    @property
    def scheme(self) -> str:
        return "https" if self.tls is not None else "http"


class _Pooled:
    """One connection of the pool (an XmuxClient) with its limits."""

    __slots__ = ("conn", "last_used", "left_requests", "unreusable_at")

    def __init__(self, conn: ClientConnection, xmux: xhttp.Xmux, now: float) -> None:
        self.conn = conn
        requests = xhttp.pick(xmux.max_request_times)
        self.left_requests = requests if requests > 0 else 1 << 31
        secs = xhttp.pick(xmux.max_reusable_secs)
        self.unreusable_at = now + secs if secs > 0 else float("inf")
        self.last_used = now

    def spent(self, now: float) -> bool:
        return self.conn.lost or self.left_requests <= 0 or now >= self.unreusable_at


class Pool:
    """xmux for one server and endpoint."""

    def __init__(self, target: Target) -> None:
        self.target = target
        self.h2: list[_Pooled] = []
        self.h1_idle: list[ClientConnection] = []
        self.http2: bool | None = None  # learnt from the first connection's ALPN
        self.handshakes = 0  # connections opened (for tests and the handshake-rate lab)
        self._opening: asyncio.Future[ClientConnection] | None = None
        self._reaper: asyncio.TimerHandle | None = None
        self.closed = False

    async def _connect(self) -> ClientConnection:
        loop = asyncio.get_running_loop()
        target = self.target

        def protocol() -> asyncio.Protocol:
            return _Deferred(target.scheme)

        async with asyncio.timeout(CONNECT_TIMEOUT):
            _transport, proto = await loop.create_connection(
                protocol,
                target.host,
                target.port,
                ssl=target.tls,
                server_hostname=(target.sni or target.host) if target.tls is not None else None,
            )
        self.handshakes += 1
        assert isinstance(proto, _Deferred)
        conn = proto.conn
        assert conn is not None
        self.http2 = conn.http2
        self._schedule_reap()
        return conn

    async def connection(self) -> ClientConnection:
        """A connection ready for one more request (xmux's GetXmuxClient)."""
        if self.http2 is False:
            while self.h1_idle:
                conn = self.h1_idle.pop()
                if conn.usable:
                    return conn
                conn.close()
            return await self._connect()
        now = time.monotonic()
        xmux = self.target.settings.xmux
        for pooled in list(self.h2):
            if pooled.spent(now):
                self.h2.remove(pooled)
                if not pooled.conn.exchanges:
                    pooled.conn.close()
        limit = xhttp.pick(xmux.max_connections)
        usable = [p for p in self.h2 if p.conn.usable]
        if xmux.max_concurrency[1] > 0:
            most = xhttp.pick(xmux.max_concurrency)
            usable = [p for p in usable if len(p.conn.exchanges) < most]
        if not self.h2 or (limit > 0 and len(self.h2) < limit) or not usable:
            conn = await self._open_shared()
            if not conn.http2:
                return conn
            # those who waited for the same new connection share its entry
            found = next((p for p in self.h2 if p.conn is conn), None)
            if found is None:
                found = _Pooled(conn, xmux, time.monotonic())
                self.h2.append(found)
            pooled = found
        else:
            pooled = usable[xhttp.pick((0, len(usable) - 1))]
        pooled.left_requests -= 1
        pooled.last_used = time.monotonic()
        return pooled.conn

    async def _open_shared(self) -> ClientConnection:
        """One connection being opened at a time: requests that wait for it share it (h2)."""
        if self._opening is not None and self.http2 is not False:
            conn = await asyncio.shield(self._opening)
            if conn.usable:
                return conn
        future: asyncio.Future[ClientConnection] = asyncio.get_running_loop().create_future()
        self._opening = future
        try:
            conn = await self._connect()
        except BaseException as exc:
            if not future.done():
                future.set_exception(exc)
                future.exception()  # retrieved: nobody else may wait
            raise
        finally:
            if self._opening is future:
                self._opening = None
        future.set_result(conn)
        return conn

    def release(self, conn: ClientConnection) -> None:
        """An HTTP/1.1 connection whose exchange is over goes back for the next request."""
        if conn.http2 or self.closed:
            return
        if conn.usable and len(self.h1_idle) < H1_IDLE_KEPT:
            self.h1_idle.append(conn)
        else:
            conn.close()

    def _schedule_reap(self) -> None:
        if self._reaper is None and not self.closed:
            loop = asyncio.get_running_loop()
            self._reaper = loop.call_later(IDLE_CLOSE / 4, self._reap)

    def _reap(self) -> None:
        self._reaper = None
        now = time.monotonic()
        for pooled in list(self.h2):
            if not pooled.conn.exchanges and now - pooled.last_used > IDLE_CLOSE:
                self.h2.remove(pooled)
                pooled.conn.close()
        for conn in list(self.h1_idle):
            if not conn.usable:
                self.h1_idle.remove(conn)
        if self.h2 or self.h1_idle:
            self._schedule_reap()

    def close(self) -> None:
        self.closed = True
        if self._reaper is not None:
            self._reaper.cancel()
            self._reaper = None
        for pooled in self.h2:
            pooled.conn.close()
        for conn in self.h1_idle:
            conn.close()
        self.h2.clear()
        self.h1_idle.clear()


class _Deferred(asyncio.Protocol):
    """Becomes the right ClientConnection once the TLS handshake told the ALPN."""

    def __init__(self, scheme: str) -> None:
        self.scheme = scheme
        self.conn: ClientConnection | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        ssl_object = transport.get_extra_info("ssl_object")
        h2 = ssl_object is not None and ssl_object.selected_alpn_protocol() == "h2"
        conn = ClientConnection(H2Client() if h2 else H1Client(), self.scheme)
        self.conn = conn
        transport.set_protocol(conn)
        conn.connection_made(transport)


_pools: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, dict[Target, Pool]] = (
    weakref.WeakKeyDictionary()
)


def pool_for(target: Target) -> Pool:
    """The pool of this event loop for `target` (one per server and endpoint, as Xray keys its
    globalDialerMap)."""
    pools = _pools.setdefault(asyncio.get_running_loop(), {})
    pool = pools.get(target)
    if pool is None or pool.closed:
        pool = pools[target] = Pool(target)
    return pool


def close_pools(match: Callable[[Target], bool] = lambda t: True) -> None:
    """Close the pools of this loop whose target matches (an outbound that stops)."""
    pools = _pools.get(asyncio.get_running_loop(), {})
    for target in [t for t in pools if match(t)]:
        pools.pop(target).close()
