"""The direct outbound: connect to the destination from this machine, after checking every
address it resolves to against the address policy (and connecting to the checked address,
so that a second DNS answer cannot slip past it)."""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from collections.abc import Mapping
from typing import Any, cast

from elsewhere.errors import ConfigError, PolicyError
from elsewhere.outbounds.base import DatagramReceiver, register
from elsewhere.policy import AddressPolicy
from elsewhere.session import Destination, IPAddress, Session
from elsewhere.transports.layer import Pending
from elsewhere.transports.tcp import connect_tcp, marked_socket

CONNECT_TIMEOUT = 10.0
VERDICTS = 4096  # policy verdicts kept per outbound (emptied when full): the hosts reached most

Address = tuple[int, tuple[Any, ...]]  # (family, sockaddr)
Verdict = tuple[int, str] | None  # an IP literal's (family, address), None when refused
NAME: Verdict = (-1, "")  # not an IP literal: a name to resolve


async def resolve(host: str, port: int, kind: int) -> list[tuple[int, tuple[Any, ...]]]:
    """(family, sockaddr) for every address of `host`, IP literals without a lookup."""
    loop = asyncio.get_running_loop()
    infos = await loop.getaddrinfo(host, port, type=kind)
    return [(family, addr) for family, _, _, _, addr in infos]


class DirectOutbound:
    def __init__(self, tag: str, policy: AddressPolicy, mark: int = 0) -> None:
        self.tag = tag
        self.policy = policy
        self.mark = mark  # SO_MARK on every socket (full-device mode lets these out)
        self.verdicts: dict[str, Verdict] = {}

    def verdict(self, host: str) -> Verdict:
        """What the policy says about `host` as an IP literal, or NAME. Kept per host string:
        parsing and checking an address costs more Python calls than the rest of a
        connection's setup here, and the policy never changes while the outbound lives."""
        verdict = self.verdicts.get(host, NAME)  # NAME is never kept: here it means "not yet"
        if verdict is not NAME:
            return verdict
        try:
            ip = ipaddress.ip_address(host)
        except ValueError:
            return NAME  # names are resolved each time anyway: nothing to keep
        verdict = None
        if self.policy.permits(ip):
            verdict = (socket.AF_INET6 if ip.version == 6 else socket.AF_INET, str(ip))
        if len(self.verdicts) >= VERDICTS:
            self.verdicts.clear()
        self.verdicts[host] = verdict
        return verdict

    def literal_address(self, dest: Destination) -> list[Address] | None:
        """An IP literal needs no lookup (a thread-pool round trip): its checked address, or
        None for a name; PolicyError when the policy refuses it."""
        verdict = self.verdict(dest.host)
        if verdict is NAME:
            return None
        if verdict is None:
            raise PolicyError(f"destination {dest} is a private or special address")
        return [(verdict[0], (verdict[1], dest.port))]

    async def checked_addresses(self, dest: Destination, kind: int) -> list[Address]:
        literal = self.literal_address(dest)
        if literal is not None:
            return literal
        try:
            addresses = await resolve(dest.host, dest.port, kind)
        except socket.gaierror as exc:
            raise OSError(f"cannot resolve {dest.host}") from exc
        allowed = [(f, a) for f, a in addresses if self.policy.permits(_ip(a[0]))]
        if not allowed:
            raise PolicyError(f"destination {dest} is a private or special address")
        return allowed

    async def open_tcp(self, session: Session) -> asyncio.Transport:
        loop = asyncio.get_running_loop()
        dest = session.destination
        last: Exception | None = None
        addresses = self.literal_address(dest)
        if addresses is None:
            addresses = await self.checked_addresses(dest, socket.SOCK_STREAM)
        for family, addr in addresses:
            try:
                transport, _ = await connect_tcp(
                    loop, Pending, addr[0], addr[1], CONNECT_TIMEOUT, family=family,
                    mark=self.mark,
                )
                return transport
            except (OSError, TimeoutError) as exc:
                last = exc
        raise last if last is not None else OSError(f"cannot connect to {dest}")

    async def open_udp(self, session: Session, receive: DatagramReceiver) -> DirectDatagramFlow:
        loop = asyncio.get_running_loop()
        family = socket.AF_INET6 if ":" in session.destination.host else socket.AF_INET
        flow = DirectDatagramFlow(self, receive)
        if self.mark:
            sock = marked_socket(family, socket.SOCK_DGRAM, self.mark)
            try:
                sock.bind(("::" if family == socket.AF_INET6 else "0.0.0.0", 0))
                await loop.create_datagram_endpoint(lambda: flow, sock=sock)
            except BaseException:
                sock.close()
                raise
            return flow
        await loop.create_datagram_endpoint(
            lambda: flow, local_addr=("::" if family == socket.AF_INET6 else "0.0.0.0", 0)
        )
        return flow

    async def close(self) -> None:
        return None


