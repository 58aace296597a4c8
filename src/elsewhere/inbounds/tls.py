"""The TLS-family server: one TLS port that accepts Trojan and VLESS, told apart by their first
bytes inside TLS, raw or inside a WebSocket (or Xray's httpupgrade) on a secret path; everything
else — a wrong password or UUID, a wrong path, a browser, a scanner, a half-sent header — goes,
with every byte it sent, to the fallback web server. A connection that does not start TLS at
all gets what nginx's `ssl` port gives plain HTTP (fallback.serve_plain_http)."""

from __future__ import annotations

import asyncio
import functools
import logging
import ssl
from collections.abc import Hashable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, cast

from elsewhere.codecs import http_upgrade, trojan, vision, vless
from elsewhere.errors import ConfigError, ProtocolError
from elsewhere.inbounds.base import register
from elsewhere.inbounds.decoy_site import would_answer
from elsewhere.inbounds.fallback import Fallback, make_fallback, serve_plain_http
from elsewhere.inbounds.xhttp import XhttpEndpoint
from elsewhere.relay import IdleTimer
from elsewhere.session import Destination, Session
from elsewhere.transports.layer import Pending
from elsewhere.transports.registry import Acceptor, acceptors
from elsewhere.transports.tcp import listen
from elsewhere.transports.tls import ServerCertificate
from elsewhere.transports.tls_layer import TlsServerLayer
from elsewhere.transports.vision import start_vision
from elsewhere.udp import NatTable, forward
from elsewhere.web.decoy_content import default_content
from elsewhere.web.nginx import CLIENT_HEADER_TIMEOUT

if TYPE_CHECKING:
    from elsewhere.inbounds.base import EngineAPI

log = logging.getLogger("elsewhere.tls")

# Longest we wait for a first request to make sense: an HTTP head with early data. Past it,
# nothing of ours can still be coming, so the fallback gets it.
MAX_UNDECIDED = http_upgrade.MAX_HEAD
# A half-sent header waits this long before the fallback gets it (a browser's request is
# complete in its first record; our clients send theirs whole too).
DECIDE_TIMEOUT = 10.0

Request = trojan.TrojanRequest[str] | vless.VlessRequest[str]
VISION_FLOWS = frozenset({vision.FLOW})
NO_FLOWS: frozenset[str] = frozenset()


@dataclass
class Users:
    """Trojan password hashes and VLESS UUIDs of one port, each to a user id."""

    trojan: dict[bytes, str]
    vless: dict[bytes, str]

    @classmethod
    def parse(cls, tag: str, options: Mapping[str, Any]) -> Users:
        users = cls({}, {})
        try:
            for entry in options.get("trojan", ()):
                users.trojan[trojan.password_hash(entry["password"])] = str(entry["id"])
            for entry in options.get("vless", ()):
                users.vless[vless.parse_uuid(entry["uuid"])] = str(entry["id"])
        except KeyError as exc:
            raise ConfigError(f'inbound "{tag}": every user needs {exc.args[0]}') from None
        return users

    def ids(self) -> set[str]:
        return set(self.trojan.values()) | set(self.vless.values())


