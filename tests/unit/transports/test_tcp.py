"""transports.tcp.connect_tcp: loop.create_connection with a deadline made of one timer."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import time
from collections.abc import Iterator

import pytest

from elsewhere.transports.layer import Pending
from elsewhere.transports.tcp import connect_tcp


@contextlib.contextmanager
def full_listener() -> Iterator[int]:
    """A loopback listener whose accept queue is full, so that a further connect hangs (the
    kernel drops its SYNs); yields the port."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(0)
    port = listener.getsockname()[1]
    queued: list[socket.socket] = []
    try:
        for _ in range(16):
            try:
                queued.append(socket.create_connection(("127.0.0.1", port), timeout=0.2))
            except TimeoutError:
                break  # this one hung: the queue is full
        else:
            pytest.fail("the accept queue never filled")
        yield port
    finally:
        for sock in queued:
            sock.close()
        listener.close()


async def test_a_connection_comes_back_with_its_protocol(port: int) -> None:
    server = await asyncio.start_server(lambda r, w: w.close(), "127.0.0.1", port)
    async with server:
        loop = asyncio.get_running_loop()
        transport, protocol = await connect_tcp(loop, Pending, "127.0.0.1", port, 5.0)
        assert isinstance(protocol, Pending)
        assert transport.get_extra_info("peername")[1] == port
        transport.close()


async def test_a_refused_connection_raises_the_os_error(port: int) -> None:
    loop = asyncio.get_running_loop()
    with pytest.raises(ConnectionRefusedError):
        await connect_tcp(loop, Pending, "127.0.0.1", port, 5.0)


async def test_a_connect_that_hangs_raises_timeout_error_at_the_deadline() -> None:
    loop = asyncio.get_running_loop()
    with full_listener() as port:
        started = time.monotonic()
        with pytest.raises(TimeoutError):
            await connect_tcp(loop, Pending, "127.0.0.1", port, 0.3)
        assert 0.3 <= time.monotonic() - started < 2.0
        # the task is not left marked as cancelled by our own timer
        task = asyncio.current_task()
        assert task is not None and task.cancelling() == 0


async def test_a_cancel_from_outside_stays_a_cancel() -> None:
    loop = asyncio.get_running_loop()
    with full_listener() as port:
        attempt = asyncio.ensure_future(connect_tcp(loop, Pending, "127.0.0.1", port, 10.0))
        await asyncio.sleep(0)  # let it start connecting
        attempt.cancel()
        with pytest.raises(asyncio.CancelledError):
            await attempt
