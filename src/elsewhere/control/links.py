"""Access keys as share links, parsed into one value, AccessKey, that the CLI builds a client
from. Each link scheme registers itself (register_scheme: a parser, a formatter and the outbound
a client makes of a key) beside its protocol: links_ss.py (`ss://`), links_tls.py (`trojan://`,
`vless://`); elsewhere.protocols loads them all."""

from __future__ import annotations

import ipaddress
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any
from urllib.parse import unquote

from elsewhere.errors import ConfigError
from elsewhere.session import Destination

MAX_PORT = 65535


def _no_params() -> Mapping[str, str]:
    return MappingProxyType({})


@dataclass(frozen=True)
class AccessKey:
    """Everything a client needs to reach one server as one user.

    `protocol` is the link scheme ("ss", "trojan", "vless", ...). `method` is the
    Shadowsocks cipher ("" where a protocol has none); `password` is the secret (a Trojan
    password or a VLESS UUID for those). `prefix` is Outline's salt prefix, `plugin` SIP003's.
    `extra` keeps every other query parameter verbatim (a VLESS key's `sni`, `path`, ...)."""

    protocol: str
    method: str
    password: str
    host: str
    port: int
    name: str = ""
    prefix: bytes = b""
    plugin: str = ""
    extra: Mapping[str, str] = field(default_factory=_no_params, hash=False)

    def __post_init__(self) -> None:
        if not 0 < self.port <= MAX_PORT:
            raise ConfigError(f"access key port {self.port} is not a number from 1 to {MAX_PORT}")
        if not self.host:
            raise ConfigError("access key has no host")
        object.__setattr__(self, "extra", MappingProxyType(dict(self.extra)))

    @property
    def destination(self) -> Destination:
        return Destination(self.host, self.port)

    def __repr__(self) -> str:
        # Secrets never reach logs (DESIGN.md §4), and reprs end up in logs.
        return (
            f"AccessKey(protocol={self.protocol!r}, method={self.method!r}, password='***', "
            f"host={self.host!r}, port={self.port}, name={self.name!r})"
        )


# --- shared by the schemes ---------------------------------------------------------------


def split_hostport(hostport: str, *, legacy: bool, shape: str) -> tuple[str, int]:
    """`host:port` or `[v6]:port` of a link; `legacy` allows a bare IPv6 host (old ss://).
    `shape` is what a valid link looks like, for the error line."""
    if hostport.startswith("["):
        host, bracket, rest = hostport[1:].partition("]")
        if not bracket:
            raise ConfigError(f"access key IPv6 host has no closing ']': expected {shape}")
        if not rest.startswith(":"):
            raise ConfigError(f"access key has no port: expected {shape}")
        port_text = rest[1:]
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            raise ConfigError(f"access key host [{host}] is not an IPv6 address") from None
    else:
        host, colon, port_text = hostport.rpartition(":")
        if not colon:
            raise ConfigError(f"access key has no port: expected {shape}")
        host = unquote(host)
        if ":" in host and not (legacy and _is_ipv6(host)):
            raise ConfigError("access key IPv6 host must be in brackets, like …@[2001:db8::1]:port")
    if not host:
        raise ConfigError(f"access key has no host: expected {shape}")
    if any(c.isspace() or not c.isprintable() or c in "/?#@[]" for c in host):
        raise ConfigError(f"access key host {host!r} is not a host name or IP address")
    if not (port_text.isascii() and port_text.isdigit() and 0 < int(port_text) <= MAX_PORT):
        raise ConfigError(f"access key port {port_text!r} is not a number from 1 to {MAX_PORT}")
    return host, int(port_text)


def _is_ipv6(text: str) -> bool:
    try:
        ipaddress.IPv6Address(text)
    except ValueError:
        return False
    return True


@dataclass(frozen=True, slots=True)
class Scheme:
    """How one link scheme is read and written."""

    parse: Callable[[str], AccessKey]
    format: Callable[[AccessKey], str]
    outbound: Callable[[AccessKey], Mapping[str, Any]]  # the client's outbound config (no tag)
    shape: str  # what a valid link looks like, for error lines


SCHEMES: dict[str, Scheme] = {}


def register_scheme(name: str, scheme: Scheme) -> Scheme:
    SCHEMES[name] = scheme
    return scheme


def schemes() -> dict[str, Scheme]:
    """Every registered scheme (loading the protocols that register them)."""
    from elsewhere.protocols.base import load_all

    load_all()
    return SCHEMES


def parse_access_key(text: str) -> AccessKey:
    """Read an access key a person pasted. Raises ConfigError with one line saying what is
    wrong and what a valid key looks like; the message never contains the secret."""
    text = text.strip()
    known = schemes()
    supported = ", ".join(f"{name}://" for name in known)
    scheme, sep, _ = text.partition("://")
    if not sep or not scheme:
        shape = next(iter(known.values())).shape if known else "scheme://…"
        raise ConfigError(f"this is not an access key: expected {shape}")
    handler = known.get(scheme.lower())
    if handler is None:
        shown = scheme if len(scheme) <= 20 else scheme[:20] + "…"
        raise ConfigError(f"access keys of type {shown}:// are not supported: use {supported}")
    return handler.parse(text)


def format_access_key(key: AccessKey) -> str:
    """The share link of a key, in its protocol's scheme."""
    return _scheme_of(key).format(key)


def outbound_options(key: AccessKey) -> Mapping[str, Any]:
    """The outbound config (without its tag) a client builds from `key`."""
    return _scheme_of(key).outbound(key)


def _scheme_of(key: AccessKey) -> Scheme:
    handler = schemes().get(key.protocol)
    if handler is None:
        raise ConfigError(f"no link format for protocol {key.protocol!r}")
    return handler
