"""The relay's end of life: `on_done` once both sides are closed, and the engine's count of
active relays right even when both sides closed before the relay started."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from elsewhere.config import from_mapping
from elsewhere.engine import Engine
from elsewhere.relay import Relay
from elsewhere.session import Destination, Session
from elsewhere.transports.layer import Pending

SESSION = Session("t", Destination("127.0.0.1", 9))


@pytest.fixture
async def pair() -> AsyncIterator[tuple[asyncio.Transport, asyncio.Transport]]:
    """Two loopback streams held by Pendings: what an inbound and an outbound hand the relay.
    The far ends are the server's writers, closed when the test ends."""
    far: list[asyncio.StreamWriter] = []

    async def accept(_reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        far.append(writer)

    server = await asyncio.start_server(accept, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    loop = asyncio.get_running_loop()
    a, _ = await loop.create_connection(Pending, "127.0.0.1", port)
    b, _ = await loop.create_connection(Pending, "127.0.0.1", port)
    try:
        yield a, b
    finally:
        for writer in far:
            writer.close()
        server.close()


async def test_on_done_is_called_once_when_both_sides_have_closed(
    pair: tuple[asyncio.Transport, asyncio.Transport],
) -> None:
    a, b = pair
    done: list[Relay] = []
    relay = Relay(a, b, idle_timeout=30, on_done=done.append)
    a.close()
    for _ in range(100):
        if done:
            break
        await asyncio.sleep(0.01)  # the close travels through the loop and the far side
    assert done == [relay]
    assert relay.finished


class Gone(asyncio.Transport):
    """A stream that closed while the outbound was connecting (what its Pending saw), shaped
    like a Layer over it; uvloop's own transports refuse every call once closed."""

    def __init__(self) -> None:
        super().__init__()
        held = Pending()
        held.connection_lost(None)
        self.protocol: asyncio.BaseProtocol = held

    def get_protocol(self) -> asyncio.BaseProtocol:
        return self.protocol

    def set_protocol(self, protocol: asyncio.BaseProtocol) -> None:
        self.protocol = protocol

    def set_write_buffer_limits(self, high: int | None = None, low: int | None = None) -> None:
        return None

    def is_reading(self) -> bool:
        return False

    def resume_reading(self) -> None:
        return None

    def is_closing(self) -> bool:
        return True

    def close(self) -> None:
        return None

    def abort(self) -> None:
        return None


async def test_a_relay_over_two_closed_sides_is_never_counted_active() -> None:
    config = {
        "inbounds": [{"type": "tunnel", "port": 0, "destination": "127.0.0.1:9"}],
        "outbounds": [{"type": "direct"}],
    }
    async with Engine(from_mapping(config)) as engine:
        relay = engine.relay(SESSION, Gone(), Gone())
        assert relay.finished
        assert engine.stats.active == 0
        assert engine.traffic() == (0, 0) and engine.close_user("anyone") == 0
