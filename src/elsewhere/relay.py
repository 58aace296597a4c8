"""The relay (DESIGN.md §2.5): copies between two streams with backpressure both ways,
half-close, an idle timeout and byte accounting. The hottest code in the project, so a chunk
costs one method call and one write per direction, and the clock is read by a timer, not per
chunk."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from elsewhere.transports.layer import Pending

# A larger write buffer before pausing the reader keeps both sockets busy on fast links;
# it is only filled while the receiving side is slower than the sending one.
WRITE_HIGH = 512 * 1024
WRITE_LOW = 128 * 1024

Account = Callable[[int, int], None]


class IdleTimer:
    """Calls `expire` once nothing has happened for `timeout` seconds; `touch()` costs one
    attribute store so it can sit on the data path. Checked four times per timeout. Pass the
    `loop` where the caller has it: asking asyncio for it costs a getpid() syscall each time."""

    __slots__ = ("_handle", "_last", "_loop", "active", "expire", "tick", "timeout")

    def __init__(
        self,
        timeout: float,
        expire: Callable[[], None],
        tick: Callable[[], None] | None = None,
        loop: asyncio.AbstractEventLoop | None = None,
    ) -> None:
        self._loop = loop if loop is not None else asyncio.get_running_loop()
        self.timeout = timeout
        self.expire = expire
        self.tick = tick
        self.active = False
        self._last = self._loop.time()
        self._handle: asyncio.TimerHandle | None = self._loop.call_later(timeout / 4, self._check)

    def touch(self) -> None:
        self.active = True

    def _check(self) -> None:
        now = self._loop.time()
        if self.active:
            self.active = False
            self._last = now
        if self.tick is not None:
            self.tick()
        if now - self._last >= self.timeout:
            self._handle = None
            self.expire()
            return
        self._handle = self._loop.call_later(self.timeout / 4, self._check)

    def cancel(self) -> None:
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None


class _End(asyncio.Protocol):
    """The protocol on one side: what it reads goes to the other side's transport."""

    __slots__ = ("count", "eof", "index", "lost", "peer", "relay", "transport")

    def __init__(self, relay: Relay, index: int, transport: asyncio.Transport) -> None:
        self.relay = relay
        self.index = index
        self.transport = transport
        self.peer: asyncio.Transport = transport  # set by Relay once both ends exist
        self.count = 0
        self.eof = False
        self.lost = False

    def data_received(self, data: bytes) -> None:
        self.count += len(data)
        self.relay.timer.active = True
        self.peer.write(data)

    def eof_received(self) -> bool:
        self.eof = True
        self.relay.half_closed(self)
        return True

    def pause_writing(self) -> None:
        # our transport cannot take more: stop reading from the side that feeds it
        if not self.peer.is_closing():
            self.peer.pause_reading()

    def resume_writing(self) -> None:
        if not self.peer.is_closing():
            self.peer.resume_reading()

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = True
        self.relay.end_lost(self, exc)


class Relay:
    """Joins `inbound` (the side the user is on) and `outbound`; bytes read from the inbound
    side count as up, from the outbound side as down. `on_done(relay)` is called once both are
    closed (a plain callback: a Future cost its creation, a done-callback and a loop pass)."""

    def __init__(
        self,
        inbound: asyncio.Transport,
        outbound: asyncio.Transport,
        *,
        idle_timeout: float,
        account: Account | None = None,
        on_done: Callable[[Relay], None] | None = None,
        loop: asyncio.AbstractEventLoop | None = None,
        timer: IdleTimer | None = None,
    ) -> None:
        self.account = account
        self.on_done = on_done
        self.finished = False
        self.reported = (0, 0)
        if timer is None:
            timer = IdleTimer(idle_timeout, self.close, self._report, loop)
        else:
            # the inbound handshake's running timer goes on (one timer per connection)
            timer.expire, timer.tick = self.close, self._report
        self.timer = timer
        self.ends = (_End(self, 0, inbound), _End(self, 1, outbound))
        self.ends[0].peer, self.ends[1].peer = outbound, inbound
        for end in self.ends:
            end.transport.set_write_buffer_limits(WRITE_HIGH, WRITE_LOW)
        for end in self.ends:
            self._attach(end)

    @property
    def up(self) -> int:
        return self.ends[0].count

    @property
    def down(self) -> int:
        return self.ends[1].count

    def _attach(self, end: _End) -> None:
        """Hand the transport to the relay and replay what arrived before it took over."""
        transport = end.transport
        held = transport.get_protocol()
        transport.set_protocol(end)
        if not isinstance(held, Pending):
            return
        for chunk in held.chunks:
            end.data_received(chunk)
        if held.writing_paused:
            end.pause_writing()
        if held.eof:
            end.eof_received()
        if held.lost:
            end.connection_lost(held.error)
        transport.resume_reading()

    def half_closed(self, end: _End) -> None:
        peer = self.ends[1 - end.index]
        if peer.eof:
            self.close()
        elif end.peer.can_write_eof():
            end.peer.write_eof()
        elif end.index == 1:
            # the far side is done and the user's side cannot take a half-close (TLS under
            # asyncio): the answer is complete, so end the whole stream
            self.close()
        # else the user finished sending and the far side cannot take a half-close: keep the
        # answer coming until the far side ends it or the stream goes idle (as Go proxies do)

    def end_lost(self, end: _End, exc: Exception | None) -> None:
        other = self.ends[1 - end.index]
        if not other.lost:
            if exc is None:
                other.transport.close()
            else:
                other.transport.abort()
            return
        self._finish()

    def close(self) -> None:
        for end in self.ends:
            if not end.lost:
                end.transport.close()

    def abort(self) -> None:
        for end in self.ends:
            if not end.lost:
                end.transport.abort()

    def _report(self) -> None:
        if self.account is None:
            return
        up, down = self.up, self.down
        last_up, last_down = self.reported
        if up != last_up or down != last_down:
            self.reported = (up, down)
            self.account(up - last_up, down - last_down)

    def _finish(self) -> None:
        if self.finished:
            return
        self.finished = True
        self.timer.cancel()
        self._report()
        if self.on_done is not None:
            self.on_done(self)

    def __repr__(self) -> str:
        return f"<Relay up={self.up} down={self.down}>"


def describe(transport: Any) -> str:
    peer = transport.get_extra_info("peername")
    return f"{peer[0]}:{peer[1]}" if peer else "?"
