"""The DNS inbound: a resolver on a local port (UDP and TCP, RFC 1035 §4.2) that answers every
query by asking an upstream resolver through the router's choice of outbound: names that go
through the tunnel are asked of `upstream` over the tunnel (the server's side sends the
query), names a split rule sends direct are asked of this machine's own resolvers. No query
for a tunnelled name ever leaves in clear. The addresses it hands out are remembered with the
name they answered (NameMemory), so that the full-device inbounds, which see only addresses,
can still route by domain."""

from __future__ import annotations

import asyncio
import collections
import ipaddress
import logging
import secrets
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, cast

from elsewhere.codecs import dns
from elsewhere.errors import ConfigError, ElsewhereError, ProtocolError
from elsewhere.inbounds.base import EngineAPI, register
from elsewhere.inbounds.tunnel import parse_destination
from elsewhere.outbounds.base import DatagramFlow
from elsewhere.outbounds.block import BlockOutbound
from elsewhere.outbounds.direct import DirectOutbound
from elsewhere.session import Destination, Session
from elsewhere.transports.layer import Pending
from elsewhere.transports.tcp import listen_pair, listening_port

if TYPE_CHECKING:
    from elsewhere.engine import Engine

log = logging.getLogger("elsewhere")

ANSWER_TIMEOUT = 4.0  # an upstream that has not answered by then gets a fresh flow next time
MEMORY_SIZE = 65536  # addresses remembered with their names
MIN_MEMORY = 600.0  # seconds an address is remembered at least: programs cache past the TTL
TCP_IDLE = 30.0  # RFC 7766 §6.2.3: a server may close an idle connection after some seconds


class NameMemory:
    """Address -> the name it was the answer for, bounded, expiring."""

    def __init__(self, size: int = MEMORY_SIZE) -> None:
        self.size = size
        self._names: collections.OrderedDict[str, tuple[str, float]] = collections.OrderedDict()

    def learn(self, address: str, name: str, ttl: float, now: float) -> None:
        self._names[address] = (name, now + max(ttl, MIN_MEMORY))
        self._names.move_to_end(address)
        while len(self._names) > self.size:
            self._names.popitem(last=False)

    def name(self, address: str, now: float) -> str | None:
        entry = self._names.get(address)
        if entry is None:
            return None
        if entry[1] < now:
            del self._names[address]
            return None
        return entry[0]


class _Exchange:
    """Queries to upstream resolvers over one outbound's datagram flow, told apart by ids of
    our own (many clients' queries may carry the same id)."""

    def __init__(self, inbound: DnsInbound, route: str) -> None:
        self.inbound = inbound
        self.route = route
        self.flow: DatagramFlow | None = None
        self.opening: asyncio.Future[DatagramFlow] | None = None
        self.pending: dict[int, asyncio.Future[bytes]] = {}

    async def _flow(self, first: Destination) -> DatagramFlow:
        if self.flow is not None:
            return self.flow
        if self.opening is None:
            engine = cast("Engine", self.inbound.engine)
            self.opening = asyncio.get_running_loop().create_future()
            session = Session(self.inbound.tag, first, "udp")
            try:
                flow = await engine.outbounds[self.route].open_udp(session, self._receive)
            except BaseException as exc:
                self.opening.set_exception(exc)
                self.opening.exception()  # retrieved: the waiters below each get it too
                self.opening = None
                raise
            self.flow = flow
            self.opening.set_result(flow)
            self.opening = None
            return flow
        return await asyncio.shield(self.opening)

    def _receive(self, payload: bytes, source: Destination) -> None:
        if len(payload) < dns.HEADER.size:
            return
        waiter = self.pending.pop(int.from_bytes(payload[:2], "big"), None)
        if waiter is not None and not waiter.done():
            waiter.set_result(payload)

    async def ask(self, query: bytes, upstream: Destination) -> bytes | None:
        ident = secrets.randbelow(0x10000)
        while ident in self.pending:
            ident = secrets.randbelow(0x10000)
        waiter: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()
        self.pending[ident] = waiter
        try:
            flow = await self._flow(upstream)
            flow.send(dns.with_id(query, ident), upstream)
            return await asyncio.wait_for(waiter, ANSWER_TIMEOUT)
        except (TimeoutError, OSError, ElsewhereError) as exc:
            log.debug("dns: no answer from %s via %s: %s", upstream, self.route, exc)
            self.reset()
            return None
        finally:
            self.pending.pop(ident, None)

    def reset(self) -> None:
        if self.flow is not None:
            self.flow.close()
            self.flow = None

    def close(self) -> None:
        self.reset()
        for waiter in self.pending.values():
            waiter.cancel()
        self.pending.clear()


