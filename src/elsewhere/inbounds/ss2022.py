"""The Shadowsocks 2022 server (SIP022, with SIP022-2 identity headers for many users on one
port): TCP and UDP on one port, users found in O(1) by the identity header, users added or
revoked while running, and the same stealth reaction as the AEAD server to anything else."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Hashable, Mapping
from typing import TYPE_CHECKING, Any, cast

from elsewhere.codecs.ss2022 import (
    IDENTITY_HEADER_SIZE,
    REQUEST_FIXED_HEADER_SIZE,
    TAG_SIZE,
    Method,
    Request,
    SaltPool,
    TcpServer,
    UserTable,
    decode_psk,
    get_method,
)
from elsewhere.codecs.ss2022_udp import UDP_SESSION_TIMEOUT, UdpServer
from elsewhere.errors import ConfigError, ProtocolError
from elsewhere.inbounds.base import register
from elsewhere.inbounds.stealth import Handshake, unanswered
from elsewhere.session import Destination, Session
from elsewhere.transports.layer import CryptoLayer
from elsewhere.transports.tcp import listen_pair, listening_port
from elsewhere.udp import NatEntry, NatTable, forward

if TYPE_CHECKING:
    from elsewhere.inbounds.base import EngineAPI

log = logging.getLogger("elsewhere.ss2022")

DEFAULT_PORT = 8388
SINGLE_USER_ID = "default"  # the account name of a single-key server's one user

Clock = Callable[[], float]


def payloads(events: list[Any]) -> bytes:
    """The bytes carried by a codec's Data (and Request) events, in order."""
    if len(events) == 1:
        return cast(bytes, events[0].payload)
    return b"".join(event.payload for event in events)


def parse_users(tag: str, method: Method, users: Any) -> dict[str, bytes]:
    """`users = [{id = "alice", psk = "base64"}, ...]` (or a mapping id -> psk) as raw keys;
    ConfigError naming the user on a missing or malformed key."""
    if isinstance(users, Mapping):
        users = [{"id": name, "psk": psk} for name, psk in users.items()]
    out: dict[str, bytes] = {}
    for index, entry in enumerate(users):
        if not isinstance(entry, Mapping) or "id" not in entry or "psk" not in entry:
            raise ConfigError(f'inbound "{tag}": user {index + 1} needs id and psk')
        name = str(entry["id"])
        psk = entry["psk"]
        try:
            out[name] = decode_psk(method, psk) if isinstance(psk, str) else bytes(psk)
        except ConfigError as exc:
            raise ConfigError(f'inbound "{tag}", user "{name}": {exc}') from None
    return out


class _Handshake(Handshake):
    """From accept until the request header is read (or the client is found out)."""

    def __init__(self, inbound: Ss2022Inbound) -> None:
        super().__init__(cast("EngineAPI", inbound.engine))
        self.inbound = inbound
        self.codec = TcpServer(
            inbound.method, inbound.psk, salt_pool=inbound.salts, users=inbound.users
        )
        self.first = True

    def read(self, data: bytes) -> None:
        # SIP022 §3.1.2: a client sends salt and headers in one write, so the salt and the fixed
        # header arrive in the first read; less is a prober trickling bytes.
        if self.first and len(data) < self.inbound.first_read:
            raise ProtocolError("salt and fixed header not in the first read")
        self.first = False
        try:
            events = self.codec.feed(data, now=self.inbound.clock())
        except ProtocolError as exc:
            log.debug("ss2022 handshake refused: %s", exc)
            raise
        if events:
            request = events[0]
            assert isinstance(request, Request)
            self._start(request, payloads(events))

    def _start(self, request: Request, initial: bytes) -> None:
        inbound, codec = self.inbound, self.codec
        user = request.user if request.user is not None else inbound.single_user
        clock = inbound.clock

        def encode(data: bytes) -> bytes:
            # the first call carries the response header with the first data (SIP022 §3.1.3)
            return codec.send(data, now=clock())  # type: ignore[return-value]

        def decode(data: bytes) -> bytes:
            return payloads(codec.feed(data, now=clock())) if data else b""

        self.proven(
            inbound.tag, user, request.destination, lambda: CryptoLayer(encode, decode), initial
        )


class _Datagrams(asyncio.DatagramProtocol):
    """SIP022 UDP: sessions keyed on the client session ID, replies to the address the
    session's last valid packet came from."""

    def __init__(self, inbound: Ss2022Inbound) -> None:
        self.inbound = inbound
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.DatagramTransport, transport)

    def error_received(self, exc: Exception) -> None:
        return None

    def datagram_received(self, data: bytes, addr: tuple[Any, ...]) -> None:
        inbound = self.inbound
        engine = inbound.engine
        assert engine is not None
        try:
            packet = inbound.udp.receive(data, now=inbound.clock())
        except ProtocolError:
            unanswered(engine)
            return
        user = packet.user if packet.user is not None else inbound.single_user
        if not engine.admit(user):
            return
        session_id = packet.session_id
        inbound.udp_clients[session_id] = (addr[:2], user)
        session = Session(inbound.tag, packet.destination, "udp", user=user, source=addr[:2])
        forward(engine, inbound.nat, session_id, session, packet.payload, self._replier(session_id))

    def _replier(self, session_id: bytes) -> Callable[[bytes, Destination], None]:
        inbound = self.inbound

        def reply(payload: bytes, source: Destination) -> None:
            transport = self.transport
            client = inbound.udp_clients.get(session_id)
            if transport is None or transport.is_closing() or client is None:
                return
            try:
                packet = inbound.udp.send(session_id, source, payload, now=inbound.clock())
            except (KeyError, ProtocolError):
                return  # the session expired or was revoked meanwhile
            transport.sendto(packet, client[0])

        return reply


