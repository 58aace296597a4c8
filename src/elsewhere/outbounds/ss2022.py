"""The Shadowsocks 2022 client (SIP022, SIP022-2 `iPSK:uPSK` keys): streams and UDP sessions
to a 2022 server. Salt, headers and the first data leave in one write; if the client says
nothing for a moment (a server-speaks-first protocol) the request goes with padding alone.

SIP022 servers refuse requests more than 30 s off their clock without a word, so a client with
a wrong clock sees connections that close unanswered; ClockWatch turns that into one warning."""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Callable, Mapping
from typing import Any

from elsewhere.codecs.ss2022 import (
    MAX_TIME_DIFFERENCE,
    Method,
    ResponseHeader,
    SaltPool,
    TcpClient,
    TimestampError,
    decode_psks,
    get_method,
)
from elsewhere.codecs.ss2022_udp import UdpClient
from elsewhere.control.links import AccessKey
from elsewhere.errors import ConfigError
from elsewhere.outbounds.base import DatagramReceiver, register
from elsewhere.outbounds.packets import PacketFlow, connect
from elsewhere.outbounds.shadowsocks import key_from_options
from elsewhere.session import Destination, Session
from elsewhere.transports.layer import CryptoLayer
from elsewhere.transports.tcp import connect_tcp

log = logging.getLogger("elsewhere.ss2022")

CONNECT_TIMEOUT = 10.0
HEADER_WAIT = 0.01  # as the AEAD client: wait 10 ms for the first data before sending alone
UNANSWERED_STREAK = 3  # connections in a row closed without an answer ...
UNANSWERED_WINDOW = 60.0  # ... within this many seconds: suspect the clock
CLOCK_HINT = f"check the system clock: Shadowsocks 2022 needs it within {MAX_TIME_DIFFERENCE} s"

Clock = Callable[[], float]


class ClockWatch:
    """Counts connections that carried a request with data and closed without any answer.
    `suspect` turns on (with one warning) after UNANSWERED_STREAK of them in a row within
    UNANSWERED_WINDOW seconds, and off at the next answered connection. A response whose
    timestamp is off (`skew`, seconds server minus us) is proof and warns at once."""

    def __init__(self, server: str) -> None:
        self.server = server
        self.unanswered = 0  # in a row
        self.suspect = False
        self.warnings = 0
        self.skew: float | None = None
        self._times: deque[float] = deque(maxlen=UNANSWERED_STREAK)

    def answered(self) -> None:
        self.unanswered = 0
        self._times.clear()
        self.suspect = False

    def unanswered_close(self, now: float) -> None:
        self.unanswered += 1
        self._times.append(now)
        if (
            not self.suspect
            and len(self._times) == UNANSWERED_STREAK
            and now - self._times[0] <= UNANSWERED_WINDOW
        ):
            self._warn(f"{self.unanswered} connections in a row to {self.server} closed unanswered")

    def skewed(self, skew: float) -> None:
        self.skew = skew
        if not self.suspect:
            self._warn(f"{self.server}'s clock is {skew:+.0f} s from ours")

    def _warn(self, why: str) -> None:
        self.suspect = True
        self.warnings += 1
        log.warning("%s: %s", why, CLOCK_HINT)


class _Stream(CryptoLayer):
    """One SIP022 stream: the first write becomes the request (salt, headers, data), later
    writes data chunks; what arrives is opened by the codec, response header first."""

    def __init__(
        self,
        codec: TcpClient,
        destination: Destination,
        clock: Clock,
        watch: ClockWatch,
        loop: asyncio.AbstractEventLoop,
    ) -> None:
        super().__init__(self._encode, self._decode)
        self.loop = loop
        self.codec = codec
        self.destination = destination
        self.clock = clock
        self.watch = watch
        self.requested = False
        self.spoke = False  # the request carried data of the user's
        self.answered = False
        self.timer: asyncio.TimerHandle | None = None

    # asyncio.Protocol
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        self.timer = self.loop.call_later(HEADER_WAIT, self.flush_request)

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_timer()
        if self.answered:
            self.watch.answered()
        elif self.spoke:
            self.watch.unanswered_close(time.monotonic())
        super().connection_lost(exc)

    # asyncio.Transport
    def write(self, data: bytes | bytearray | memoryview) -> None:
        if not data:
            return
        assert self.lower is not None
        self.lower.write(self._encode(bytes(data)) if self.requested else self._request(data))

    def write_eof(self) -> None:
        self.flush_request()
        super().write_eof()

    # the codec
    def flush_request(self) -> None:
        """No data came in time: the request goes with padding alone (SIP022 allows it)."""
        self._cancel_timer()
        if not self.requested and self.lower is not None and not self.lower.is_closing():
            self.lower.write(self._request(b""))

    def _request(self, data: bytes | bytearray | memoryview) -> bytes:
        self._cancel_timer()
        self.requested = True
        self.spoke = bool(data)
        return self.codec.request(self.destination, data, now=self.clock())

    def _encode(self, data: bytes) -> bytes:
        return self.codec.send(data)  # type: ignore[return-value]

    def _decode(self, data: bytes) -> bytes:
        try:
            events = self.codec.feed(data, now=self.clock())
        except TimestampError as exc:
            self.watch.skewed(exc.skew)
            raise
        if not events:
            return b""
        if isinstance(events[0], ResponseHeader):
            self.answered = True
            events = events[1:]
        return b"".join(event.payload for event in events)  # type: ignore[union-attr]

    def _cancel_timer(self) -> None:
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None


class Ss2022Outbound:
    """Options: `key = "ss://2022-…"` or server, port, method, password (`uPSK`, or
    `iPSK:uPSK` for a multi-user server); `clock_offset` shifts our clock (for tests)."""

    def __init__(self, tag: str, key: AccessKey, clock_offset: float = 0.0) -> None:
        self.tag = tag
        self.key = key
        self.method: Method = get_method(key.method)
        self.psks = decode_psks(self.method, key.password)
        self.clock: Clock = (lambda: time.time() + clock_offset) if clock_offset else time.time
        self.salts = SaltPool()  # response salts: a replayed response is refused
        self.clock_watch = ClockWatch(f"{key.host}:{key.port}")

    async def open_tcp(self, session: Session) -> asyncio.Transport:
        loop = asyncio.get_running_loop()
        codec = TcpClient(self.method, self.psks, salt_pool=self.salts)
        stream = _Stream(codec, session.destination, self.clock, self.clock_watch, loop)
        await connect_tcp(loop, lambda: stream, self.key.host, self.key.port, CONNECT_TIMEOUT)
        return stream

    async def open_udp(self, session: Session, receive: DatagramReceiver) -> PacketFlow:
        codec, clock = UdpClient(self.method, self.psks), self.clock

        def seal(payload: bytes, destination: Destination) -> bytes:
            return codec.send(destination, payload, now=clock())

        def open_(data: bytes) -> tuple[bytes, Destination]:
            packet = codec.receive(data, now=clock())
            return packet.payload, packet.source

        return await connect(PacketFlow(seal, open_, receive), self.key.host, self.key.port)

    async def close(self) -> None:
        return None


@register("ss2022")
def _make(tag: str, options: Mapping[str, Any]) -> Ss2022Outbound:
    key = key_from_options(tag, options)
    if key.prefix:
        raise ConfigError(f'outbound "{tag}": Shadowsocks 2022 has no prefix; remove it')
    try:
        return Ss2022Outbound(tag, key, float(options.get("clock_offset", 0.0)))
    except ConfigError as exc:
        raise ConfigError(f'outbound "{tag}": {exc}') from None