class _Detect(asyncio.Protocol):
    """Reads the first bytes (inside TLS, or inside the WebSocket) until they are a request of
    ours or cannot become one."""

    def __init__(self, inbound: TlsInbound, *, inner: bool = False) -> None:
        self.inbound = inbound
        self.engine = cast("EngineAPI", inbound.engine)
        self.inner = inner  # inside a WebSocket: only Trojan or VLESS may follow
        self.buffer = bytearray()
        self.transport: asyncio.Transport | None = None
        self.timer: IdleTimer | None = None
        self.decided = False
        # ALPN chose h2. Xray's and v2ray's TLS clients offer h2 whatever they carry, and send
        # Trojan or VLESS straight after the handshake all the same (Xray's servers read the
        # protocol first, and only what is not theirs goes on by ALPN): so the request is
        # looked for first (a WebSocket upgrade too: v2ray 4's WS client offers h2 as well),
        # and anything else is HTTP/2's (the preface, or h2's own answer to what is not one).
        self.h2 = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)
        self.timer = IdleTimer(self.inbound.decide_timeout, self._give_up)
        web = self.inbound.web
        self.h2 = not self.inner and web is not None and web.negotiated_h2(self.transport)

    def data_received(self, data: bytes) -> None:
        if self.decided:
            return
        self.buffer += data
        try:
            self._decide()
        except Exception:  # a bug must not turn into a tell: serve the fallback
            log.exception("while reading a first request")
            self._fallback()

    def eof_received(self) -> bool:
        if not self.decided:
            self._fallback(eof=True)
        return True

    def connection_lost(self, exc: Exception | None) -> None:
        if self.timer is not None:
            self.timer.cancel()
        if not self.decided:
            # gone (a RST) before its first bytes made a request of ours: a probe, counted
            # like one cut short by a FIN (as the Shadowsocks servers count theirs)
            self.decided = True
            self.engine.stats.probes += 1

    def _give_up(self) -> None:
        if not self.decided:
            self._web("h2") if self.h2 else self._fallback()

    def _decide(self) -> None:
        buf = self.buffer
        users = self.inbound.users
        undecided = False
        # XTLS Vision only straight over our TLS (as Xray: never inside a WebSocket)
        flows = VISION_FLOWS if self.inbound.ssl is not None and not self.inner else NO_FLOWS
        for parse, table in (
            (trojan.parse_request, users.trojan),
            (functools.partial(vless.parse_request, flows=flows), users.vless),
        ):
            if not table:
                continue
            try:
                request = parse(buf, table)
            except ProtocolError:
                continue
            if request is None:
                undecided = True
                continue
            self._accept(request)
            return
        web = self.inbound.web
        if not self.inner and web is not None and not self.h2:
            verdict = web.verdict(buf)
            if verdict is None:
                undecided = True
            elif verdict:
                self._web(verdict)
                return
        if not self.inner:
            for path, acceptor in self.inbound.upgrades:
                try:
                    req = acceptor.parse(buf, path, self.inbound.ws_host)
                except ProtocolError:
                    continue
                if req is None:
                    undecided = True
                    continue
                self._upgrade(req, acceptor)
                return
        if self.h2:
            if not undecided or len(buf) > MAX_UNDECIDED:
                self._web("h2")
            return
        if (
            not undecided
            or len(buf) > MAX_UNDECIDED
            or (not self.inner and self.inbound.web_would_answer(buf))
        ):
            self._fallback()

    def _stop_reading(self) -> asyncio.Transport:
        transport = self.transport
        assert transport is not None and self.timer is not None
        self.decided = True
        self.timer.cancel()
        transport.pause_reading()
        return transport

    def _fallback(self, eof: bool = False) -> None:
        transport = self._stop_reading()
        self.engine.stats.probes += 1
        if self.inner:
            transport.close()  # a WebSocket on our path that carries nothing of ours
            return
        self.inbound.fallback.take(transport, bytes(self.buffer))

    def _web(self, kind: str) -> None:
        """An HTTP connection for XHTTP (h1 with a request on its path, or h2): the web
        server takes it, with what it sent."""
        web = self.inbound.web
        assert web is not None
        transport = self._stop_reading()
        web.take(transport, bytes(self.buffer), kind)

    def _upgrade(self, request: http_upgrade.UpgradeRequest, acceptor: Acceptor) -> None:
        transport = self._stop_reading()
        rest = bytes(self.buffer[request.header_length :])
        inner = _Detect(self.inbound, inner=True)
        layer = acceptor.accept(transport, request)
        layer.set_protocol(inner)
        transport.set_protocol(layer)
        layer.connection_made(transport)
        if request.early_data:
            inner.data_received(request.early_data)
        if rest:
            layer.data_received(rest)
        if not inner.decided:
            transport.resume_reading()

    def _accept(self, request: Request) -> None:
        transport = self._stop_reading()
        engine = self.engine
        user = request.user
        if not engine.admit(user):
            self.decided = False
            self._fallback()
            return
        initial = bytes(self.buffer[request.header_length :])
        is_vless = isinstance(request, vless.VlessRequest)
        session = Session(
            self.inbound.tag,
            request.destination,
            request.network,
            user=user,
            source=transport.get_extra_info("peername"),
        )
        flow = request.flow if isinstance(request, vless.VlessRequest) else ""
        if isinstance(request, vless.VlessRequest) and flow:
            # XTLS Vision: the padded stream between the TLS layer and the relay
            transport, initial = start_vision(transport, request, initial)
        if request.network == "udp":
            _StreamDatagrams(self.inbound, transport, session, is_vless, initial,
                             respond=not flow)
            return
        transport.set_protocol(Pending())
        on_open = (
            (lambda _remote: transport.write(vless.encode_response()))
            if is_vless and not flow else None  # Vision sends it with the first data
        )
        engine.spawn(engine.serve_tcp(session, transport, initial, on_open=on_open))


