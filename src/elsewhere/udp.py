"""UDP flows that outlive single datagrams: a NAT table from a client key (address, or a
Shadowsocks 2022 session id) to an outbound flow, with idle expiry."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Hashable
from dataclasses import dataclass, field
from typing import Any

from elsewhere.outbounds.base import DatagramFlow

DEFAULT_UDP_TIMEOUT = 60.0


@dataclass
class NatEntry:
    flow: DatagramFlow | None = None  # None while the outbound is being opened
    queued: list[tuple[bytes, Any]] = field(default_factory=list)
    last: float = 0.0
    context: Any = None  # whatever the inbound needs to answer (client address, cipher, ...)


class NatTable:
    def __init__(self, timeout: float = DEFAULT_UDP_TIMEOUT) -> None:
        self.timeout = timeout
        self.entries: dict[Hashable, NatEntry] = {}
        self._handle: asyncio.TimerHandle | None = None
        self.on_expire: Callable[[Hashable, NatEntry], None] | None = None

    def start(self) -> None:
        loop = asyncio.get_running_loop()
        self._handle = loop.call_later(self.timeout / 4, self._sweep)

    def get(self, key: Hashable) -> NatEntry | None:
        entry = self.entries.get(key)
        if entry is not None:
            entry.last = time.monotonic()
        return entry

    def add(self, key: Hashable, context: Any = None) -> NatEntry:
        entry = NatEntry(last=time.monotonic(), context=context)
        self.entries[key] = entry
        return entry

    def remove(self, key: Hashable) -> None:
        entry = self.entries.pop(key, None)
        if entry is not None and entry.flow is not None:
            entry.flow.close()

    def _sweep(self) -> None:
        cutoff = time.monotonic() - self.timeout
        for key in [k for k, e in self.entries.items() if e.last < cutoff]:
            entry = self.entries[key]
            if self.on_expire is not None:
                self.on_expire(key, entry)
            self.remove(key)
        self._handle = asyncio.get_running_loop().call_later(self.timeout / 4, self._sweep)

    def close(self) -> None:
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None
        for key in list(self.entries):
            self.remove(key)


MAX_QUEUED = 64  # datagrams held while the outbound flow opens; more are dropped, as UDP may

Reply = Callable[[bytes, Any], None]


def forward(
    engine: Any,
    nat: NatTable,
    key: Hashable,
    session: Any,
    payload: bytes,
    reply: Reply,
) -> None:
    """Send a client's datagram on through the flow of `key`, opening it on first use.
    `reply(payload, source)` carries answers back to the client."""
    entry = nat.get(key)
    if entry is None:
        entry = nat.add(key)
        entry.queued.append((payload, session.destination))
        engine.spawn(_open(engine, nat, key, entry, session, reply))
        return
    account = entry.context
    if account is not None:
        account(len(payload), 0)
    if entry.flow is not None:
        entry.flow.send(payload, session.destination)
    elif len(entry.queued) < MAX_QUEUED:
        entry.queued.append((payload, session.destination))


async def _open(
    engine: Any, nat: NatTable, key: Hashable, entry: NatEntry, session: Any, reply: Reply
) -> None:
    account = engine.accountant(session.user)
    entry.context = account

    def receive(payload: bytes, source: Any) -> None:
        entry.last = time.monotonic()
        account(0, len(payload))
        reply(payload, source)

    try:
        flow = await engine.open_udp(session, receive)
    except Exception:
        if nat.entries.get(key) is entry:
            del nat.entries[key]
        return
    if nat.entries.get(key) is not entry:  # expired or closed while opening
        flow.close()
        return
    entry.flow = flow
    queued, entry.queued = entry.queued, []
    for payload, destination in queued:
        account(len(payload), 0)
        flow.send(payload, destination)
