"""What Trojan and VLESS clients share: a stream from transports.dial with the protocol's
request header in front of the first data, and UDP carried inside such a stream."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from elsewhere.errors import ProtocolError
from elsewhere.outbounds.base import DatagramReceiver
from elsewhere.session import Destination
from elsewhere.transports.dial import dial
from elsewhere.transports.layer import HeaderLayer, Layer, stack
from elsewhere.transports.settings import StreamSettings

HEADER_WAIT = 0.01


async def open_stream(
    settings: StreamSettings, host: str, port: int, header: bytes, top: Layer | None = None
) -> Layer:
    stream = await dial(settings, host, port)
    if top is not None:
        stream = stack(stream, top)
    return stack(stream, HeaderLayer(header, HEADER_WAIT))


def close_pooled(host: str, port: int) -> None:
    """What a transport keeps open to one server between streams (XHTTP's connection pool)
    ends with the outbound."""
    from elsewhere.transports.xhttp import close_pools

    close_pools(lambda target: (target.host, target.port) == (host, port))


Decode = Callable[[bytes], list[tuple[bytes, Destination]]]


class StreamDatagramFlow(asyncio.Protocol):
    """A DatagramFlow over one stream: `frame(payload, destination)` encodes a packet,
    `decode(bytes)` returns the whole packets received so far."""

    def __init__(
        self,
        frame: Callable[[bytes, Destination], bytes],
        decode: Decode,
        receive: DatagramReceiver,
    ) -> None:
        self.frame = frame
        self.decode = decode
        self.receive = receive
        self.transport: Any = None

    def attach(self, stream: Layer) -> StreamDatagramFlow:
        self.transport = stream
        stream.set_protocol(self)
        return self

    def data_received(self, data: bytes) -> None:
        try:
            packets = self.decode(data)
        except ProtocolError:
            self.close()
            return
        for payload, source in packets:
            self.receive(payload, source)

    def eof_received(self) -> bool:
        return False

    def send(self, payload: bytes, destination: Destination) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(self.frame(payload, destination))

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()
