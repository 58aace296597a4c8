"""How a client reaches its server, as share links and v2ray's streamSettings say it: the stack
of transports (bottom first) and the options its layers read. transports.registry lists the
layers; transports.dial opens the stack."""

from __future__ import annotations

import functools
import ssl
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from elsewhere.errors import ConfigError
from elsewhere.transports.registry import TRANSPORTS, load_all, named
from elsewhere.transports.tls import client_context

# Share links' `fp` (Xray's uTLS preset names) -> curl-impersonate targets. uTLS's randomised
# presets have no curl counterpart: they go out as the most common browser instead.
FINGERPRINTS = {
    "chrome": "chrome",
    "firefox": "firefox",
    "safari": "safari",
    "ios": "safari_ios",
    "android": "chrome_android",
    "edge": "edge",
    "360": "chrome",
    "qq": "chrome",
    "random": "chrome",
    "randomized": "chrome",
    "randomizednoalpn": "chrome",
}
STACK_SEPARATOR = ">"


def _no_options() -> Mapping[str, Any]:
    return MappingProxyType({})


@dataclass(frozen=True)
class StreamSettings:
    """The stack and its common options. `security` and `network` are the share-link
    parameters (`security=tls`, `type=ws`) the stack is derived from unless `layers` names it
    outright; `options` keeps every outbound option verbatim for layers with options of their
    own (see transports.registry)."""

    security: str = "tls"  # "tls" or "none" (or a registered security layer)
    sni: str | None = None
    alpn: tuple[str, ...] = ("http/1.1",)
    insecure: bool = False  # no chain check (only with a pin, or in tests)
    pin: str | None = None  # hex SHA-256 of the server certificate's DER (Xray's "pcs")
    network: str = "tcp"  # "tcp", "ws" or "httpupgrade" (or a registered network layer)
    path: str = "/"
    host: str | None = None  # HTTP Host for ws/httpupgrade (defaults to the SNI or server)
    fingerprint: str | None = None  # `fp`: a browser whose TLS hello ws goes out with (curl_cffi)
    layers: tuple[str, ...] = ()  # the stack as a config gave it; () derives it
    options: Mapping[str, Any] = field(default_factory=_no_options, hash=False, compare=False)

    @property
    def stack(self) -> tuple[str, ...]:
        """The transports to open, bottom first: `tcp > tls > ws`."""
        if self.layers:
            return self.layers
        layers = ["tcp"]
        if self.security != "none":
            layers.append(self.security)
        if self.network != "tcp":
            layers.append(self.network)
        return tuple(layers)

    @classmethod
    def from_options(cls, tag: str, options: Mapping[str, Any]) -> StreamSettings:
        load_all()
        networks = ("tcp", *(n for n in named("network") if n != "tcp"))
        securities = ("none", *named("security"))
        network = options.get("network", options.get("type", "tcp"))
        if network not in networks:
            raise ConfigError(f'outbound "{tag}": network must be {_either(networks)}')
        security = options.get("security", "tls")
        if security not in securities:
            raise ConfigError(
                f'outbound "{tag}": security must be {_either([f"{s!r}" for s in securities])}'
            )
        alpn = options.get("alpn", ("http/1.1",))
        if isinstance(alpn, str):
            alpn = tuple(a for a in alpn.split(",") if a)
        fingerprint = str(options.get("fp") or "").lower() or None
        if fingerprint == "none":
            fingerprint = None
        if fingerprint is not None and fingerprint not in FINGERPRINTS:
            raise ConfigError(
                f'outbound "{tag}": fp {fingerprint!r} is not a browser fingerprint; '
                f"use one of {', '.join(FINGERPRINTS)}"
            )
        return cls(
            security=security,
            sni=options.get("sni"),
            alpn=tuple(alpn),
            insecure=bool(options.get("insecure", False)),
            pin=options.get("pin"),
            network=network,
            path=options.get("path", "/"),
            host=options.get("host"),
            fingerprint=fingerprint,
            layers=_stack(tag, options.get("stack")),
            options=MappingProxyType(dict(options)),
        )

    def context(self) -> ssl.SSLContext:
        """Pinned (self-signed servers: the handshake fails on another certificate), verified
        against the system's CAs, or, when a person asked for it, not verified at all. Made
        once per settings: loading the CA store costs ~18 ms, too much per connection."""
        return _context(self.insecure, self.pin, self.alpn)


def _either(names: Any) -> str:
    names = list(names)
    return ", ".join(names[:-1]) + f" or {names[-1]}" if len(names) > 1 else names[0]


def _stack(tag: str, value: Any) -> tuple[str, ...]:
    """`stack = "tcp > tls > ws"` (or a list of names) from a config; () when not given."""
    if value is None:
        return ()
    parts = value.split(STACK_SEPARATOR) if isinstance(value, str) else value
    if not isinstance(parts, list | tuple) or not all(isinstance(p, str) for p in parts):
        raise ConfigError(f'outbound "{tag}": stack must be like "tcp > tls > ws"')
    names = tuple(p.strip() for p in parts)
    known = sorted(n for n, t in TRANSPORTS.items() if not t.replaces)
    for name in names:
        if name not in TRANSPORTS or TRANSPORTS[name].replaces:
            raise ConfigError(
                f'outbound "{tag}": stack has no transport {name!r}; known: {", ".join(known)}'
            )
    bottom = [n for n in names if TRANSPORTS[n].role == "base"]
    if not names or bottom != [names[0]]:
        raise ConfigError(f'outbound "{tag}": stack must start with tcp, like "tcp > tls > ws"')
    return names


@functools.lru_cache(maxsize=64)
def _context(insecure: bool, pin: str | None, alpn: tuple[str, ...]) -> ssl.SSLContext:
    return client_context(sni_verify=not insecure, pin_sha256=pin, alpn=alpn)
