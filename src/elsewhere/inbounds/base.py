"""What every inbound offers the engine (PEP 544): start listening, stop; and the few engine
methods an inbound calls (EngineAPI), so that an inbound knows no concrete Engine and can be
driven by a small stand-in. Inbound modules register a factory under their config `type`."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine, Mapping
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from elsewhere.outbounds.base import DatagramFlow, DatagramReceiver
    from elsewhere.relay import IdleTimer, Relay
    from elsewhere.session import Session


class Counters(Protocol):
    probes: int  # connections that never proved a key (the stealth path)


class Routes(Protocol):
    def route(self, session: Session) -> str:
        """The tag of the outbound `session` goes to."""
        ...


class EngineAPI(Protocol):
    """The engine as inbounds see it (engine.Engine is one)."""

    loop: asyncio.AbstractEventLoop | None  # set once the engine runs
    idle_timeout: float

    @property
    def stats(self) -> Counters: ...

    @property
    def router(self) -> Routes: ...

    def spawn(self, coro: Coroutine[Any, Any, Any]) -> asyncio.Task[Any]:
        """Run `coro` owned by the engine: cancelled on stop, errors logged."""
        ...

    def admit(self, user: str) -> bool:
        """May `user` open another session (not over its data limit)?"""
        ...

    async def serve_tcp(
        self,
        session: Session,
        inbound: asyncio.Transport,
        initial: bytes = b"",
        *,
        on_open: Callable[[asyncio.Transport], None] | None = None,
        on_fail: Callable[[BaseException], None] | None = None,
        timer: IdleTimer | None = None,
    ) -> Relay | None:
        """Open the session's outbound and relay `inbound` (a Pending, reading paused) to it."""
        ...

    async def open_udp(self, session: Session, receive: DatagramReceiver) -> DatagramFlow: ...

    def accountant(self, user: str | None) -> Callable[[int, int], None]:
        """Counts (up, down) bytes for `user`."""
        ...

    def close_user(self, user: str) -> int:
        """End every open relay of `user`; returns how many."""
        ...


class Inbound(Protocol):
    tag: str

    async def start(self, engine: EngineAPI) -> None: ...

    async def stop(self) -> None: ...

    def describe(self) -> str:
        """Where it listens, for people: `socks5+http 127.0.0.1:1080`."""
        ...


InboundFactory = Callable[[str, Mapping[str, Any]], Inbound]
INBOUND_TYPES: dict[str, InboundFactory] = {}


def register(name: str) -> Callable[[InboundFactory], InboundFactory]:
    def put(factory: InboundFactory) -> InboundFactory:
        INBOUND_TYPES[name] = factory
        return factory

    return put
