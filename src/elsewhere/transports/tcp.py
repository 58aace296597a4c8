"""Listening sockets: one place that turns "address in use" and friends into a line a person
can act on."""

from __future__ import annotations

import asyncio
import errno
from collections.abc import Callable
from ssl import SSLContext

from elsewhere.errors import ConfigError

BACKLOG = 1024
TLS_HANDSHAKE_TIMEOUT = 30.0


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
