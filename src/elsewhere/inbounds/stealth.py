"""The one stealth path of the Shadowsocks family (DESIGN.md §4 Stealth), for every server that
cannot fall back to a web site: a connection that never proves a key is read on, never
answered, and closed only when it has been silent for the same idle timeout a valid session
gets, so neither the reply nor the moment of closing depends on how many bytes were parsed; a
datagram that proves no key is dropped unanswered. A connection that proves a key is handed to
the engine from here too, so a key over its data limit meets the same silence as a stranger.
Each inbound only says what its codec accepts (Handshake.read raises ProtocolError)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import TYPE_CHECKING, cast

from elsewhere.errors import ProtocolError
from elsewhere.relay import IdleTimer
from elsewhere.session import Destination, Session

if TYPE_CHECKING:
    from elsewhere.inbounds.base import EngineAPI
    from elsewhere.transports.layer import Layer


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

    def proven(
        self,
        tag: str,
        user: str,
        destination: Destination,
        layer: Callable[[], Layer],
        initial: bytes,
    ) -> None:
        """The request proved `user`'s key: the session goes to the engine through the layer
        `layer()` makes (the session's cipher), or, past the user's data limit, the stealth
        reaction. `initial` is what came after the request header."""
        transport, timer, engine = self.transport, self.timer, self.engine
        assert transport is not None and timer is not None
        if not engine.admit(user):
            self.unmask()
            return
        transport.pause_reading()
        stream = layer()
        transport.set_protocol(stream)
        stream.connection_made(transport)
        session = Session(
            tag, destination, "tcp", user=user, source=transport.get_extra_info("peername")
        )
        engine.spawn(engine.serve_tcp(session, stream, initial, timer=timer))

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


def unanswered(engine: EngineAPI) -> None:
    """A datagram that proves no key: dropped without a word, and counted."""
    engine.stats.probes += 1
