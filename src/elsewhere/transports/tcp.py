"""TCP sockets: listening, with one place that turns "address in use" and friends into a line
a person can act on; and connecting with a deadline at the cost of one timer."""

from __future__ import annotations

import asyncio
import errno
from collections.abc import Callable
from ssl import SSLContext
from typing import Any, TypeVar

from elsewhere.errors import ConfigError

BACKLOG = 1024
TLS_HANDSHAKE_TIMEOUT = 60.0  # nginx: client_header_timeout covers the TLS handshake

P = TypeVar("P", bound=asyncio.BaseProtocol)


async def listen(
    factory: Callable[[], asyncio.BaseProtocol],
    host: str,
    port: int,
    what: str,
    ssl: SSLContext | None = None,
) -> asyncio.Server:
    loop = asyncio.get_running_loop()
    try:
        return await loop.create_server(
            factory,
            host,
            port,
            reuse_address=True,
            backlog=BACKLOG,
            ssl=ssl,
            ssl_handshake_timeout=TLS_HANDSHAKE_TIMEOUT if ssl else None,
        )
    except OSError as exc:
        raise ConfigError(_explain(exc, host, port, what)) from None


async def listen_udp(
    factory: Callable[[], asyncio.DatagramProtocol], host: str, port: int, what: str
) -> asyncio.DatagramTransport:
    loop = asyncio.get_running_loop()
    try:
        transport, _ = await loop.create_datagram_endpoint(factory, local_addr=(host, port))
    except OSError as exc:
        raise ConfigError(_explain(exc, host, port, what + " (UDP)")) from None
    return transport


async def connect_tcp(
    loop: asyncio.AbstractEventLoop,
    factory: Callable[[], P],
    host: str,
    port: int,
    timeout: float,
    **options: Any,
) -> tuple[asyncio.Transport, P]:
    """`loop.create_connection` that raises TimeoutError after `timeout` seconds. Per
    connection this is one timer and one closure, where `asyncio.timeout()` builds a Timeout,
    looks up the task and the loop twice and reschedules a timer (every outbound pays it)."""
    task = asyncio.current_task(loop)
    assert task is not None, "connect_tcp() runs inside a task"
    expired = False

    def expire() -> None:
        nonlocal expired
        expired = True
        task.cancel()

    timer = loop.call_later(timeout, expire)
    try:
        transport, protocol = await loop.create_connection(factory, host, port, **options)
    except asyncio.CancelledError:
        if expired and task.uncancel() == 0:
            raise TimeoutError(f"no connection to {host}:{port} within {timeout:g} s") from None
        raise
    finally:
        timer.cancel()
    return transport, protocol


def _explain(exc: OSError, host: str, port: int, what: str) -> str:
    where = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    if exc.errno == errno.EADDRINUSE:
        return (
            f"{what}: {where} is already in use by another program; stop it or choose another port"
        )
    if exc.errno == errno.EACCES:
        return f"{what}: no permission to listen on {where}; ports below 1024 need root"
    if exc.errno == errno.EADDRNOTAVAIL:
        return f"{what}: {host} is not an address of this machine"
    return f"{what}: cannot listen on {where}: {exc.strerror or exc}"


def listening_port(server: asyncio.Server) -> int:
    """The port a server bound to (useful when it was asked for port 0)."""
    return int(server.sockets[0].getsockname()[1])