class _StreamExchange(asyncio.Protocol):
    """Queries to an upstream resolver over one pipelined TCP stream through an outbound
    (RFC 7766 §6.2.1.1): what survives censors that let a tunnel's UDP die after a few
    packets. Reopened when the resolver or the tunnel closes it."""

    def __init__(self, inbound: DnsInbound, route: str) -> None:
        self.inbound = inbound
        self.route = route
        self.transport: asyncio.Transport | None = None
        self.opening: asyncio.Future[asyncio.Transport] | None = None
        self.pending: dict[int, asyncio.Future[bytes]] = {}
        self.buffer = b""

    async def _stream(self, upstream: Destination) -> asyncio.Transport:
        if self.transport is not None and not self.transport.is_closing():
            return self.transport
        if self.opening is not None:
            return await asyncio.shield(self.opening)
        loop = asyncio.get_running_loop()
        self.opening = opening = loop.create_future()
        try:
            engine = cast("Engine", self.inbound.engine)
            session = Session(self.inbound.tag, upstream, "tcp")
            transport = await engine.outbounds[self.route].open_tcp(session)
        except BaseException as exc:
            opening.set_exception(exc)
            opening.exception()  # retrieved: each waiter gets it too
            raise
        finally:
            self.opening = None
        held = transport.get_protocol()
        self.buffer = b""
        transport.set_protocol(self)
        self.transport = transport
        if isinstance(held, Pending):
            for chunk in held.chunks:
                self.data_received(chunk)
            if held.eof or held.lost:
                self.connection_lost(held.error)
        transport.resume_reading()
        opening.set_result(transport)
        return transport

    # asyncio.Protocol
    def data_received(self, data: bytes) -> None:
        self.buffer += data
        while len(self.buffer) >= 2:
            length = int.from_bytes(self.buffer[:2], "big")
            if len(self.buffer) < 2 + length:
                return
            message, self.buffer = self.buffer[2 : 2 + length], self.buffer[2 + length :]
            if len(message) >= dns.HEADER.size:
                waiter = self.pending.pop(int.from_bytes(message[:2], "big"), None)
                if waiter is not None and not waiter.done():
                    waiter.set_result(message)

    def eof_received(self) -> bool:
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None
        for waiter in self.pending.values():
            if not waiter.done():
                waiter.set_exception(ConnectionError("the resolver's stream ended"))
                waiter.exception()

    async def ask(self, query: bytes, upstream: Destination) -> bytes | None:
        for _ in range(2):  # a stream the resolver closed while idle: once more on a new one
            ident = secrets.randbelow(0x10000)
            while ident in self.pending:
                ident = secrets.randbelow(0x10000)
            waiter: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()
            self.pending[ident] = waiter
            try:
                transport = await self._stream(upstream)
                message = dns.with_id(query, ident)
                transport.write(len(message).to_bytes(2, "big") + message)
                return await asyncio.wait_for(waiter, ANSWER_TIMEOUT)
            except ConnectionError:
                continue
            except (TimeoutError, OSError, ElsewhereError) as exc:
                log.debug("dns: no answer from %s via %s: %s", upstream, self.route, exc)
                self.reset()
                return None
            finally:
                self.pending.pop(ident, None)
        return None

    def reset(self) -> None:
        if self.transport is not None:
            self.transport.close()
            self.transport = None

    def close(self) -> None:
        self.reset()
        for waiter in self.pending.values():
            waiter.cancel()
        self.pending.clear()


class _Datagrams(asyncio.DatagramProtocol):
    def __init__(self, inbound: DnsInbound) -> None:
        self.inbound = inbound
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast("asyncio.DatagramTransport", transport)

    def datagram_received(self, data: bytes, addr: tuple[Any, ...]) -> None:
        engine = self.inbound.engine
        if engine is not None:
            engine.spawn(self._answer(data, addr))

    async def _answer(self, data: bytes, addr: tuple[Any, ...]) -> None:
        response = await self.inbound.resolve(data)
        if response is not None and self.transport is not None:
            self.transport.sendto(response, addr)

    def error_received(self, exc: Exception) -> None:
        return None


class _Stream(asyncio.Protocol):
    """DNS over TCP: two-byte lengths before each message, answers in any order (RFC 7766)."""

    def __init__(self, inbound: DnsInbound) -> None:
        self.inbound = inbound
        self.transport: asyncio.Transport | None = None
        self.buffer = b""
        self.idle: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast("asyncio.Transport", transport)
        self._touch()

    def _touch(self) -> None:
        if self.idle is not None:
            self.idle.cancel()
        assert self.transport is not None
        self.idle = asyncio.get_running_loop().call_later(TCP_IDLE, self.transport.close)

    def data_received(self, data: bytes) -> None:
        self._touch()
        self.buffer += data
        engine = self.inbound.engine
        while len(self.buffer) >= 2:
            length = int.from_bytes(self.buffer[:2], "big")
            if len(self.buffer) < 2 + length:
                return
            message, self.buffer = self.buffer[2 : 2 + length], self.buffer[2 + length :]
            if engine is not None:
                engine.spawn(self._answer(message))

    async def _answer(self, message: bytes) -> None:
        response = await self.inbound.resolve(message)
        transport = self.transport
        if response is not None and transport is not None and not transport.is_closing():
            transport.write(len(response).to_bytes(2, "big") + response)

    def connection_lost(self, exc: Exception | None) -> None:
        if self.idle is not None:
            self.idle.cancel()