class Ss2022Inbound:
    """Options: `method`, `psk` (the key; with `users`, the identity PSK), `users` (a list of
    `{id, psk}` for many users on one port), `listen`, `port`, `udp`, `udp_timeout`, and
    `clock_offset` (seconds added to this machine's clock; for tests of skewed clocks)."""

    def __init__(self, tag: str, options: Mapping[str, Any]) -> None:
        self.tag = tag
        self.host = str(options.get("listen", "0.0.0.0"))
        self.port = int(options.get("port", DEFAULT_PORT))
        self.method = get_method(str(options.get("method", "")))
        if "psk" not in options:
            raise ConfigError(
                f'inbound "{tag}": needs psk = "…" (a base64 key; `elsewhere keys add` makes one)'
            )
        try:
            self.psk = decode_psk(self.method, str(options["psk"]))
        except ConfigError as exc:
            raise ConfigError(f'inbound "{tag}": {exc}') from None
        self.users: UserTable | None = None
        if "users" in options:
            self.users = UserTable(self.method)
            for name, key in parse_users(tag, self.method, options["users"]).items():
                self.users.add(name, key)
        self.single_user = str(options.get("id", SINGLE_USER_ID))
        offset = float(options.get("clock_offset", 0.0))
        self.clock: Clock = (lambda: time.time() + offset) if offset else time.time
        # salt and fixed header (with the identity header, when users are served) in one read
        identity = IDENTITY_HEADER_SIZE if self.users is not None else 0
        self.first_read = self.method.salt_size + identity + REQUEST_FIXED_HEADER_SIZE + TAG_SIZE
        self.salts = SaltPool()
        self.udp_enabled = bool(options.get("udp", True))
        self.udp_timeout = float(options.get("udp_timeout", UDP_SESSION_TIMEOUT))
        self.udp = UdpServer(self.method, self.psk, users=self.users)
        self.nat = NatTable(self.udp_timeout)
        self.nat.on_expire = self._nat_expired
        self.udp_clients: dict[bytes, tuple[tuple[Any, ...], str]] = {}
        self.engine: EngineAPI | None = None
        self.server: asyncio.Server | None = None
        self.datagrams: asyncio.DatagramTransport | None = None
        self._sweep: asyncio.TimerHandle | None = None

    # users
    def set_users(self, users: Mapping[str, str | bytes]) -> set[str]:
        """Replace the users (id -> uPSK, base64 or raw) while running: new connections see the
        new table at once, and every open TCP relay and UDP session of a user who is gone, or
        whose key changed, is closed. Returns the ids of those users."""
        if self.users is None:
            raise ConfigError(
                f'inbound "{self.tag}" serves one key; give it users = [...] to serve many'
            )
        wanted = parse_users(self.tag, self.method, users)
        check = UserTable(self.method)  # a duplicate key fails here, before the live table
        for name, key in wanted.items():
            check.add(name, key)
        current = {user.name: user.psk for user in self.users}
        gone = {name for name, key in current.items() if wanted.get(name) != key}
        for name in gone:
            self.users.remove(name)
        for name, key in wanted.items():
            if name not in self.users:
                self.users.add(name, key)
        for name in gone:
            self._close_user(name)
        return gone

    def _close_user(self, name: str) -> None:
        closed = self.engine.close_user(name) if self.engine is not None else 0
        sessions = [sid for sid, (_, user) in self.udp_clients.items() if user == name]
        for session_id in sessions:
            self._forget(session_id)
            self.nat.remove(session_id)
        log.info(
            "user %s revoked: closed %d connections, %d UDP sessions", name, closed, len(sessions)
        )

    # UDP sessions
    def _forget(self, session_id: bytes) -> None:
        self.udp.close(session_id)
        self.udp_clients.pop(session_id, None)

    def _nat_expired(self, key: Hashable, _entry: NatEntry) -> None:
        self._forget(cast(bytes, key))

    def _expire_sessions(self) -> None:
        """Sessions the codec saw nothing of for udp_timeout (also those that never got a NAT
        entry, e.g. a user over its limit) are forgotten, with their NAT entries."""
        for session_id in self.udp.expire(self.clock(), self.udp_timeout):
            self.udp_clients.pop(session_id, None)
            self.nat.remove(session_id)
        loop = asyncio.get_running_loop()
        self._sweep = loop.call_later(self.udp_timeout / 4, self._expire_sessions)

    # lifecycle
    async def start(self, engine: EngineAPI) -> None:
        self.engine = engine
        what = f'ss2022 inbound "{self.tag}"'
        self.server, self.datagrams = await listen_pair(
            lambda: _Handshake(self),
            (lambda: _Datagrams(self)) if self.udp_enabled else None,
            self.host,
            self.port,
            what,
        )
        assert self.server is not None
        self.port = listening_port(self.server)
        if self.datagrams is not None:
            self.nat.start()
            loop = asyncio.get_running_loop()
            self._sweep = loop.call_later(self.udp_timeout / 4, self._expire_sessions)

    async def stop(self) -> None:
        if self.server is not None:
            self.server.close()
        if self.datagrams is not None:
            self.datagrams.close()
        if self._sweep is not None:
            self._sweep.cancel()
            self._sweep = None
        self.nat.close()

    def describe(self) -> str:
        if self.users is None:
            return f"ss2022 {self.host}:{self.port} (1 key)"
        count = len(self.users)
        return f"ss2022 {self.host}:{self.port} ({count} user{'' if count == 1 else 's'})"


register("ss2022")(Ss2022Inbound)
