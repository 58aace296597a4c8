"""The VLESS + REALITY server (XTLS/REALITY's behaviour): every connection is joined to the real
`dest` site from its accept on, and every byte the client sends goes on to dest until its
ClientHello is whole. A hello that authenticates (codecs/reality.py) is answered by us: dest's
own answer to that very hello is read, its ServerHello and record lengths copied, and our TLS
1.3 server (codecs/tls13_server.py) shows the temporary certificate; VLESS (with XTLS Vision if
asked) follows inside. Anything else — a browser, a prober, a replay, a wrong key, short id or
clock — stays joined to dest byte for byte both ways, so it meets the real site, and counts as a
probe (by the reason, in `refusals`)."""

from __future__ import annotations

import asyncio
import collections
import logging
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, cast

from elsewhere.codecs import reality, vision, vless
from elsewhere.codecs.address import NeedMoreData
from elsewhere.codecs.reality import Authenticated, CertificateTemplate, RealityKeys
from elsewhere.codecs.tls13_server import DestFlight, ServerIdentity, Tls13Server, read_dest_flight
from elsewhere.codecs.tls_hello import MAX_HELLO, ClientHello, parse_client_hello
from elsewhere.errors import ConfigError, ProtocolError
from elsewhere.inbounds.base import register
from elsewhere.inbounds.tls import _StreamDatagrams as StreamDatagrams
from elsewhere.inbounds.tunnel import parse_destination
from elsewhere.relay import IdleTimer, Relay
from elsewhere.session import Session
from elsewhere.transports.layer import Pending
from elsewhere.transports.tcp import listen
from elsewhere.transports.tls13_server_layer import Tls13ServerLayer
from elsewhere.transports.vision import start_vision

if TYPE_CHECKING:
    from elsewhere.inbounds.base import EngineAPI

log = logging.getLogger("elsewhere.reality")

# A connection joined to dest is dest's to end; this only reaps abandoned ones (as the TLS
# server's upstream fallback).
SPLICE_IDLE_TIMEOUT = 300.0
# Our handshake and the first VLESS request of an authenticated client (it proved the key:
# no stranger to hide a timeout from).
SESSION_START_TIMEOUT = 30.0
DEST_CONNECT_TIMEOUT = 10.0


class _Dest(Pending):
    """dest's side before the decision: keeps what dest says."""

    def __init__(self, hello: _Hello) -> None:
        super().__init__()
        self.hello = hello

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        self.hello.dest_spoke()

    def eof_received(self) -> bool:
        super().eof_received()
        self.hello.dest_spoke()
        return True

    def connection_lost(self, exc: Exception | None) -> None:
        super().connection_lost(exc)
        self.hello.dest_spoke()


