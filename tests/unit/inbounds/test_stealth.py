"""The Shadowsocks family's one stealth path (inbounds/stealth.py), with the inbound driven by a
small stand-in for the engine (inbounds.base.EngineAPI): a stranger and a key over its data
limit get the same silence and the same close; a valid request reaches the engine as a session
of its key; a datagram nobody's key opens is dropped unanswered and counted."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any

import pytest

from elsewhere.codecs.address import encode_address
from elsewhere.codecs.shadowsocks import Cipher, StreamEncryptor, encrypt_packet
from elsewhere.inbounds.base import EngineAPI
from elsewhere.inbounds.shadowsocks import ServerKey, ShadowsocksInbound
from elsewhere.relay import IdleTimer, Relay
from elsewhere.session import Destination, Session

METHOD = "aes-128-gcm"
IDLE = 0.6  # the idle timeout a valid session would get


class Counters:
    """engine.Stats' probe counter, with an event for each count (no polling in the tests)."""

    def __init__(self) -> None:
        self._probes = 0
        self.counted = asyncio.Event()

    @property
    def probes(self) -> int:
        return self._probes

    @probes.setter
    def probes(self, value: int) -> None:
        self._probes = value
        self.counted.set()


class Routes:
    def route(self, session: Session) -> str:
        return "direct"


@dataclass
class StandIn:
    """Just what an inbound calls; records the sessions it is handed."""

    over_limit: set[str] = field(default_factory=set)
    idle_timeout: float = IDLE
    loop: asyncio.AbstractEventLoop | None = None
    sessions: list[tuple[Session, bytes]] = field(default_factory=list)
    counters: Counters = field(default_factory=Counters)
    tasks: set[asyncio.Task[Any]] = field(default_factory=set)

    @property
    def stats(self) -> Counters:
        return self.counters

    @property
    def router(self) -> Routes:
        return Routes()

    def spawn(self, coro: Coroutine[Any, Any, Any]) -> asyncio.Task[Any]:
        task = asyncio.get_running_loop().create_task(coro)
        self.tasks.add(task)
        return task

    def admit(self, user: str) -> bool:
        return user not in self.over_limit

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
        self.sessions.append((session, initial))
        if timer is not None:
            timer.cancel()
        inbound.close()
        return None

    async def open_udp(self, session: Session, receive: Any) -> Any:
        raise AssertionError("no UDP session expected")

    def accountant(self, user: str | None) -> Callable[[int, int], None]:
        return lambda up, down: None

    def close_user(self, user: str) -> int:
        return 0


@contextlib.asynccontextmanager
async def serving(engine: StandIn) -> AsyncIterator[ShadowsocksInbound]:
    engine.loop = asyncio.get_running_loop()
    inbound = ShadowsocksInbound("ss", {"listen": "127.0.0.1", "port": 0, "keys": []})
    inbound.set_keys([ServerKey("alice", Cipher.from_password(METHOD, "alice-password"))])
    api: EngineAPI = engine  # the stand-in is an EngineAPI as far as mypy is concerned
    await inbound.start(api)
    try:
        yield inbound
    finally:
        await inbound.stop()


def request(payload: bytes) -> bytes:
    cipher = Cipher.from_password(METHOD, "alice-password")
    return bytes(
        StreamEncryptor(cipher).encrypt(encode_address(Destination("10.0.0.1", 80)) + payload)
    )


async def reaction(port: int, data: bytes) -> tuple[bytes, float]:
    """What the server sends back to `data`, and how long after it it closes."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(data)
        await writer.drain()
        sent = time.monotonic()
        answer = await asyncio.wait_for(reader.read(-1), IDLE * 20)
        return answer, time.monotonic() - sent
    finally:
        writer.close()


async def test_a_stranger_and_a_key_over_its_limit_get_the_same_silence() -> None:
    engine = StandIn(over_limit={"alice"})
    async with serving(engine) as inbound:
        garbage, garbage_after = await reaction(inbound.port, bytes(range(200)))
        over, over_after = await reaction(inbound.port, request(b"GET / HTTP/1.1\r\n\r\n"))
    assert garbage == over == b""
    # both closed by the idle timer a valid session has, not at once and not by a byte count
    for after in (garbage_after, over_after):
        assert IDLE * 0.9 <= after < IDLE * 8
    assert engine.sessions == []
    assert engine.counters.probes == 2


async def test_a_valid_request_reaches_the_engine_as_a_session_of_its_key() -> None:
    engine = StandIn()
    async with serving(engine) as inbound:
        answer, _ = await reaction(inbound.port, request(b"first bytes"))
    assert answer == b""  # the stand-in closes at once
    ((session, initial),) = engine.sessions
    assert (session.user, session.destination, session.inbound) == (
        "alice",
        Destination("10.0.0.1", 80),
        "ss",
    )
    assert initial == b"first bytes"
    assert engine.counters.probes == 0


@pytest.mark.parametrize("password", ["wrong-password", None])
async def test_a_datagram_nobody_opens_is_dropped_unanswered_and_counted(
    password: str | None,
) -> None:
    engine = StandIn()
    async with serving(engine) as inbound:
        if password is None:
            packet = bytes(64)
        else:
            cipher = Cipher.from_password(METHOD, password)
            packet = encrypt_packet(cipher, encode_address(Destination("10.0.0.1", 53)) + b"q")
        loop = asyncio.get_running_loop()
        answers: asyncio.Queue[bytes] = asyncio.Queue()

        class Client(asyncio.DatagramProtocol):
            def datagram_received(self, data: bytes, addr: Any) -> None:
                answers.put_nowait(data)

        transport, _ = await loop.create_datagram_endpoint(
            Client, remote_addr=("127.0.0.1", inbound.port)
        )
        try:
            transport.sendto(packet)
            await asyncio.wait_for(engine.counters.counted.wait(), 10)
        finally:
            transport.close()
    # counted instead of answered: no reply can follow the count
    assert engine.counters.probes == 1
    assert answers.empty()
