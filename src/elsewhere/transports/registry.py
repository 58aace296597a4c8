"""Client transports as registered stream -> stream layers (DESIGN.md §2): a link or config
names a stack, bottom first (`tcp > tls > ws`, later `tcp > reality > vision`,
`tcp > tls > xhttp`), and transports.dial opens it by calling each layer's dialer in turn.

How a transport plugs in (a new transport is a new file in this package, nothing else):

    from elsewhere.transports.registry import Transport, register

    async def dial_xhttp(lower: Layer | None, settings: StreamSettings, host: str, port: int
                         ) -> Layer:
        ...  # speak the layer's handshake over `lower`; return the stream above it

    register(Transport("xhttp", dial_xhttp, options=("mode", "extra")))

- `dial(lower, settings, host, port)` gets the connected stream below it (None for the bottom
  layer, which opens the connection itself: `tcp`) and returns the stream above it: a
  transports.layer.Layer whose protocol is a Pending holding whatever arrived past the layer's
  own handshake. It may return `lower` itself (TLS wraps the socket in place). It raises
  OSError/TimeoutError/ssl errors for a server it cannot use, ConfigError for a stack that
  cannot work; dial() aborts the connection and bounds the whole stack by one timeout.
- `settings` is the whole transports.settings.StreamSettings: the common fields (sni, alpn,
  pin, path, host, fp) and `settings.options`, every other option of the outbound verbatim,
  where a layer finds its own (REALITY's `pbk`/`sid`, XHTTP's `mode`...). List those names in
  `options` so the outbound config accepts them and people see them in errors.
- `replaces` lets one transport stand in for a run of others when `wants(settings)` is true:
  browser-ws replaces `tcp > tls > ws` when the link asks for a browser fingerprint (`fp`).
  `available()` says whether its optional dependency is installed (it logs why not, once).
- `fingerprint`: the layer sends a browser's TLS hello when the link asks for one (`fp`);
  a stack with `fp` and no such layer goes out with a warning, once.
- `role` is where a name may appear in a link: "security" (tls, reality), "network" (ws,
  httpupgrade, xhttp), "flow" (vision), "base" (tcp). StreamSettings derives a stack from the
  share-link parameters `security`, `type` and `flow` by these roles; a config may also give
  `stack = "tcp > tls > ws"` outright.

Server side: where a server composes layers, the layer registers an Acceptor beside its dialer.
The TLS inbound routes a first request on a secret path to the acceptor whose `option` its
config sets (`websocket = { path = "/ws" }`, `httpupgrade = "/up"`):

    register_acceptor(Acceptor("ws", option="websocket", parse=parse_ws, accept=accept_ws))

`parse(buffer, path, host)` reads the HTTP head at the start of what the client sent: an
http_upgrade.UpgradeRequest when it is one for us, None while incomplete, ProtocolError when it
is not (the fallback then gets every byte). `accept(transport, request)` writes the answer and
returns the layer to put on `transport` (its upper protocol is then the inbound's reader).

Modules of this package register themselves when imported; load_all() imports them all but
those in ON_DEMAND (an optional dependency, imported by their registration on first use)."""

from __future__ import annotations

import functools
import importlib
import logging
import pkgutil
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from elsewhere.transports.layer import Layer

if TYPE_CHECKING:
    import asyncio

    from elsewhere.codecs.http_upgrade import UpgradeRequest
    from elsewhere.transports.settings import StreamSettings

log = logging.getLogger("elsewhere.transports")

Dialer = Callable[[Layer | None, "StreamSettings", str, int], Awaitable[Layer]]
ROLES = ("base", "security", "flow", "network")
CONNECT_TIMEOUT = 10.0  # the whole stack, every layer's handshake included
# curl_cffi: optional (the browser extra) and slow to import; transports/browser.py loads it
ON_DEMAND = frozenset({"browser_ws"})


def _always(settings: StreamSettings) -> bool:
    return True


def _installed() -> bool:
    return True


@dataclass(frozen=True)
class Transport:
    """One registered client layer (see the module docstring)."""

    name: str
    dial: Dialer
    role: str = "network"
    options: tuple[str, ...] = ()
    replaces: tuple[str, ...] = ()
    wants: Callable[[StreamSettings], bool] = _always
    available: Callable[[], bool] = _installed
    fingerprint: bool = False

    def __post_init__(self) -> None:
        if self.role not in ROLES:
            raise ValueError(f"transport {self.name!r}: role must be one of {ROLES}")


TRANSPORTS: dict[str, Transport] = {}


def register(transport: Transport) -> Transport:
    TRANSPORTS[transport.name] = transport
    return transport


@dataclass(frozen=True)
class Acceptor:
    """One registered server layer (see the module docstring)."""

    name: str
    option: str
    parse: Callable[[bytes | bytearray, str, str | None], UpgradeRequest | None]
    accept: Callable[[asyncio.Transport, UpgradeRequest], Layer]


ACCEPTORS: dict[str, Acceptor] = {}


def register_acceptor(acceptor: Acceptor) -> Acceptor:
    ACCEPTORS[acceptor.name] = acceptor
    return acceptor


def acceptors() -> dict[str, Acceptor]:
    load_all()
    return ACCEPTORS


def named(role: str) -> tuple[str, ...]:
    """The registered names of one role (for validation and error messages)."""
    load_all()
    return tuple(name for name, t in TRANSPORTS.items() if t.role == role and not t.replaces)


def compose(settings: StreamSettings) -> list[Transport]:
    """The layers that open `settings.stack`, bottom first: a transport that `replaces` a run
    of the stack and wants these settings stands in for it."""
    load_all()
    names = list(settings.stack)
    explained = False  # a stand-in that wanted these settings said why it cannot serve them
    for candidate in TRANSPORTS.values():
        run = list(candidate.replaces)
        if not run or names[: len(run)] != run or not candidate.wants(settings):
            continue
        if candidate.available():
            names[: len(run)] = [candidate.name]
            break
        explained = True
    layers = [TRANSPORTS[name] for name in names]
    unused = not any(layer.fingerprint for layer in layers) and "tls" in names
    if settings.fingerprint is not None and not explained and unused:
        _fingerprint_unused(" > ".join(names))
    return layers


@functools.cache
def _fingerprint_unused(stack: str) -> None:
    log.warning(
        "fp (browser TLS fingerprint) is not used by %s; it goes out with Python's TLS hello",
        stack,
    )


_loaded = False


def load_all() -> None:
    global _loaded
    if _loaded:
        return
    _loaded = True
    package = importlib.import_module("elsewhere.transports")
    for module in pkgutil.iter_modules(package.__path__):
        if module.name not in ON_DEMAND:
            importlib.import_module(f"elsewhere.transports.{module.name}")
