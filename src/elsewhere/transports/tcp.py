"""TCP sockets: listening, with one place that turns "address in use" and friends into a line
a person can act on; connecting with a deadline at the cost of one timer; and `tcp`, the bottom
layer of every client stack (transports.registry)."""

from __future__ import annotations

import asyncio
import errno
import socket
from collections.abc import Callable
from ssl import SSLContext
from typing import TYPE_CHECKING, Any, TypeVar

from elsewhere.errors import ConfigError
from elsewhere.transports.layer import Layer
from elsewhere.transports.registry import Transport, register

if TYPE_CHECKING:
    from elsewhere.transports.settings import StreamSettings

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
    # bound here, not by create_datagram_endpoint: uvloop's error for a taken port carries no
    # errno, so "already in use" could not be told from other failures
    try:
        family, _, _, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_DGRAM)[0]
        sock = socket.socket(family, socket.SOCK_DGRAM)
    except OSError as exc:
        raise ConfigError(_explain(exc, host, port, what + " (UDP)")) from None
    try:
        sock.bind(address)
        sock.setblocking(False)
        transport, _ = await loop.create_datagram_endpoint(factory, sock=sock)
    except OSError as exc:
        sock.close()
        raise ConfigError(_explain(exc, host, port, what + " (UDP)")) from None
    return transport


PAIR_TRIES = 20


async def listen_pair(
    stream_factory: Callable[[], asyncio.BaseProtocol] | None,
    datagram_factory: Callable[[], asyncio.DatagramProtocol] | None,
    host: str,
    port: int,
    what: str,
) -> tuple[asyncio.Server | None, asyncio.DatagramTransport | None]:
    """TCP and UDP on one port (either may be None: not served). Port 0 means any port free
    for both: the one the kernel gives TCP may already be some UDP socket's, so on that clash
    another is tried, up to PAIR_TRIES times. A given port is taken as it is, or a clear
    ConfigError."""
    for attempt in range(PAIR_TRIES):
        server = None
        if stream_factory is not None:
            server = await listen(stream_factory, host, port, what)
        if datagram_factory is None:
            return server, None
        chosen = port if server is None else listening_port(server)
        try:
            datagrams = await listen_udp(datagram_factory, host, chosen, what)
        except ConfigError:
            if server is not None:
                server.close()
            if port != 0 or server is None or attempt == PAIR_TRIES - 1:
                raise
            continue
        return server, datagrams
    raise AssertionError("unreachable")  # the loop returns or raises


async def connect_tcp(
    loop: asyncio.AbstractEventLoop,
    factory: Callable[[], P],
    host: str,
    port: int,
    timeout: float,
    *,
    mark: int = 0,
    **options: Any,
) -> tuple[asyncio.Transport, P]:
    """`loop.create_connection` that raises TimeoutError after `timeout` seconds. Per
    connection this is one timer and one closure, where `asyncio.timeout()` builds a Timeout,
    looks up the task and the loop twice and reschedules a timer (every outbound pays it).
    `mark` (SO_MARK, needs CAP_NET_ADMIN) lets the kernel tell this socket from the
    programs full-device mode intercepts; `host` must then be an address."""
    task = asyncio.current_task(loop)
    assert task is not None, "connect_tcp() runs inside a task"
    expired = False

    def expire() -> None:
        nonlocal expired
        expired = True
        task.cancel()

    timer = loop.call_later(timeout, expire)
    try:
        if mark:
            # create_connection has no hook for options set before connect(): make the socket
            sock = marked_socket(options.pop("family", socket.AF_INET), socket.SOCK_STREAM, mark)
            try:
                await loop.sock_connect(sock, (host, port))
            except BaseException:
                sock.close()
                raise
            options["sock"] = sock
            transport, protocol = await loop.create_connection(factory, **options)
        else:
            transport, protocol = await loop.create_connection(factory, host, port, **options)
    except asyncio.CancelledError:
        if expired and task.uncancel() == 0:
            raise TimeoutError(f"no connection to {host}:{port} within {timeout:g} s") from None
        raise
    finally:
        timer.cancel()
    return transport, protocol


def marked_socket(family: int, kind: int, mark: int) -> socket.socket:
    """A non-blocking socket whose packets carry the firewall mark `mark` (SO_MARK)."""
    sock = socket.socket(family, kind)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_MARK, mark)
        sock.setblocking(False)
    except BaseException:
        sock.close()
        raise
    return sock


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


# the bottom of a client stack (transports.registry)


async def dial_tcp(lower: Layer | None, settings: StreamSettings, host: str, port: int) -> Layer:
    """A TCP connection, as a pass-through Layer the layers above stack on."""
    base = Layer()
    await asyncio.get_running_loop().create_connection(lambda: base, host, port)
    return base


register(Transport("tcp", dial_tcp, role="base"))