class DnsInbound:
    def __init__(self, tag: str, options: Mapping[str, Any]) -> None:
        self.tag = tag
        listen = options.get("listen", ["127.0.0.1"])
        self.hosts = [listen] if isinstance(listen, str) else [str(h) for h in listen]
        self.port = int(options.get("port", 53))
        where = f'inbound "{tag}"'
        self.upstream = _resolver(str(options.get("upstream", "1.1.1.1")), where)
        direct = options.get("direct_upstream", ())
        self.direct_upstream = [_resolver(str(d), where) for d in direct]
        self.ipv6 = bool(options.get("ipv6", True))  # False: AAAA queries get no records
        # how `upstream` is asked: "tcp" (default) survives censors that kill a tunnel's UDP
        # after a few packets; direct resolvers are always asked over UDP
        self.transport = str(options.get("upstream_transport", "tcp"))
        if self.transport not in ("tcp", "udp"):
            raise ConfigError(f'{where}: upstream_transport must be "tcp" or "udp"')
        self.memory = NameMemory()
        self.engine: Engine | None = None
        self.servers: list[asyncio.Server] = []
        self.datagrams: list[asyncio.DatagramTransport] = []
        self.exchanges: dict[str, _Exchange | _StreamExchange] = {}
        self.answered = 0

    async def start(self, engine: EngineAPI) -> None:
        # the outbounds and the other inbounds are reached through the engine itself
        self.engine = cast("Engine", engine)
        try:
            for host in self.hosts:  # every address on the port the first one got
                server, datagrams = await listen_pair(
                    lambda: _Stream(self), lambda: _Datagrams(self), host, self.port,
                    f'dns inbound "{self.tag}"',
                )
                assert server is not None and datagrams is not None
                self.servers.append(server)
                self.datagrams.append(datagrams)
                self.port = listening_port(server)
        except BaseException:
            await self.stop()
            raise

    async def stop(self) -> None:
        for server in self.servers:
            server.close()
        for datagrams in self.datagrams:
            datagrams.close()
        self.servers, self.datagrams = [], []
        for exchange in self.exchanges.values():
            exchange.close()

    def describe(self) -> str:
        where = ", ".join(f"[{h}]" if ":" in h else h for h in self.hosts)
        return f"dns {where}:{self.port} (udp+tcp)"

    def name(self, address: str) -> str | None:
        """The name `address` was handed out for, if this resolver did."""
        return self.memory.name(address, time.monotonic())

    async def resolve(self, query: bytes) -> bytes | None:
        """The answer to `query`, or None (garbage, or no answer in time: the client retries)."""
        engine = self.engine
        assert engine is not None
        try:
            question = dns.parse_question(query)
            if question.flags & dns.FLAG_QR:
                return None  # a response sent to us: nothing to answer
            if question.qtype == dns.TYPE_AAAA and not self.ipv6:
                return dns.answer(query)  # IPv6 is blocked: no address a program would try
            session = Session(
                self.tag, Destination(question.name or ".", 53), "udp", domain=question.name
            )
            route = engine.router.route(session)
            outbound = engine.outbounds[route]
            if isinstance(outbound, BlockOutbound):
                return dns.answer(query, dns.RCODE_REFUSED)
            upstreams = [self.upstream]
            stream = self.transport == "tcp"
            if isinstance(outbound, DirectOutbound) and self.direct_upstream:
                upstreams, stream = self.direct_upstream, False
            exchange = self.exchanges.get(route)
            if exchange is None:
                exchange = self.exchanges[route] = (
                    _StreamExchange(self, route) if stream else _Exchange(self, route))
            response = None
            for upstream in upstreams:
                response = await exchange.ask(query, upstream)
                if response is not None:
                    break
            if response is None:
                return None
            self.answered += 1
            now = time.monotonic()
            try:
                for address, name, ttl in dns.addresses(response):
                    self.memory.learn(str(address), name, ttl, now)
            except ProtocolError:
                pass
            return dns.with_id(response, question.id)
        except ProtocolError:
            return None


def _resolver(text: str, where: str) -> Destination:
    try:
        ipaddress.ip_address(text.strip("[]"))
        return Destination(text.strip("[]"), 53)
    except ValueError:
        pass
    destination = parse_destination(text, where)
    if destination.ip is None:
        raise ConfigError(f"{where}: a resolver is an address, not {text!r}")
    return destination


register("dns")(DnsInbound)