class _StreamDatagrams(asyncio.Protocol):
    """UDP carried inside the stream: Trojan frames each packet with its address, VLESS with
    a length only (its destination is the request's)."""

    def __init__(
        self,
        inbound: TlsInbound,
        transport: asyncio.Transport,
        session: Session,
        is_vless: bool,
        initial: bytes,
        respond: bool = True,
    ) -> None:
        self.inbound = inbound
        self.engine = cast("EngineAPI", inbound.engine)
        self.transport = transport
        self.session = session
        self.is_vless = is_vless
        self.decoder: trojan.UdpDecoder | vless.UdpDecoder = (
            vless.UdpDecoder() if is_vless else trojan.UdpDecoder()
        )
        self.nat = NatTable(float(inbound.udp_timeout))
        self.nat.start()
        self.timer = IdleTimer(self.engine.idle_timeout, transport.close)
        transport.set_protocol(self)
        if is_vless and respond:  # (under Vision the response goes with the first packet)
            transport.write(vless.encode_response())
        if initial:
            self.data_received(initial)
        transport.resume_reading()

    def data_received(self, data: bytes) -> None:
        self.timer.active = True
        decoder = self.decoder
        decoder.feed(data)
        try:
            while (packet := decoder.next()) is not None:
                if isinstance(packet, bytes):
                    session, payload = self.session, packet
                else:
                    dest = packet.destination
                    session = Session(
                        self.session.inbound, dest, "udp", self.session.user, self.session.source
                    )
                    payload = packet.payload
                route: Hashable = self.engine.router.route(session)
                forward(self.engine, self.nat, route, session, payload, self._reply)
        except ProtocolError:
            self.transport.abort()

    def _reply(self, payload: bytes, source: Destination) -> None:
        self.timer.active = True
        if self.transport.is_closing():
            return
        if self.is_vless:
            self.transport.write(vless.encode_udp(payload))
        else:
            self.transport.write(trojan.encode_udp(source, payload))

    def eof_received(self) -> bool:
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self.timer.cancel()
        self.nat.close()


