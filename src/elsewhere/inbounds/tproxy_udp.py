"""The transparent UDP inbound of full-device mode: datagrams nftables' `tproxy` delivered to
this port keep their original destination, which IP_RECVORIGDSTADDR hands over with each one.
Each client socket is one flow through the router; an answer goes back from a socket bound
(IP_TRANSPARENT) to the address the client sent to, so the client sees its peer answer."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, cast

from elsewhere.errors import ConfigError
from elsewhere.inbounds.base import EngineAPI, register
from elsewhere.inbounds.redirect import transparent_socket, unmapped
from elsewhere.session import Destination, Session
from elsewhere.udp import NatTable, forward

if TYPE_CHECKING:
    from elsewhere.engine import Engine
    from elsewhere.inbounds.dns import DnsInbound

log = logging.getLogger("elsewhere")

IP_RECVORIGDSTADDR = 20  # <linux/in.h>; the control message type is the same number
IPV6_RECVORIGDSTADDR = 74  # <linux/in6.h>
MAX_DATAGRAM = 65535
BATCH = 64  # datagrams read per wake-up before yielding to the loop
CMSG_SPACE = socket.CMSG_SPACE(28)  # room for a sockaddr_in6
REPLY_SOCKETS = 1024  # answer-from sockets kept; more are closed oldest first


def _address(raw: bytes) -> tuple[str, int]:
    """A sockaddr_in or sockaddr_in6 from a control message."""
    family = int.from_bytes(raw[:2], "little")
    port = int.from_bytes(raw[2:4], "big")
    if family == socket.AF_INET6:
        return unmapped(socket.inet_ntop(socket.AF_INET6, raw[8:24])), port
    return socket.inet_ntop(socket.AF_INET, raw[4:8]), port


class TproxyUdpInbound:
    def __init__(self, tag: str, options: Mapping[str, Any]) -> None:
        self.tag = tag
        listen = options.get("listen", ["127.0.0.1"])
        self.hosts = [listen] if isinstance(listen, str) else list(listen)
        self.port = int(options.get("port", 0))
        self.udp_timeout = float(options.get("udp_timeout", 60))
        self.names_tag = options.get("names")
        self.names: DnsInbound | None = None
        self.engine: Engine | None = None
        self.sockets: list[socket.socket] = []
        self.nat = NatTable(self.udp_timeout)
        self.replies: dict[tuple[str, int], socket.socket] = {}

    async def start(self, engine: EngineAPI) -> None:
        from elsewhere.inbounds.dns import DnsInbound

        # the outbounds and the other inbounds are reached through the engine itself
        self.engine = cast("Engine", engine)
        if self.names_tag is not None:
            found = [i for i in self.engine.inbounds if i.tag == self.names_tag]
            if not found or not isinstance(found[0], DnsInbound):
                raise ConfigError(f'inbound "{self.tag}": names = {self.names_tag!r} is not '
                                  "the tag of a dns inbound")
            self.names = found[0]
        loop = asyncio.get_running_loop()
        for host in self.hosts:
            family = socket.AF_INET6 if ":" in host else socket.AF_INET
            try:
                sock = transparent_socket(family, socket.SOCK_DGRAM)
            except OSError as exc:
                await self.stop()
                raise ConfigError(f'tproxy inbound "{self.tag}": IP_TRANSPARENT needs '
                                  f"CAP_NET_ADMIN ({exc.strerror or exc})") from None
            try:
                if family == socket.AF_INET6:
                    sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
                    sock.setsockopt(socket.IPPROTO_IPV6, IPV6_RECVORIGDSTADDR, 1)
                else:
                    sock.setsockopt(socket.SOL_IP, IP_RECVORIGDSTADDR, 1)
                sock.bind((host, self.port))
            except OSError as exc:
                sock.close()
                await self.stop()
                raise ConfigError(f'tproxy inbound "{self.tag}": cannot listen on '
                                  f"{host}:{self.port}: {exc.strerror or exc}") from None
            self.port = sock.getsockname()[1]
            self.sockets.append(sock)
            loop.add_reader(sock.fileno(), self._readable, sock)
        self.nat.start()

    async def stop(self) -> None:
        loop = asyncio.get_running_loop()
        for sock in self.sockets:
            with contextlib.suppress(Exception):
                loop.remove_reader(sock.fileno())
            sock.close()
        self.sockets = []
        self.nat.close()
        for reply in self.replies.values():
            reply.close()
        self.replies.clear()

    def describe(self) -> str:
        where = ", ".join(f"[{h}]" if ":" in h else h for h in self.hosts)
        return f"tproxy udp {where}:{self.port}"

    # datagrams in
    def _readable(self, sock: socket.socket) -> None:
        for _ in range(BATCH):
            try:
                data, ancillary, _flags, client = sock.recvmsg(MAX_DATAGRAM, CMSG_SPACE)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                return  # an ICMP error queued on the socket: UDP is lossy anyway
            original = None
            for level, kind, raw in ancillary:
                if (level, kind) in ((socket.SOL_IP, IP_RECVORIGDSTADDR),
                                     (socket.IPPROTO_IPV6, IPV6_RECVORIGDSTADDR)):
                    original = _address(raw)
            if original is None:
                continue  # sent to this port itself, not diverted: nothing to forward
            self._datagram(data, (unmapped(client[0]), client[1]), original)

    def _datagram(self, data: bytes, client: tuple[str, int], original: tuple[str, int]) -> None:
        engine = self.engine
        assert engine is not None
        host, port = original
        names = self.names
        session = Session(
            self.tag, Destination(host, port), "udp", source=client,
            domain=names.name(host) if names is not None else None,
        )
        route = engine.router.route(session)
        forward(engine, self.nat, (client, route), session, data,
                lambda payload, source: self._reply(payload, source, client, original))

    # answers out
    def _reply(
        self, payload: bytes, source: Destination, client: tuple[str, int],
        original: tuple[str, int],
    ) -> None:
        sender = (source.host, source.port) if source.ip is not None else original
        sock = self.replies.get(sender)
        if sock is None:
            sock = self._reply_socket(sender)
            if sock is None:
                return
        with contextlib.suppress(BlockingIOError, OSError):
            sock.sendto(payload, client)

    def _reply_socket(self, sender: tuple[str, int]) -> socket.socket | None:
        family = socket.AF_INET6 if ":" in sender[0] else socket.AF_INET
        try:
            sock = transparent_socket(family, socket.SOCK_DGRAM)
        except OSError:
            return None
        try:
            sock.bind(sender)
        except OSError as exc:
            log.debug("tproxy: cannot answer from %s:%s: %s", *sender, exc)
            sock.close()
            return None
        if len(self.replies) >= REPLY_SOCKETS:
            oldest = next(iter(self.replies))
            self.replies.pop(oldest).close()
        self.replies[sender] = sock
        return sock


register("tproxy_udp")(TproxyUdpInbound)