class _Hello(asyncio.Protocol):
    """A connection from its accept until it is either joined to dest or ours."""

    def __init__(self, inbound: RealityInbound) -> None:
        self.inbound = inbound
        self.engine = cast("EngineAPI", inbound.engine)
        self.transport: asyncio.Transport | None = None
        self.received = bytearray()  # what the client sent, all of it forwarded but the tail
        self.forwarded = 0
        self.dest: asyncio.Transport | None = None
        self.dest_side = _Dest(self)
        self.dialing: asyncio.Task[None] | None = None
        self.state = "hello"  # hello -> (spliced | awaiting_dest -> ours) | closed
        self.authenticated: tuple[ClientHello, Authenticated] | None = None
        self.client_eof = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)
        self.dialing = self.engine.spawn(self._dial())

    async def _dial(self) -> None:
        loop = asyncio.get_running_loop()
        host, port = self.inbound.dest.host, self.inbound.dest.port
        try:
            async with asyncio.timeout(DEST_CONNECT_TIMEOUT):
                dest, _ = await loop.create_connection(lambda: self.dest_side, host, port)
        except (OSError, TimeoutError) as exc:
            log.warning("REALITY dest %s:%s unreachable: %s", host, port, exc)
            self._close()
            return
        self.dest = cast(asyncio.Transport, dest)
        if self.state == "closed":
            self.dest.abort()
            return
        if self.state == "hello":
            self._forward()
        elif self.state == "spliced":
            self._splice()
        elif self.state == "awaiting_dest":
            self._forward(upto=self.authenticated[0].consumed if self.authenticated else None)
            self.dest_spoke()

    # the client's side

    def data_received(self, data: bytes) -> None:
        if self.state != "hello":
            self.received += data  # an authenticated client's next flight (CCS, Finished)
            return
        self.received += data
        try:
            hello = parse_client_hello(bytes(self.received))
        except NeedMoreData:
            if len(self.received) > MAX_HELLO:
                self._refuse("not_tls")
            else:
                self._forward()
            return
        except ProtocolError:
            self._refuse("not_tls")
            return
        now = time.time()
        verdict = reality.authenticate(hello, self.inbound.keys, now)
        if isinstance(verdict, reality.Refusal):
            self._refuse(verdict.value)
            return
        if not self.inbound.replays.first_time(hello.session_id, now):
            self._refuse(reality.Refusal.REPLAY.value)
            return
        # dest gets the hello too (its answer is what we copy), and nothing after it
        self.state = "awaiting_dest"
        self.authenticated = (hello, verdict)
        self._forward(upto=hello.consumed)
        self.dest_spoke()

    def eof_received(self) -> bool:
        self.client_eof = True
        if self.state == "hello":
            self._refuse("cut_short")
        elif self.state == "awaiting_dest":
            self._close()
        return True

    def connection_lost(self, exc: Exception | None) -> None:
        # (once spliced or ours, the connection has another protocol: this is before that)
        if self.state == "hello":
            self.inbound.count_probe("cut_short")
        self.state = "closed"
        if self.dest is not None:
            self.dest.close()
        elif self.dialing is not None:
            self.dialing.cancel()

    def _forward(self, upto: int | None = None) -> None:
        end = len(self.received) if upto is None else upto
        if self.dest is not None and end > self.forwarded:
            self.dest.write(bytes(self.received[self.forwarded : end]))
            self.forwarded = end

    # the decision

    def _refuse(self, reason: str) -> None:
        self.inbound.count_probe(reason)
        self._splice()

    def _splice(self) -> None:
        """Joined to dest for good: the relay replays what dest already said (and its end,
        if it ended) and carries the rest both ways; the client's own end goes on to dest."""
        assert self.transport is not None
        self.state = "spliced"
        if self.dest is None:
            return  # _dial splices once connected (or closes if dest is unreachable)
        self._forward()
        client = self.transport
        client.pause_reading()
        ended = Pending()
        ended.eof = self.client_eof
        client.set_protocol(ended)
        relay = Relay(client, self.dest, idle_timeout=SPLICE_IDLE_TIMEOUT,
                      on_done=self.inbound.relays.discard, loop=self.engine.loop)
        if not relay.finished:
            self.inbound.relays.add(relay)

    def dest_spoke(self) -> None:
        if self.state == "hello":
            if self.dest_side.chunks or self.dest_side.eof or self.dest_side.lost:
                # dest spoke first, or gave up: XTLS/REALITY then just joins the two
                self._refuse("dest_first")
            return
        if self.state != "awaiting_dest" or self.dest is None:
            return
        said = b"".join(self.dest_side.chunks)
        flight = read_dest_flight(said)
        if flight is None and not (self.dest_side.eof or self.dest_side.lost):
            return  # more to come
        if not isinstance(flight, DestFlight):
            # dest's answer cannot be copied: the client meets dest as a stranger would
            # (it will say it did not authenticate the server)
            log.info("REALITY dest's answer cannot be copied; the client was joined to dest")
            self.inbound.count_probe("dest_flight")
            self._splice()
            return
        self._answer(flight)

    def _answer(self, flight: DestFlight) -> None:
        assert self.authenticated is not None and self.transport is not None
        hello, verdict = self.authenticated
        dest = self.dest
        assert dest is not None
        self.dest = None
        dest.abort()  # done with it: XTLS/REALITY closes it too
        identity = ServerIdentity(
            chain=(self.inbound.certificate.for_session(verdict.auth_key),),
            key=self.inbound.certificate.key,
        )
        try:
            tls = Tls13Server(hello, identity, dest=flight)
            first = tls.start()
        except ProtocolError as exc:
            log.debug("REALITY handshake failed: %s", exc)
            self._close()
            return
        self.state = "ours"
        transport = self.transport
        session = _VlessStart(self.inbound)
        layer = Tls13ServerLayer(tls, session)
        transport.set_protocol(layer)
        layer.connection_made(transport)
        transport.write(first)
        rest = bytes(self.received[hello.consumed :])
        self.received.clear()
        session.timer = IdleTimer(SESSION_START_TIMEOUT, layer.abort, loop=self.engine.loop)
        if rest:
            layer.data_received(rest)
        if self.client_eof:
            layer.eof_received()

    def _close(self) -> None:
        self.state = "closed"
        if self.transport is not None:
            self.transport.close()
        if self.dest is not None:
            self.dest.close()


