"""Which addresses a server may connect to on a user's behalf (DESIGN.md §4 Safety): never the
server's own loopback, private networks, link-local (cloud metadata lives there) or other
special ranges, unless the operator allows them."""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from dataclasses import dataclass

from elsewhere.session import IPAddress

Network = ipaddress.IPv4Network | ipaddress.IPv6Network

DENIED: tuple[Network, ...] = tuple(
    ipaddress.ip_network(n)
    for n in (
        "0.0.0.0/8",  # "this network"
        "10.0.0.0/8",  # RFC 1918
        "100.64.0.0/10",  # carrier-grade NAT, RFC 6598
        "127.0.0.0/8",  # loopback
        "169.254.0.0/16",  # link-local; 169.254.169.254 is the cloud metadata service
        "172.16.0.0/12",  # RFC 1918
        "192.0.0.0/24",  # IETF protocol assignments
        "192.168.0.0/16",  # RFC 1918
        "198.18.0.0/15",  # benchmarking
        "224.0.0.0/4",  # multicast
        "240.0.0.0/4",  # reserved, broadcast
        "::/128",
        "::1/128",
        "64:ff9b:1::/48",  # local-use NAT64
        "fc00::/7",  # unique local
        "fe80::/10",  # link-local
        "ff00::/8",  # multicast
        "fd00:ec2::254/128",  # AWS metadata over IPv6 (inside fc00::/7, named for clarity)
    )
)


@dataclass(frozen=True)
class AddressPolicy:
    """`allow` wins over `deny`: an operator can open one private range for a backend."""

    deny: tuple[Network, ...] = DENIED
    allow: tuple[Network, ...] = ()

    @classmethod
    def permissive(cls) -> AddressPolicy:
        return cls(deny=())

    @classmethod
    def from_config(cls, private: str, allow: Iterable[str] = ()) -> AddressPolicy:
        nets = tuple(ipaddress.ip_network(a, strict=False) for a in allow)
        return cls(deny=DENIED if private == "deny" else (), allow=nets)

    def permits(self, ip: IPAddress) -> bool:
        if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
            ip = ip.ipv4_mapped
        if any(ip in net for net in self.allow):
            return True
        return not any(ip in net for net in self.deny)
