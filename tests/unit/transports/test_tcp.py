"""transports.tcp.connect_tcp: loop.create_connection with a deadline made of one timer."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import time
from collections.abc import Callable, Iterator

import pytest

from elsewhere.errors import ConfigError
from elsewhere.transports import tcp as tcp_module
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


class _Quiet(asyncio.DatagramProtocol):
    pass


async def test_port_zero_pairs_tcp_and_udp_on_a_port_free_for_both(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The TCP port the kernel picks may be some UDP socket's already: that clash (injected
    here on the first try) makes listen_pair let that port go and take another."""
    real = tcp_module.listen_udp
    clashes: list[int] = []

    async def clash_once(
        factory: Callable[[], asyncio.DatagramProtocol], host: str, port: int, what: str
    ) -> asyncio.DatagramTransport:
        if not clashes:
            clashes.append(port)
            raise ConfigError(f"{what}: {host}:{port} is already in use (injected)")
        return await real(factory, host, port, what)

    monkeypatch.setattr(tcp_module, "listen_udp", clash_once)
    server, datagrams = await tcp_module.listen_pair(Pending, _Quiet, "127.0.0.1", 0, "test")
    assert server is not None and datagrams is not None
    try:
        port = tcp_module.listening_port(server)
        assert datagrams.get_extra_info("sockname")[1] == port
        assert clashes and clashes[0] != port
    finally:
        server.close()
        datagrams.close()


async def test_a_given_port_taken_for_udp_is_a_clear_error_and_frees_tcp() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
        udp.bind(("127.0.0.1", 0))
        port = udp.getsockname()[1]
        with pytest.raises(ConfigError, match="already in use"):
            await tcp_module.listen_pair(Pending, _Quiet, "127.0.0.1", port, "test inbound")
    with socket.create_server(("127.0.0.1", port)):  # the TCP side was let go
        pass
