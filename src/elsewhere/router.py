"""The router (DESIGN.md §2.4): ordered rules, first match wins, each naming an outbound tag.
Domains are matched as names, never resolved here: resolving on the client would leak the
name to the local (possibly poisoned, certainly watched) DNS."""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from elsewhere.errors import ConfigError
from elsewhere.policy import Network
from elsewhere.session import Session


@dataclass(frozen=True)
class Rule:
    outbound: str
    domains: frozenset[str] = frozenset()
    suffixes: frozenset[str] = frozenset()
    networks: tuple[Network, ...] = ()
    ports: frozenset[int] = frozenset()
    inbounds: frozenset[str] = frozenset()
    network: str | None = None  # "tcp" or "udp"

    def matches(self, session: Session) -> bool:
        dest = session.destination
        if self.ports and dest.port not in self.ports:
            return False
        if self.inbounds and session.inbound not in self.inbounds:
            return False
        if self.network and session.network != self.network:
            return False
        if not (self.domains or self.suffixes or self.networks):
            return True
        ip = dest.ip
        if ip is not None:
            if any(ip in net for net in self.networks):
                return True
            if session.domain is None:
                return False
            host = session.domain
        else:
            host = dest.host.lower().rstrip(".")
        if host in self.domains:
            return True
        if self.suffixes:
            # "example.com" covers itself and every name below it, label by label
            dot = -1
            while True:
                if host[dot + 1 :] in self.suffixes:
                    return True
                dot = host.find(".", dot + 1)
                if dot < 0:
                    return False
        return False


@dataclass
class Router:
    rules: Sequence[Rule]
    final: str
    outbounds: frozenset[str] = field(default_factory=frozenset)

    def route(self, session: Session) -> str:
        for rule in self.rules:
            if rule.matches(session):
                return rule.outbound
        return self.final


def _ports(values: Iterable[Any], where: str) -> frozenset[int]:
    ports: set[int] = set()
    for value in values:
        if isinstance(value, int):
            ports.add(value)
            continue
        text = str(value)
        low, sep, high = text.partition("-")
        try:
            if sep:
                ports.update(range(int(low), int(high) + 1))
            else:
                ports.add(int(text))
        except ValueError:
            raise ConfigError(
                f'{where}: port "{text}" is not a number or a range like 8000-8080'
            ) from None
    if any(not 0 < p < 65536 for p in ports):
        raise ConfigError(f"{where}: ports run from 1 to 65535")
    return frozenset(ports)


def parse_rule(options: Mapping[str, Any], index: int, outbounds: Iterable[str]) -> Rule:
    where = f"rule {index + 1}"
    known = {"outbound", "domain", "domain_suffix", "cidr", "port", "inbound", "network"}
    unknown = set(options) - known
    if unknown:
        raise ConfigError(f"{where}: unknown field {sorted(unknown)[0]!r}; use {sorted(known)}")
    outbound = options.get("outbound")
    if outbound not in set(outbounds):
        raise ConfigError(f"{where}: outbound {outbound!r} is not defined")
    try:
        networks = tuple(ipaddress.ip_network(c, strict=False) for c in options.get("cidr", ()))
    except ValueError as exc:
        raise ConfigError(f"{where}: {exc}") from exc
    network = options.get("network")
    if network not in (None, "tcp", "udp"):
        raise ConfigError(f'{where}: network must be "tcp" or "udp"')
    return Rule(
        outbound=outbound,
        domains=frozenset(d.lower().rstrip(".") for d in options.get("domain", ())),
        suffixes=frozenset(d.lower().strip(".") for d in options.get("domain_suffix", ())),
        networks=networks,
        ports=_ports(options.get("port", ()), where),
        inbounds=frozenset(options.get("inbound", ())),
        network=network,
    )
