"""Values that cross layers: where a connection goes and who asked for it."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from typing import Literal

Network = Literal["tcp", "udp"]
IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


@dataclass(frozen=True, slots=True)
class Destination:
    """A host (domain name or IP literal, never resolved by the client) and a port."""

    host: str
    port: int

    @property
    def ip(self) -> IPAddress | None:
        """The host as an IP address, or None when it is a domain name."""
        try:
            return ipaddress.ip_address(self.host)
        except ValueError:
            return None

    def __str__(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"


@dataclass(frozen=True, slots=True)
class Session:
    """One proxied connection or UDP flow as the router sees it."""

    inbound: str
    destination: Destination
    network: Network = "tcp"
    user: str | None = None
    source: tuple[str, int] | None = None
    # the name an IP destination was looked up by (full-device mode learns it from the DNS
    # answers it passed on), so that rules by domain still apply to it
    domain: str | None = None
