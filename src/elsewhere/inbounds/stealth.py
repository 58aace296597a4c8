"""What a Shadowsocks-family server does with a connection that never proves a key
(DESIGN.md §4 Stealth): keep reading, never answer, and close only when the connection has
been silent for the same idle timeout a valid session gets, so neither the reply nor the moment
of closing depends on how many bytes were parsed."""

from __future__ import annotations

import asyncio
from typing import cast

from elsewhere.relay import IdleTimer


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
