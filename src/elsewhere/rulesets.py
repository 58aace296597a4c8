"""Split-tunnelling rule sets: text files of domain suffixes, domains, networks and cgroups that
go one way (direct, or blocked), shipped as data (`ru`: Russia's domestic direct set; `doh`:
public DNS-over-HTTPS resolvers) or written by the user. The same set feeds the proxy mode's
router and full-device mode (where networks and cgroups also become kernel rules).

    # a comment
    domain_suffix bank.example     the name and every name below it
    domain shop.example            exactly this name
    cidr 203.0.113.0/24            an IPv4 or IPv6 network
    cgroup system.slice/x.service  full-device mode only: programs in this cgroup v2 path
"""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from elsewhere.errors import ConfigError

KINDS = ("domain_suffix", "domain", "cidr", "cgroup")
SHIPPED = {"ru": "ru-direct.txt", "doh": "doh.txt"}

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


@dataclass
class RuleSet:
    name: str  # where it came from, for messages
    suffixes: list[str] = field(default_factory=list)
    domains: list[str] = field(default_factory=list)
    networks: list[Network] = field(default_factory=list)
    cgroups: list[str] = field(default_factory=list)

    def extend(self, other: RuleSet) -> None:
        self.suffixes += other.suffixes
        self.domains += other.domains
        self.networks += other.networks
        self.cgroups += other.cgroups

    def router_rules(
        self, outbound: str, ports: tuple[int, ...] = ()
    ) -> list[dict[str, Any]]:
        """Router rules (config form) sending this set's names and networks to `outbound`."""
        extra: dict[str, Any] = {"port": list(ports)} if ports else {}
        rules: list[dict[str, Any]] = []
        if self.suffixes:
            rules.append({"domain_suffix": self.suffixes, "outbound": outbound, **extra})
        if self.domains:
            rules.append({"domain": self.domains, "outbound": outbound, **extra})
        if self.networks:
            rules.append(
                {"cidr": [str(n) for n in self.networks], "outbound": outbound, **extra}
            )
        return rules


def _name(text: str, where: str) -> str:
    name = text.strip(".").lower()
    try:
        ascii_name = name.encode("idna").decode("ascii")
    except UnicodeError:
        raise ConfigError(f"{where}: {text!r} is not a domain name") from None
    if not ascii_name or any(c in ascii_name for c in "/:@ "):
        raise ConfigError(f"{where}: {text!r} is not a domain name")
    return ascii_name


def parse(text: str, name: str) -> RuleSet:
    """A rule set from its text; ConfigError names the file, the line and what is wrong."""
    rules = RuleSet(name)
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        where = f"{name}, line {number}"
        kind, _, value = line.partition(" ")
        value = value.strip()
        if kind not in KINDS:
            raise ConfigError(
                f"{where}: unknown rule {kind!r}; a line is one of {', '.join(KINDS)} "
                "and a value"
            )
        if not value or " " in value:
            raise ConfigError(f"{where}: {kind} takes exactly one value")
        if kind == "cidr":
            try:
                rules.networks.append(ipaddress.ip_network(value, strict=False))
            except ValueError:
                raise ConfigError(f"{where}: {value!r} is not a network like 10.0.0.0/8") from None
        elif kind == "cgroup":
            rules.cgroups.append(value.strip("/"))
        elif kind == "domain":
            rules.domains.append(_name(value, where))
        else:
            rules.suffixes.append(_name(value, where))
    return rules


def load(source: str) -> RuleSet:
    """A shipped set by name (`ru`, `doh`) or a file path."""
    shipped = SHIPPED.get(source)
    if shipped is not None:
        text = resources.files("elsewhere").joinpath("data", "rules", shipped).read_text("utf-8")
        return parse(text, f"rule set {source}")
    path = Path(source).expanduser()
    try:
        text = path.read_text("utf-8")
    except FileNotFoundError:
        raise ConfigError(
            f"rule set {source}: no such file (shipped sets: {', '.join(SHIPPED)})"
        ) from None
    except (OSError, UnicodeError) as exc:
        raise ConfigError(f"rule set {source}: cannot read it: {exc}") from None
    return parse(text, str(path))


def combined(sources: Sequence[str], domains: Sequence[str] = (), name: str = "direct") -> RuleSet:
    """Every set in `sources` plus single domain suffixes given on the command line."""
    result = RuleSet(name)
    for source in sources:
        result.extend(load(source))
    for domain in domains:
        result.suffixes.append(_name(domain, "--direct"))
    return result
