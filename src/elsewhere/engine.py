"""The engine (DESIGN.md §1): inbounds hand it sessions, the router picks an outbound, the
relay carries the bytes. Every role (client, server, bridge) is this one engine with another
configuration."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Coroutine, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from elsewhere import inbounds, outbounds
from elsewhere.config import Config
from elsewhere.errors import ConfigError, ElsewhereError
from elsewhere.inbounds.base import INBOUND_TYPES, Inbound
from elsewhere.outbounds.base import OUTBOUND_TYPES, DatagramFlow, DatagramReceiver, Outbound
from elsewhere.relay import IdleTimer, Relay
from elsewhere.router import Router, parse_rule
from elsewhere.session import Session

log = logging.getLogger("elsewhere")


class Meter(Protocol):
    """Per-user byte counters (store.usage.UsageMeter fits)."""

    def add(self, key_id: str, up: int, down: int) -> None: ...


@dataclass
class Stats:
    """Totals for people (the client's status line, the server's metrics)."""

    up: int = 0
    down: int = 0
    sessions: int = 0  # opened so far
    active: int = 0
    failed: int = 0
    probes: int = 0  # connections that never proved a key (stealth path)
    last_failed: bool = False  # did the most recent outbound connection fail?


class Engine:
    def __init__(
        self,
        config: Config,
        meter: Meter | None = None,
        over_limit: Callable[[str], bool] | None = None,
    ) -> None:
        inbounds.load_all()
        outbounds.load_all()
        self.config = config
        self.meter = meter
        self.over_limit = over_limit
        self.stats = Stats()
        self.outbounds: dict[str, Outbound] = {}
        for spec in config.outbounds:
            self.outbounds[spec["tag"]] = _build(OUTBOUND_TYPES, spec, "outbound")
        self.inbounds: list[Inbound] = [
            _build(INBOUND_TYPES, spec, "inbound") for spec in config.inbounds
        ]
        self.router = Router(
            rules=[parse_rule(r, i, self.outbounds) for i, r in enumerate(config.rules)],
            final=config.final_outbound,
            outbounds=frozenset(self.outbounds),
        )
        self.idle_timeout = config.idle_timeout
        self._tasks: set[asyncio.Task[Any]] = set()
        self._relays: dict[Relay, str | None] = {}
        self._stopped = asyncio.Event()
        # taken once at start and handed to every per-connection object: asyncio's
        # get_running_loop() costs a getpid() syscall per call on Python 3.11
        self.loop: asyncio.AbstractEventLoop | None = None

    # lifecycle
    async def start(self) -> None:
        self.loop = asyncio.get_running_loop()
        started: list[Inbound] = []
        try:
            for inbound in self.inbounds:
                await inbound.start(self)
                started.append(inbound)
        except BaseException:
            for inbound in started:
                await inbound.stop()
            raise

    async def stop(self) -> None:
        for inbound in self.inbounds:
            with contextlib.suppress(Exception):
                await inbound.stop()
        for relay in list(self._relays):
            relay.abort()
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        for outbound in self.outbounds.values():
            with contextlib.suppress(Exception):
                await outbound.close()
        self._stopped.set()

    async def __aenter__(self) -> Engine:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    def spawn(self, coro: Coroutine[Any, Any, Any]) -> asyncio.Task[Any]:
        """Run `coro` owned by the engine: cancelled on stop, errors logged, never lost."""
        task = (self.loop or asyncio.get_running_loop()).create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._task_done)
        return task

    def _task_done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("internal error", exc_info=task.exception())

    # sessions
    def admit(self, user: str) -> bool:
        """May `user` open another session (not over its data limit)?"""
        return self.over_limit is None or not self.over_limit(user)

    def outbound_for(self, session: Session) -> Outbound:
        return self.outbounds[self.router.route(session)]

    async def open_tcp(self, session: Session) -> asyncio.Transport:
        self.stats.sessions += 1
        try:
            stream = await self.outbound_for(session).open_tcp(session)
        except BaseException:
            self.stats.failed += 1
            self.stats.last_failed = True
            raise
        self.stats.last_failed = False
        return stream

    async def open_udp(self, session: Session, receive: DatagramReceiver) -> DatagramFlow:
        self.stats.sessions += 1
        try:
            return await self.outbound_for(session).open_udp(session, receive)
        except BaseException:
            self.stats.failed += 1
            raise

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
        """Open the session's outbound and relay `inbound` to it. `inbound`'s protocol must be
        a Pending (reading paused); `initial` is what the client already sent past its
        request. `on_open`/`on_fail` let the inbound answer its client (SOCKS reply...).
        `timer` is the inbound handshake's idle timer, handed on to the relay (or cancelled)."""
        relay = None
        try:
            try:
                remote = await self.open_tcp(session)
            except (OSError, ElsewhereError, TimeoutError) as exc:
                log.debug("session to %s failed: %s", session.destination, exc)
                if on_fail is not None:
                    on_fail(exc)
                inbound.close()
                return None
            if inbound.is_closing():
                remote.close()
                return None
            if remote.is_closing():
                # the far side reset the connection between connect and now: a closed transport
                # cannot be written to or joined, so this ends like a refused connection
                log.debug("session to %s reset before the relay started", session.destination)
                if on_fail is not None:
                    on_fail(ConnectionResetError(f"{session.destination} reset the connection"))
                inbound.close()
                return None
            if on_open is not None:
                on_open(remote)
            if initial:
                remote.write(initial)
            relay = self.relay(session, inbound, remote, timer)
            relay.ends[0].count += len(initial)  # read by the inbound's handshake, counted here
            return relay
        finally:
            if relay is None and timer is not None:
                timer.cancel()

    def relay(
        self,
        session: Session,
        inbound: asyncio.Transport,
        outbound: asyncio.Transport,
        timer: IdleTimer | None = None,
    ) -> Relay:
        """Join the two streams; the relay lives until both are closed."""
        relay = Relay(
            inbound,
            outbound,
            idle_timeout=self.idle_timeout,
            account=self.accountant(session.user),
            on_done=self._relay_done,
            loop=self.loop,
            timer=timer,
        )
        if not relay.finished:  # both ends may have closed before it started
            self._relays[relay] = session.user
            self.stats.active += 1
        return relay

    def _relay_done(self, relay: Relay) -> None:
        if relay in self._relays:
            del self._relays[relay]
            self.stats.active -= 1

    def accountant(self, user: str | None) -> Callable[[int, int], None]:
        stats, meter = self.stats, self.meter

        def account(up: int, down: int) -> None:
            stats.up += up
            stats.down += down
            if meter is not None and user is not None:
                meter.add(user, up, down)

        return account

    def traffic(self) -> tuple[int, int]:
        """Bytes up and down so far, including what open relays have not reported yet."""
        up, down = self.stats.up, self.stats.down
        for relay in self._relays:
            reported_up, reported_down = relay.reported
            up += relay.up - reported_up
            down += relay.down - reported_down
        return up, down

    def close_user(self, user: str) -> int:
        """End every open relay of `user` (a revoked key); returns how many."""
        victims = [r for r, u in self._relays.items() if u == user]
        for relay in victims:
            relay.abort()
        return len(victims)

    async def run_forever(self) -> None:
        await self.start()
        try:
            await self._stopped.wait()
        finally:
            await self.stop()

    def request_stop(self) -> None:
        self._stopped.set()


def _build(registry: Mapping[str, Any], spec: Mapping[str, Any], kind: str) -> Any:
    factory = registry.get(spec["type"])
    if factory is None:
        raise ConfigError(
            f'{kind} "{spec["tag"]}": unknown type "{spec["type"]}"; known: {sorted(registry)}'
        )
    options = {k: v for k, v in spec.items() if k not in ("type", "tag")}
    return factory(spec["tag"], options)