class DirectDatagramFlow(asyncio.DatagramProtocol):
    """One UDP socket of ours per flow; datagrams to a domain are resolved (and checked) once
    per name."""

    def __init__(self, outbound: DirectOutbound, receive: DatagramReceiver) -> None:
        self.outbound = outbound
        self.receive = receive
        self.transport: asyncio.DatagramTransport | None = None
        self.resolved: dict[Destination, tuple[Any, ...]] = {}
        self.pending: dict[Destination, list[bytes]] = {}

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports do not subclass asyncio's, so no isinstance here
        self.transport = cast("asyncio.DatagramTransport", transport)

    def datagram_received(self, data: bytes, addr: tuple[Any, ...]) -> None:
        host = addr[0]
        if host.startswith("::ffff:"):
            host = host[7:]
        self.receive(data, Destination(host, addr[1]))

    def error_received(self, exc: Exception) -> None:
        return None  # ICMP errors: UDP is lossy anyway

    def send(self, payload: bytes, destination: Destination) -> None:
        if self.transport is None or self.transport.is_closing():
            return
        addr = self.resolved.get(destination)
        if addr is not None:
            self.transport.sendto(payload, addr)
            return
        waiting = self.pending.get(destination)
        if waiting is not None:
            waiting.append(payload)
            return
        self.pending[destination] = [payload]
        asyncio.get_running_loop().create_task(self._resolve(destination))

    async def _resolve(self, destination: Destination) -> None:
        waiting = self.pending.get(destination, [])
        try:
            addresses = await self.outbound.checked_addresses(destination, socket.SOCK_DGRAM)
        except (OSError, PolicyError):
            self.pending.pop(destination, None)
            return
        family = self.transport.get_extra_info("socket").family if self.transport else None
        addr = next((a for f, a in addresses if f == family), None)
        if addr is None and family == socket.AF_INET6:
            v4 = next((a for f, a in addresses if f == socket.AF_INET), None)
            addr = ("::ffff:" + v4[0], v4[1]) if v4 else None
        self.pending.pop(destination, None)
        if addr is None or self.transport is None or self.transport.is_closing():
            return
        if len(self.resolved) > 1024:
            self.resolved.clear()
        self.resolved[destination] = addr
        for payload in waiting:
            self.transport.sendto(payload, addr)

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()


def _ip(text: str) -> IPAddress:
    return ipaddress.ip_address(text.split("%", 1)[0])


@register("direct")
def _make(tag: str, options: Mapping[str, Any]) -> DirectOutbound:
    private = options.get("private", "deny")
    if private not in ("deny", "allow"):
        raise ConfigError(f'outbound "{tag}": private must be "deny" or "allow", not {private!r}')
    try:
        policy = AddressPolicy.from_config(private, options.get("allow", ()))
    except ValueError as exc:
        raise ConfigError(f'outbound "{tag}": {exc}') from exc
    mark = options.get("mark", 0)
    if not isinstance(mark, int) or not 0 <= mark < 1 << 32:
        raise ConfigError(f'outbound "{tag}": mark must be a number from 0 to 2^32-1')
    return DirectOutbound(tag, policy, mark)
