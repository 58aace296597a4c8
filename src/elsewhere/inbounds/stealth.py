"""What a Shadowsocks-family server does with a connection that never proves a key
(DESIGN.md §4 Stealth): keep reading, never answer, and close only when the connection has
been silent for the same idle timeout a valid session gets, so neither the reply nor the moment
of closing depends on how many bytes were parsed."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, cast

from elsewhere.errors import ProtocolError
from elsewhere.relay import IdleTimer

if TYPE_CHECKING:
    from elsewhere.inbounds.base import EngineAPI


class Drain(asyncio.Protocol):
    """Takes over a transport and eats everything until it goes quiet for `timeout`."""

    def __init__(self, transport: asyncio.BaseTransport, timer: IdleTimer) -> None:
        self.transport = cast(asyncio.Transport, transport)
        self.timer = timer
        timer.expire = self.transport.close
        self.transport.set_protocol(self)
        self.transport.resume_reading()

    def data_received(self, data: bytes) -> None:
        self.timer.active = True

    def eof_received(self) -> bool:
        # a valid session whose client half-closes before its request is complete is closed
        # too: the same reaction for every input
        self.timer.cancel()
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self.timer.cancel()


class Handshake(asyncio.Protocol):
    """A Shadowsocks-family connection from accept until its request proves a key. Subclasses
    implement `read(data)` and raise ProtocolError for anything that is not a client of ours;
    this keeps the one idle timer, the stealth reaction and the probe count in one place."""

    def __init__(self, engine: EngineAPI) -> None:
        self.engine = engine
        self.transport: asyncio.Transport | None = None
        self.timer: IdleTimer | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)
        self.timer = IdleTimer(
            self.engine.idle_timeout, self.transport.close, loop=self.engine.loop
        )

    def data_received(self, data: bytes) -> None:
        assert self.timer is not None
        self.timer.active = True
        try:
            self.read(data)
        except ProtocolError:
            self.unmask()

    def read(self, data: bytes) -> None:
        raise NotImplementedError

    def unmask(self) -> None:
        """Not a client of ours (or no longer one): the stealth reaction."""
        assert self.transport is not None and self.timer is not None
        self.engine.stats.probes += 1
        Drain(self.transport, self.timer)

    def eof_received(self) -> bool:
        if self.timer is not None:
            self.timer.cancel()
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        # still ours, so it never proved a key (a session or the Drain would own it now):
        # a probe too short or too slow to be found out, counted like the others
        if self.timer is not None:
            self.timer.cancel()
        self.engine.stats.probes += 1
