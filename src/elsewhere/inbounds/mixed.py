"""The client's "mixed" port: SOCKS5 (RFC 1928 CONNECT and UDP ASSOCIATE, RFC 1929
user/password) and HTTP proxy (CONNECT and absolute-URI requests) on one port, told apart by
the first byte. Domain names go to the router unresolved, so there is no local DNS lookup."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, cast

from elsewhere.codecs import http_proxy, socks5
from elsewhere.errors import PolicyError, ProtocolError
from elsewhere.inbounds.base import register
from elsewhere.relay import IdleTimer
from elsewhere.session import Destination, Session
from elsewhere.transports.layer import Pending
from elsewhere.transports.tcp import listen
from elsewhere.udp import NatTable, forward

if TYPE_CHECKING:
    from elsewhere.inbounds.base import EngineAPI

HANDSHAKE_TIMEOUT = 30.0


def socks_reply_for(exc: BaseException) -> int:
    if isinstance(exc, PolicyError):
        return socks5.REP_CONNECTION_NOT_ALLOWED
    if isinstance(exc, ConnectionRefusedError):
        return socks5.REP_CONNECTION_REFUSED
    if isinstance(exc, TimeoutError):
        return socks5.REP_TTL_EXPIRED
    if isinstance(exc, OSError):
        return socks5.REP_HOST_UNREACHABLE
    return socks5.REP_GENERAL_FAILURE


def http_status_for(exc: BaseException) -> int:
    if isinstance(exc, PolicyError):
        return 403
    if isinstance(exc, TimeoutError):
        return 504
    return 502


class _Handshake(asyncio.Protocol):
    def __init__(self, inbound: MixedInbound) -> None:
        self.inbound = inbound
        self.engine = cast("EngineAPI", inbound.engine)
        self.codec: socks5.Socks5Server | http_proxy.HttpProxyServer | None = None
        self.transport: asyncio.Transport | None = None
        self.timer: IdleTimer | None = None
        self.association: _Association | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)
        self.timer = IdleTimer(HANDSHAKE_TIMEOUT, self.transport.close)

    def data_received(self, data: bytes) -> None:
        transport = self.transport
        assert transport is not None and self.timer is not None
        self.timer.active = True
        if self.association is not None:
            return  # RFC 1928 §7: the TCP connection only keeps the association alive
        if self.codec is None:
            kind = socks5.detect_protocol(data)
            if kind is None:
                transport.close()
                return
            users = self.inbound.users
            self.codec = (
                socks5.Socks5Server(users)
                if kind == "socks5"
                else http_proxy.HttpProxyServer(users)
            )
        codec = self.codec
        codec.feed(data)
        if isinstance(codec, socks5.Socks5Server):
            self._socks(codec)
        else:
            self._http(codec)

    def _socks(self, codec: socks5.Socks5Server) -> None:
        transport = self.transport
        assert transport is not None
        while (event := codec.next_event()) is not None:
            out = codec.data_to_send()
            if out:
                transport.write(out)
            if isinstance(event, socks5.Failed):
                transport.close()
                return
            if isinstance(event, socks5.Request):
                if event.command == socks5.CMD_UDP_ASSOCIATE:
                    self._associate(codec)
                    return

                def answer(rep: int) -> None:
                    codec.reply(rep)
                    transport.write(codec.data_to_send())

                self._connect(
                    event.destination,
                    codec.trailing,
                    on_open=lambda _remote: answer(socks5.REP_SUCCEEDED),
                    on_fail=lambda exc: answer(socks_reply_for(exc)),
                )
                return
        out = codec.data_to_send()
        if out:
            transport.write(out)

    def _http(self, codec: http_proxy.HttpProxyServer) -> None:
        transport = self.transport
        assert transport is not None
        event = codec.next_event()
        if event is None:
            return
        if isinstance(event, http_proxy.Failed):
            transport.write(event.response)
            transport.close()
            return

        def fail(exc: BaseException) -> None:
            transport.write(http_proxy.error_response(http_status_for(exc)))

        if isinstance(event, http_proxy.Connect):
            self._connect(
                event.destination,
                codec.trailing,
                on_open=lambda _r: transport.write(http_proxy.CONNECT_ESTABLISHED),
                on_fail=fail,
            )
        else:
            head = event.head
            self._connect(event.destination, lambda: head + codec.trailing(), None, fail)

    def _connect(self, destination: Destination, initial: Any, on_open: Any, on_fail: Any) -> None:
        transport = self.transport
        assert transport is not None and self.timer is not None
        self.timer.cancel()
        transport.pause_reading()
        transport.set_protocol(Pending())
        session = Session(
            self.inbound.tag, destination, "tcp", source=transport.get_extra_info("peername")
        )
        engine = self.engine
        engine.spawn(
            engine.serve_tcp(session, transport, initial(), on_open=on_open, on_fail=on_fail)
        )

    def _associate(self, codec: socks5.Socks5Server) -> None:
        transport = self.transport
        assert transport is not None and self.timer is not None
        self.timer.cancel()
        self.engine.spawn(self._open_association(codec, transport))

    async def _open_association(
        self, codec: socks5.Socks5Server, transport: asyncio.Transport
    ) -> None:
        loop = asyncio.get_running_loop()
        sockname = transport.get_extra_info("sockname")
        peer = transport.get_extra_info("peername")
        family = socket.AF_INET6 if ":" in sockname[0] else socket.AF_INET
        association = _Association(self.inbound, peer[0])
        try:
            await loop.create_datagram_endpoint(
                lambda: association, local_addr=(sockname[0], 0), family=family
            )
        except OSError:
            codec.reply(socks5.REP_GENERAL_FAILURE)
            transport.write(codec.data_to_send())
            transport.close()
            return
        self.association = association
        bound = association.transport.get_extra_info("sockname")  # type: ignore[union-attr]
        codec.reply(socks5.REP_SUCCEEDED, Destination(bound[0], bound[1]))
        transport.write(codec.data_to_send())

    def eof_received(self) -> bool:
        return False  # close: for a UDP association that ends it (RFC 1928 §7)

    def connection_lost(self, exc: Exception | None) -> None:
        if self.timer is not None:
            self.timer.cancel()
        if self.association is not None:
            self.association.close()


class _Association(asyncio.DatagramProtocol):
    """One UDP ASSOCIATE: datagrams from the client's address, one outbound flow per route."""

    def __init__(self, inbound: MixedInbound, client_host: str) -> None:
        self.inbound = inbound
        self.client_host = client_host
        self.transport: asyncio.DatagramTransport | None = None
        self.nat = NatTable(inbound.udp_timeout)
        self.client: tuple[Any, ...] | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.DatagramTransport, transport)
        self.nat.start()

    def datagram_received(self, data: bytes, addr: tuple[Any, ...]) -> None:
        if addr[0] != self.client_host:
            return  # only the client that asked may use the association
        try:
            destination, payload = socks5.decode_udp(data)
        except ProtocolError:
            return
        engine = self.inbound.engine
        assert engine is not None
        self.client = addr
        session = Session(self.inbound.tag, destination, "udp", source=addr[:2])
        route = engine.router.route(session)
        forward(engine, self.nat, route, session, payload, self._reply)

    def _reply(self, payload: bytes, source: Destination) -> None:
        if self.transport is not None and self.client is not None:
            self.transport.sendto(socks5.encode_udp(source, payload), self.client)

    def error_received(self, exc: Exception) -> None:
        return None

    def close(self) -> None:
        self.nat.close()
        if self.transport is not None:
            self.transport.close()


class MixedInbound:
    def __init__(self, tag: str, options: Mapping[str, Any]) -> None:
        self.tag = tag
        self.host = options.get("listen", "127.0.0.1")
        self.port = int(options.get("port", 1080))
        users = options.get("users")
        self.users: dict[str, str] | None = dict(users) if users else None
        self.udp_timeout = float(options.get("udp_timeout", 60))
        self.engine: EngineAPI | None = None
        self.server: asyncio.Server | None = None

    async def start(self, engine: EngineAPI) -> None:
        self.engine = engine
        what = f'mixed inbound "{self.tag}"'
        self.server = await listen(lambda: _Handshake(self), self.host, self.port, what)
        self.port = self.server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        if self.server is not None:
            self.server.close()

    def describe(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"socks5+http {host}:{self.port}"


register("mixed")(MixedInbound)
