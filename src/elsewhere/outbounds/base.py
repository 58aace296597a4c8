"""What every outbound offers the engine (PEP 544): open a stream or a datagram flow to a
destination. Outbound modules register a factory under their config `type`."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping
from typing import Any, Protocol

from elsewhere.session import Destination, Session

# A datagram from the far side: (payload, where it came from)
DatagramReceiver = Callable[[bytes, Destination], None]


class DatagramFlow(Protocol):
    def send(self, payload: bytes, destination: Destination) -> None: ...
    def close(self) -> None: ...


class Outbound(Protocol):
    tag: str

    async def open_tcp(self, session: Session) -> asyncio.Transport:
        """A connected stream whose protocol is a transports.layer.Pending."""
        ...

    async def open_udp(self, session: Session, receive: DatagramReceiver) -> DatagramFlow: ...

    async def close(self) -> None: ...


OutboundFactory = Callable[[str, Mapping[str, Any]], Outbound]
OUTBOUND_TYPES: dict[str, OutboundFactory] = {}


def register(name: str) -> Callable[[OutboundFactory], OutboundFactory]:
    def put(factory: OutboundFactory) -> OutboundFactory:
        OUTBOUND_TYPES[name] = factory
        return factory

    return put
