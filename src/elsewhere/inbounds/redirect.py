"""The transparent TCP inbound of full-device mode: connections the kernel diverted to this port
(nftables `redirect`, or `tproxy` with mode = "tproxy") go where the program meant them to go.
The kernel terminates TCP; this sees ordinary streams and recovers the original destination
from the socket: SO_ORIGINAL_DST (conntrack's pre-NAT address) after a redirect, the local
address itself after TPROXY. The name the address was looked up by comes from the DNS
inbound named `names`, so rules by domain apply."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, cast

from elsewhere.errors import ConfigError
from elsewhere.inbounds.base import EngineAPI, register
from elsewhere.session import Destination, Session
from elsewhere.transports.layer import Pending
from elsewhere.transports.tcp import BACKLOG, listening_port

if TYPE_CHECKING:
    from elsewhere.engine import Engine
    from elsewhere.inbounds.dns import DnsInbound

SO_ORIGINAL_DST = 80  # <linux/netfilter_ipv4.h>
IP6T_SO_ORIGINAL_DST = 80  # <linux/netfilter_ipv6/ip6_tables.h>
IP_TRANSPARENT = 19  # <linux/in.h>
IPV6_TRANSPARENT = 75  # <linux/in6.h>


def original_destination(sock: Any) -> tuple[str, int]:
    """Where a redirected connection was headed (conntrack remembers it for NAT)."""
    if sock.family == socket.AF_INET6:
        raw = sock.getsockopt(socket.IPPROTO_IPV6, IP6T_SO_ORIGINAL_DST, 28)  # sockaddr_in6
        host = socket.inet_ntop(socket.AF_INET6, raw[8:24])
    else:
        raw = sock.getsockopt(socket.SOL_IP, SO_ORIGINAL_DST, 16)  # sockaddr_in
        host = socket.inet_ntop(socket.AF_INET, raw[4:8])
    return unmapped(host), int.from_bytes(raw[2:4], "big")


def unmapped(host: str) -> str:
    return host[7:] if host.startswith("::ffff:") and "." in host else host


def transparent_socket(family: int, kind: int) -> socket.socket:
    """A socket that may own addresses not of this machine (what TPROXY hands over)."""
    sock = socket.socket(family, kind)
    try:
        if family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, IPV6_TRANSPARENT, 1)
        else:
            sock.setsockopt(socket.SOL_IP, IP_TRANSPARENT, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setblocking(False)
    except BaseException:
        sock.close()
        raise
    return sock


class _Accept(Pending):
    def __init__(self, inbound: RedirectInbound) -> None:
        super().__init__()
        self.inbound = inbound

    def connection_made(self, base: asyncio.BaseTransport) -> None:
        transport = cast(asyncio.Transport, base)
        transport.pause_reading()
        inbound = self.inbound
        engine = inbound.engine
        assert engine is not None
        sock = transport.get_extra_info("socket")
        local = transport.get_extra_info("sockname")
        try:
            if inbound.mode == "tproxy":
                host, port = unmapped(local[0]), int(local[1])
            else:
                host, port = original_destination(sock)
        except OSError:
            transport.close()  # not diverted by the kernel: someone dialled this port itself
            return
        if port == inbound.port and host in inbound.own_hosts:
            transport.close()  # a connection to this very port: relaying it would loop
            return
        names = inbound.names
        session = Session(
            inbound.tag,
            Destination(host, port),
            "tcp",
            source=transport.get_extra_info("peername"),
            domain=names.name(host) if names is not None else None,
        )
        engine.spawn(engine.serve_tcp(session, transport))


class RedirectInbound:
    def __init__(self, tag: str, options: Mapping[str, Any]) -> None:
        self.tag = tag
        self.hosts = list(options.get("listen", ["127.0.0.1"]))
        if isinstance(options.get("listen"), str):
            self.hosts = [str(options["listen"])]
        self.port = int(options.get("port", 0))
        self.mode = str(options.get("mode", "redirect"))
        if self.mode not in ("redirect", "tproxy"):
            raise ConfigError(f'inbound "{tag}": mode must be "redirect" or "tproxy"')
        self.names_tag = options.get("names")
        self.names: DnsInbound | None = None
        self.own_hosts = {"127.0.0.1", "::1", "0.0.0.0", "::", *self.hosts}
        self.engine: Engine | None = None
        self.servers: list[asyncio.Server] = []

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
        what = f'redirect inbound "{self.tag}"'
        for host in self.hosts:
            family = socket.AF_INET6 if ":" in host else socket.AF_INET
            sock = (transparent_socket(family, socket.SOCK_STREAM) if self.mode == "tproxy"
                    else socket.socket(family, socket.SOCK_STREAM))
            try:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                if family == socket.AF_INET6:
                    sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
                sock.bind((host, self.port))
                sock.listen(BACKLOG)
                sock.setblocking(False)
                server = await loop.create_server(lambda: _Accept(self), sock=sock)
            except OSError as exc:
                sock.close()
                await self.stop()
                raise ConfigError(f"{what}: cannot listen on {host}:{self.port}: "
                                  f"{exc.strerror or exc}") from None
            self.servers.append(server)
            self.port = listening_port(server)  # the other families take the same port

    async def stop(self) -> None:
        for server in self.servers:
            server.close()
        self.servers = []

    def describe(self) -> str:
        where = ", ".join(f"[{h}]" if ":" in h else h for h in self.hosts)
        return f"{self.mode} tcp {where}:{self.port}"


register("redirect")(RedirectInbound)
