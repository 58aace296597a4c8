"""Stackable stream layers: each is an asyncio Protocol to the stream below it and an asyncio
Transport to the protocol above it, the way asyncio's own SSL layer is built. A layer moves
whole chunks; the codec it wraps does the per-chunk work."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any, cast

from elsewhere.errors import ProtocolError

Encode = Callable[[bytes], bytes | bytearray]


class Pending(asyncio.Protocol):
    """Keeps what an opened stream receives until the relay takes it over (see relay.attach)."""

    def __init__(self) -> None:
        self.chunks: list[bytes] = []
        self.eof = False
        self.lost = False
        self.error: Exception | None = None
        self.writing_paused = False

    def data_received(self, data: bytes) -> None:
        self.chunks.append(data)

    def eof_received(self) -> bool:
        self.eof = True
        return True

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = True
        self.error = exc

    def pause_writing(self) -> None:
        self.writing_paused = True

    def resume_writing(self) -> None:
        self.writing_paused = False


class Layer(asyncio.Protocol, asyncio.Transport):
    """Passes everything straight through; subclasses transform data one way or both."""

    def __init__(self, upper: asyncio.BaseProtocol | None = None) -> None:
        self.lower: asyncio.Transport | None = None
        self.upper: Any = upper if upper is not None else Pending()
        self._closing = False

    # asyncio.Protocol (the stream below calls these)
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports do not subclass asyncio's, so no isinstance here
        self.lower = cast("asyncio.Transport", transport)
        self.upper.connection_made(self)

    def data_received(self, data: bytes) -> None:
        self.upper.data_received(data)

    def eof_received(self) -> bool | None:
        return bool(self.upper.eof_received())

    def connection_lost(self, exc: Exception | None) -> None:
        self._closing = True
        self.upper.connection_lost(exc)

    def pause_writing(self) -> None:
        self.upper.pause_writing()

    def resume_writing(self) -> None:
        self.upper.resume_writing()

    # asyncio.Transport (the protocol above calls these)
    def write(self, data: bytes | bytearray | memoryview) -> None:
        assert self.lower is not None
        self.lower.write(data)

    def writelines(self, list_of_data: Any) -> None:
        self.write(b"".join(list_of_data))

    def write_eof(self) -> None:
        assert self.lower is not None
        self.lower.write_eof()

    def can_write_eof(self) -> bool:
        return self.lower is not None and self.lower.can_write_eof()

    def close(self) -> None:
        self._closing = True
        if self.lower is not None:
            self.lower.close()

    def abort(self) -> None:
        self._closing = True
        if self.lower is not None:
            self.lower.abort()

    def is_closing(self) -> bool:
        return self._closing or (self.lower is not None and self.lower.is_closing())

    def pause_reading(self) -> None:
        if self.lower is not None:
            self.lower.pause_reading()

    def resume_reading(self) -> None:
        if self.lower is not None:
            self.lower.resume_reading()

    def is_reading(self) -> bool:
        return self.lower is not None and self.lower.is_reading()

    def set_protocol(self, protocol: asyncio.BaseProtocol) -> None:
        self.upper = protocol

    def get_protocol(self) -> asyncio.BaseProtocol:
        return self.upper

    def get_write_buffer_size(self) -> int:
        return self.lower.get_write_buffer_size() if self.lower is not None else 0

    def set_write_buffer_limits(self, high: int | None = None, low: int | None = None) -> None:
        if self.lower is not None:
            self.lower.set_write_buffer_limits(high, low)

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        if self.lower is None:
            return default
        return self.lower.get_extra_info(name, default)


class CryptoLayer(Layer):
    """A stream cipher layer: `encode` seals what the upper protocol writes, `decode` opens what
    arrives (returning b"" until a whole chunk is in). A decode failure aborts the stream: past
    the handshake the peer has proved it holds the key, so there is nobody to be stealthy to."""

    def __init__(
        self, encode: Encode, decode: Encode, upper: asyncio.BaseProtocol | None = None
    ) -> None:
        super().__init__(upper)
        self.encode = encode
        self.decode = decode

    def data_received(self, data: bytes) -> None:
        try:
            plain = self.decode(data)
        except ProtocolError:
            self.abort()
            return
        if plain:
            self.upper.data_received(plain)

    def write(self, data: bytes | bytearray | memoryview) -> None:
        if not data:
            return
        assert self.lower is not None
        self.lower.write(self.encode(data))  # type: ignore[arg-type]


class HeaderLayer(Layer):
    """Prepends a protocol's request header to the first write, so header and first data leave
    in one packet (no telling first-packet length); if the upper side writes nothing for
    `wait` seconds (a server-speaks-first protocol), the header goes alone."""

    def __init__(
        self,
        header: bytes,
        wait: float = 0.01,
        upper: asyncio.BaseProtocol | None = None,
        loop: asyncio.AbstractEventLoop | None = None,
    ) -> None:
        super().__init__(upper)
        self.header: bytes | None = header
        self.wait = wait
        self.timer: asyncio.TimerHandle | None = None
        self.loop = loop  # given by callers that have it (saves a getpid() per connection)

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        loop = self.loop if self.loop is not None else asyncio.get_running_loop()
        self.timer = loop.call_later(self.wait, self.flush_header)

    def flush_header(self) -> None:
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        if self.header is not None and self.lower is not None and not self.lower.is_closing():
            header, self.header = self.header, None
            self.send(header)

    def write(self, data: bytes | bytearray | memoryview) -> None:
        if self.header is not None:
            if self.timer is not None:
                self.timer.cancel()
                self.timer = None
            data, self.header = self.header + data, None
        self.send(data)

    def send(self, data: bytes | bytearray | memoryview) -> None:
        """How bytes leave: as they are here; sealed in SealedHeaderLayer."""
        assert self.lower is not None
        self.lower.write(data)

    def write_eof(self) -> None:
        self.flush_header()
        super().write_eof()

    def connection_lost(self, exc: Exception | None) -> None:
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        super().connection_lost(exc)


class SealedHeaderLayer(HeaderLayer, CryptoLayer):
    """A HeaderLayer and a CryptoLayer in one (a Shadowsocks client): the header is sealed with
    the first data. One layer where two stacked cost a hop per event and ~20 Python calls per
    connection."""

    def __init__(
        self,
        header: bytes,
        encode: Encode,
        decode: Encode,
        wait: float = 0.01,
        loop: asyncio.AbstractEventLoop | None = None,
    ) -> None:
        CryptoLayer.__init__(self, encode, decode)
        self.header = header
        self.wait = wait
        self.timer = None
        self.loop = loop

    def send(self, data: bytes | bytearray | memoryview) -> None:
        CryptoLayer.write(self, data)


def stack(lower: Layer, upper: Layer) -> Layer:
    """Put `upper` on top of the already connected `lower`; returns `upper`. Whatever `lower`
    received before (held by its Pending) goes up to `upper`, which keeps holding it."""
    held = lower.get_protocol()
    lower.set_protocol(upper)
    upper.connection_made(lower)
    if isinstance(held, Pending):
        for chunk in held.chunks:
            upper.data_received(chunk)
        if held.eof:
            upper.eof_received()
        if held.lost:
            upper.connection_lost(held.error)
    return upper