class TlsInbound:
    """Options besides users, paths and certificate: `fallback` ("decoy" or host:port),
    `decoy` (with "decoy": the directory of the site to serve, as `elsewhere server` generates
    one per server; without it, the site shipped in the package, the same on every install),
    `decide_timeout` (seconds a half-sent first request waits before the fallback gets it),
    `client_header_timeout` (nginx's, 60 s: how long after the accept a TLS handshake, or a
    plain-HTTP request head, may take before the connection is closed without a word)."""

    def __init__(self, tag: str, options: Mapping[str, Any]) -> None:
        self.tag = tag
        self.host = options.get("listen", "0.0.0.0")
        self.port = int(options.get("port", 443))
        self.users = Users.parse(tag, options)
        self.udp_timeout = float(options.get("udp_timeout", 60))
        self.decide_timeout = float(options.get("decide_timeout", DECIDE_TIMEOUT))
        self.header_timeout = float(options.get("client_header_timeout", CLIENT_HEADER_TIMEOUT))
        # (path, acceptor) for every registered upgrade this config turns on
        self.upgrades: list[tuple[str, Acceptor]] = [
            (_path(tag, options[acceptor.option]), acceptor)
            for acceptor in acceptors().values()
            if options.get(acceptor.option)
        ]
        self.ws_host: str | None = options.get("host")
        self.fallback: Fallback = make_fallback(tag, options, header_timeout=self.header_timeout)
        self.decoy_model = default_content()  # what a web server answers, for timing
        self.web: XhttpEndpoint | None = XhttpEndpoint.parse(self, options)
        self.ssl: ssl.SSLContext | None = tls_context(
            tag, options, alpn=("h2", "http/1.1") if self.web is not None else ("http/1.1",)
        )
        self.engine: EngineAPI | None = None
        self.server: asyncio.Server | None = None

    def web_would_answer(self, received: bytearray) -> bool:
        """nginx answers at once (400) to a first byte no HTTP method starts with, and every
        Trojan and VLESS prefix starts so: waiting for the rest of such a header would be a
        tell, so the fallback gets it now."""
        return would_answer(self.decoy_model, bytes(received))

    def set_users(self, users: Users) -> None:
        """Swap the users (added or revoked while running); the engine closes revoked ones."""
        self.users = users

    async def start(self, engine: EngineAPI) -> None:
        self.engine = engine
        what = f'tls inbound "{self.tag}"'
        self.server = await listen(self._accepted, self.host, self.port, what)
        self.port = self.server.sockets[0].getsockname()[1]

    def _accepted(self) -> asyncio.BaseProtocol:
        if self.ssl is None:
            return _Detect(self)
        # our own TLS layer, not create_server(ssl=): a failed handshake then ends as nginx
        # ends it (its reply and alert are sent), and is counted; no TLS at all is seen too
        return TlsServerLayer(
            self.ssl,
            _Detect(self),
            on_handshake_failed=self._handshake_failed,
            on_plain=self._plain,
            handshake_timeout=self.header_timeout,
        )

    def _handshake_failed(self, exc: BaseException | None) -> None:
        """A TLS handshake that failed, timed out or was cut short: nobody of ours."""
        assert self.engine is not None
        self.engine.stats.probes += 1

    def _plain(self, transport: asyncio.Transport, received: bytes, since: float) -> None:
        """A first byte that starts no TLS: nginx's answer to plain HTTP on its TLS port."""
        assert self.engine is not None
        self.engine.stats.probes += 1
        serve_plain_http(transport, received, since=since, header_timeout=self.header_timeout)

    async def stop(self) -> None:
        if self.server is not None:
            self.server.close()
        self.fallback.close()
        if self.web is not None:
            self.web.close()

    def describe(self) -> str:
        kinds = [k for k, t in (("trojan", self.users.trojan), ("vless", self.users.vless)) if t]
        carriers = ["tls" if self.ssl else "tcp"] + [f"{a.name} {p}" for p, a in self.upgrades]
        if self.web is not None:
            carriers.append(f"xhttp {self.web.settings.path}")
        return f"{'+'.join(kinds) or 'no users'} over {', '.join(carriers)} {self.host}:{self.port}"


def _path(tag: str, value: Any) -> str:
    path = value.get("path") if isinstance(value, dict) else value
    if not isinstance(path, str) or not path.startswith("/"):
        raise ConfigError(f'inbound "{tag}": a WebSocket path must start with "/", like "/ws"')
    return path


def tls_context(
    tag: str, options: Mapping[str, Any], alpn: tuple[str, ...] = ("http/1.1",)
) -> ssl.SSLContext | None:
    """`security = "none"` serves plain TCP (behind a CDN or a TLS-terminating proxy);
    otherwise `cert` and `key` files."""
    if options.get("security", "tls") == "none":
        return None
    cert, key = options.get("cert"), options.get("key")
    if not cert or not key:
        raise ConfigError(
            f'inbound "{tag}": needs cert = "fullchain.pem" and key = "privkey.pem" '
            '(or security = "none" behind a TLS-terminating proxy)'
        )
    # follows the files: a certbot, Caddy or ACME renewal is served without a restart
    return ServerCertificate(cert, key, alpn=alpn).context


register("tls")(TlsInbound)