class _VlessStart(asyncio.Protocol):
    """Inside our TLS: the VLESS request of an authenticated client."""

    def __init__(self, inbound: RealityInbound) -> None:
        self.inbound = inbound
        self.engine = cast("EngineAPI", inbound.engine)
        self.transport: asyncio.Transport | None = None
        self.buffer = bytearray()
        self.timer: IdleTimer | None = None
        self.done = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        if self.done:
            return
        self.buffer += data
        try:
            request = vless.parse_request(self.buffer, self.inbound.users, self.inbound.flows)
        except ProtocolError as exc:
            # the client holds the REALITY key but not a VLESS user of ours (a revoked key)
            log.info("REALITY client with no VLESS user of ours: %s", exc)
            self._end()
            return
        if request is None:
            return
        self._start(request)

    def _start(self, request: vless.VlessRequest[str]) -> None:
        transport = self.transport
        assert transport is not None
        self.done = True
        if self.timer is not None:
            self.timer.cancel()
        engine = self.engine
        if not engine.admit(request.user):
            transport.close()
            return
        initial = bytes(self.buffer[request.header_length :])
        self.buffer.clear()
        session = Session(
            self.inbound.tag, request.destination, request.network, user=request.user,
            source=transport.get_extra_info("peername"),
        )
        transport.pause_reading()
        if request.flow:  # XTLS Vision between our TLS layer and the relay
            transport, initial = start_vision(transport, request, initial)
        if request.network == "udp":
            StreamDatagrams(self.inbound, transport, session, True, initial,  # type: ignore[arg-type]
                            respond=not request.flow)
            return
        transport.set_protocol(Pending())
        respond = None if request.flow else (lambda _remote: transport.write(
            vless.encode_response()))
        engine.spawn(engine.serve_tcp(session, transport, initial, on_open=respond))

    def _end(self) -> None:
        self.done = True
        if self.timer is not None:
            self.timer.cancel()
        assert self.transport is not None
        self.transport.close()

    def eof_received(self) -> bool:
        self._end()
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        if self.timer is not None:
            self.timer.cancel()


class RealityInbound:
    """Options: `dest` (host:port of a real TLS 1.3 site), `server_names` (the SNIs clients
    may send: dest's names), `private_key` (X25519, base64url as `xray x25519` prints it),
    `short_ids` (hex, "" allowed), `max_time_diff` (milliseconds, 0 = any clock, as Xray's),
    `vless` users ({uuid, id}), `udp_timeout`."""

    def __init__(self, tag: str, options: Mapping[str, Any]) -> None:
        self.tag = tag
        where = f'inbound "{tag}"'
        self.host = options.get("listen", "0.0.0.0")
        self.port = int(options.get("port", 443))
        if "dest" not in options:
            raise ConfigError(f'{where}: REALITY needs dest = "host:port" of a real TLS 1.3 site')
        self.dest = parse_destination(str(options["dest"]), where)
        names = options.get("server_names") or []
        if not names:
            raise ConfigError(f"{where}: REALITY needs server_names, the names dest answers to")
        if "private_key" not in options:
            raise ConfigError(
                f"{where}: REALITY needs private_key (`elsewhere keys add` makes one)"
            )
        self.keys = RealityKeys(
            private_key=reality.decode_key(str(options["private_key"])),
            short_ids=frozenset(reality.parse_short_id(str(s))
                                for s in options.get("short_ids", [""])),
            server_names=frozenset(str(n).lower() for n in names),
            max_time_diff=float(options.get("max_time_diff", 0)) / 1000,
        )
        self.users: dict[bytes, str] = {}
        try:
            for entry in options.get("vless", ()):
                self.users[vless.parse_uuid(entry["uuid"])] = str(entry["id"])
        except KeyError as exc:
            raise ConfigError(f"{where}: every user needs {exc.args[0]}") from None
        self.flows = frozenset({vision.FLOW})
        self.udp_timeout = float(options.get("udp_timeout", 60))
        self.certificate = CertificateTemplate.generate()
        self.replays = reality.ReplayFilter(self.keys.max_time_diff)
        self.refusals: collections.Counter[str] = collections.Counter()
        self.relays: set[Relay] = set()
        self.engine: EngineAPI | None = None
        self.server: asyncio.Server | None = None

    def count_probe(self, reason: str) -> None:
        assert self.engine is not None
        self.engine.stats.probes += 1
        self.refusals[reason] += 1

    def set_users(self, users: Mapping[bytes, str]) -> None:
        self.users = dict(users)

    async def start(self, engine: EngineAPI) -> None:
        self.engine = engine
        self.server = await listen(lambda: _Hello(self), self.host, self.port,
                                   f'reality inbound "{self.tag}"')
        self.port = self.server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        if self.server is not None:
            self.server.close()
        for relay in list(self.relays):
            relay.abort()

    def describe(self) -> str:
        return (f"vless over reality {self.host}:{self.port} (dest {self.dest}, "
                f"{len(self.users)} keys)")


register("reality")(RealityInbound)
