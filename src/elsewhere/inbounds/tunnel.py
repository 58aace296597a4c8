"""The tunnel inbound (like ss-tunnel): a local port that forwards every TCP connection and UDP
datagram to one fixed destination through the router."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, cast

from elsewhere.errors import ConfigError
from elsewhere.inbounds.base import register
from elsewhere.session import Destination, Session
from elsewhere.transports.layer import Pending
from elsewhere.transports.tcp import listen_pair, listening_port
from elsewhere.udp import NatTable, forward

if TYPE_CHECKING:
    from elsewhere.inbounds.base import EngineAPI


def parse_destination(text: str, where: str) -> Destination:
    host, sep, port = text.rpartition(":")
    host = host.strip("[]")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ConfigError(f'{where}: destination "{text}" must look like host:port')
    return Destination(host, int(port))


class _Accept(Pending):
    def __init__(self, inbound: TunnelInbound) -> None:
        super().__init__()
        self.inbound = inbound

    def connection_made(self, base: asyncio.BaseTransport) -> None:
        transport = cast(asyncio.Transport, base)
        transport.pause_reading()
        engine = self.inbound.engine
        assert engine is not None
        session = Session(
            self.inbound.tag,
            self.inbound.destination,
            "tcp",
            source=transport.get_extra_info("peername"),
        )
        engine.spawn(engine.serve_tcp(session, transport))


class _Datagrams(asyncio.DatagramProtocol):
    def __init__(self, inbound: TunnelInbound) -> None:
        self.inbound = inbound
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports do not subclass asyncio's, so no isinstance here
        self.transport = cast("asyncio.DatagramTransport", transport)

    def datagram_received(self, data: bytes, addr: tuple[Any, ...]) -> None:
        inbound = self.inbound
        assert inbound.engine is not None and self.transport is not None
        transport = self.transport
        session = Session(inbound.tag, inbound.destination, "udp", source=addr[:2])
        forward(
            inbound.engine,
            inbound.nat,
            addr,
            session,
            data,
            lambda payload, _src: transport.sendto(payload, addr),
        )


class TunnelInbound:
    def __init__(self, tag: str, options: Mapping[str, Any]) -> None:
        self.tag = tag
        self.host = options.get("listen", "127.0.0.1")
        self.port = int(options.get("port", 0))
        if "destination" not in options:
            raise ConfigError(f'inbound "{tag}": a tunnel needs destination = "host:port"')
        self.destination = parse_destination(options["destination"], f'inbound "{tag}"')
        network = options.get("network", ["tcp", "udp"])
        self.tcp, self.udp = "tcp" in network, "udp" in network
        self.engine: EngineAPI | None = None
        self.server: asyncio.Server | None = None
        self.datagrams: asyncio.DatagramTransport | None = None
        self.nat = NatTable(float(options.get("udp_timeout", 60)))

    async def start(self, engine: EngineAPI) -> None:
        self.engine = engine
        what = f'tunnel inbound "{self.tag}"'
        self.server, self.datagrams = await listen_pair(
            (lambda: _Accept(self)) if self.tcp else None,
            (lambda: _Datagrams(self)) if self.udp else None,
            self.host,
            self.port,
            what,
        )
        if self.server is not None:
            self.port = listening_port(self.server)
        if self.datagrams is not None:
            self.port = self.datagrams.get_extra_info("sockname")[1]
            self.nat.start()

    async def stop(self) -> None:
        if self.server is not None:
            self.server.close()
        if self.datagrams is not None:
            self.datagrams.close()
        self.nat.close()

    def describe(self) -> str:
        return f"tunnel {self.host}:{self.port} -> {self.destination}"


register("tunnel")(TunnelInbound)
