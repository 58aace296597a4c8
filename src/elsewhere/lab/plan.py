"""The lab's address plan and the small world it models: who sits where, which sites exist, which
of them a censor blocks by default, and which networks count as "foreign hosting".

Every address lives in 10.77.0.0/16 and exists only inside the lab's own network namespaces, so
several labs can run side by side (pytest-xdist) with the very same plan.

    client .1.2 ── .1.1 censor .2.1 ── .2.2 internet .3.1 ── .3.2 server   (10.77.x.y)
                     .200.1 │                 │ .4.1   sites and DNS on its loopback
                     .200.2 domestic .4.2 ────┘

`domestic` is a machine in a data centre inside the censored country (a VPN relay, a CDN's
edge): its address is domestic, so it is on the censor's allowlist and outside foreign hosting;
the client reaches it through the censor, and it reaches the world abroad over its own uplink,
which the censor does not sit on (a domestic DC's transit is not a mobile operator's TSPU).
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from functools import lru_cache
from typing import Literal

Role = Literal["client", "censor", "internet", "server", "domestic"]
ROLES: tuple[Role, ...] = ("client", "censor", "internet", "server", "domestic")

CLIENT = "10.77.1.2"
CENSOR_INSIDE = "10.77.1.1"  # the client's gateway
CENSOR_OUTSIDE = "10.77.2.1"
INTERNET_FROM_CENSOR = "10.77.2.2"
INTERNET_FROM_SERVER = "10.77.3.1"
SERVER = "10.77.3.2"  # the VPS abroad where a VPN server runs
PREFIX_LEN = 24
# The domestic host: its public address sits on a small link of its own inside DOMESTIC (the
# rest of that network is the domestic sites' on the internet's loopback), and its uplink.
DOMESTIC_HOST = "10.77.200.2"  # what users inside the country connect to
CENSOR_TO_DOMESTIC = "10.77.200.1"
DOMESTIC_HOST_NETWORK = "10.77.200.0/30"
DOMESTIC_HOST_PREFIX_LEN = 30
DOMESTIC_UPLINK = "10.77.4.2"  # its address towards the world: what a server abroad sees
INTERNET_FROM_DOMESTIC = "10.77.4.1"
CLIENT_NETWORK = "10.77.1.0/24"

DNS = "10.77.100.53"  # a public resolver abroad: queries to it cross the censor
SINKHOLE = "10.77.254.1"  # where forged DNS answers point; the internet says "unreachable"
SINKHOLE_NETWORK = "10.77.254.0/24"

# Networks as a censor classifies them. The server's VPS provider and the blog's hoster are
# "foreign hosting" (the Russian 16 KB rule, net4people/bbs#490, targets such providers).
FOREIGN_PLATFORMS = "10.77.100.0/24"
FOREIGN_HOSTING: tuple[str, ...] = ("10.77.3.0/24", "10.77.110.0/24")
DOMESTIC = "10.77.200.0/24"

# Addresses tunnels use between a VPN client and its server (never routed outside the lab).
WIREGUARD_NETWORK = "10.77.50.0/24"
OPENVPN_NETWORK = "10.77.51.0/24"

HostingKind = Literal["foreign-platform", "foreign-hosting", "domestic"]


@dataclass(frozen=True, slots=True)
class Site:
    """A website in the `internet` namespace, served over HTTPS (443) and plain HTTP (80)."""

    name: str
    address: str
    hosting: HostingKind
    blocked: bool  # on the default block lists (names for DNS/SNI/Host, addresses for ip_block)


SITES: tuple[Site, ...] = (
    Site("instagram.test", "10.77.100.10", "foreign-platform", blocked=True),
    Site("facebook.test", "10.77.100.11", "foreign-platform", blocked=True),
    Site("blog.test", "10.77.110.10", "foreign-hosting", blocked=False),
    Site("cdn.test", "10.77.110.20", "foreign-hosting", blocked=False),
    Site("bank.test", "10.77.200.10", "domestic", blocked=False),
)

BLOCKED_NAMES: tuple[str, ...] = tuple(site.name for site in SITES if site.blocked)
BLOCKED_ADDRESSES: tuple[str, ...] = tuple(f"{s.address}/32" for s in SITES if s.blocked)
# SNIs the Russian freeze spares on foreign hosting (big CDNs are allowlisted in practice).
FREEZE_ALLOWED_NAMES: tuple[str, ...] = ("cdn.test",)
# What an allowlist-only censor still lets through: domestic services and the resolver.
ALLOWLIST: tuple[str, ...] = (DOMESTIC, f"{DNS}/32")

SERVER_NAME = "abroad.test"  # the name on the VPN server's own certificate (TLS transports)


def site(name: str) -> Site:
    """The site called `name`; KeyError names the ones that exist."""
    for candidate in SITES:
        if candidate.name == name:
            return candidate
    raise KeyError(f"no lab site {name!r}; sites: {', '.join(s.name for s in SITES)}")


def in_networks(address: str, networks: tuple[str, ...] | list[str]) -> bool:
    """Whether `address` falls in any of `networks` (CIDR strings)."""
    ip = ipaddress.ip_address(address)
    return any(ip in _network(net) for net in networks)


@lru_cache(maxsize=256)
def _network(cidr: str) -> ipaddress.IPv4Network | ipaddress.IPv6Network:
    # The censor asks this for every queued packet; parse each CIDR once.
    return ipaddress.ip_network(cidr, strict=False)
