"""A DatagramFlow over one UDP socket connected to a proxy server: each datagram is sealed by
the protocol's codec on the way out and opened on the way back; whatever does not open (not
from our server, replayed, damaged) is dropped, as UDP may."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any, cast

from elsewhere.errors import ProtocolError
from elsewhere.outbounds.base import DatagramReceiver
from elsewhere.session import Destination

Seal = Callable[[bytes, Destination], bytes]
Open = Callable[[bytes], tuple[bytes, Destination]]


class PacketFlow(asyncio.DatagramProtocol):
    def __init__(self, seal: Seal, open_: Open, receive: DatagramReceiver) -> None:
        self.seal = seal
        self.open = open_
        self.receive = receive
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: tuple[Any, ...]) -> None:
        try:
            payload, source = self.open(data)
        except ProtocolError:
            return
        self.receive(payload, source)

    def error_received(self, exc: Exception) -> None:
        return None

    def send(self, payload: bytes, destination: Destination) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.sendto(self.seal(payload, destination))

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()


async def connect(flow: PacketFlow, host: str, port: int) -> PacketFlow:
    loop = asyncio.get_running_loop()
    await loop.create_datagram_endpoint(lambda: flow, remote_addr=(host, port))
    return flow
