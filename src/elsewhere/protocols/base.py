"""What a protocol tells the control plane, registered beside its inbound and outbound so that
control.roles, control.links and the CLI name no protocol (sing-box's adapter registry, one
level up). Two registries:

- PROTOCOLS: a kind of access key (`elsewhere keys add --protocol NAME`): how a new key's
  method and secret are made and checked, the share link (AccessKey) a key of it gets, the
  store settings it needs (made once, on first use), and which server inbound serves it.
- SERVER_INBOUNDS: an inbound that `elsewhere server` runs: the store setting that holds its
  port (and the CLI flag that sets it), its config built from the server's settings, and how
  it takes the store's keys of the protocols it serves while running.

A share link's scheme (`ss://`, `vless://`) registers in control.links (register_scheme); one
scheme may carry several protocols (ss:// is Shadowsocks and Shadowsocks 2022).

A new protocol is new files: a codec, an inbound (inbounds/), an outbound (outbounds/), a
scheme and a module here (or anywhere, even a test) that calls register_protocol and, if it
brings a port of its own, register_server_inbound:

    register_server_inbound(ServerInbound(
        "myproto", port_setting="port_myproto", flag="--port-myproto",
        help="MyProto port (remembered)", config=my_inbound_config, give_keys=my_give_keys))
    register_protocol(KeyProtocol(
        "myproto", help="MyProto, for the MyProto app", method_help="none",
        new_key=my_new_key, access_key=my_access_key, inbound="myproto"))

Modules of this package register themselves when imported; load_all() imports them all."""

from __future__ import annotations

import importlib
import os
import pkgutil
import secrets
import socket
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from elsewhere.control.acme import AcmeSettings
    from elsewhere.control.links import AccessKey
    from elsewhere.inbounds.base import Inbound
    from elsewhere.store.base import KeyRecord, Store


# shared by the registrations


def new_password() -> str:
    return secrets.token_urlsafe(16)


# Below the ephemeral range (32768 and up): there, any outgoing connection of this machine (the
# server's own direct ones) may hold the port as its local one when the server (re)starts.
RANDOM_PORTS = range(10000, 20000)


def random_port() -> int:
    """A high port nobody expects (like Outline's), free for TCP and UDP right now."""
    while True:
        port = RANDOM_PORTS[secrets.randbelow(len(RANDOM_PORTS))]
        try:
            for kind in (socket.SOCK_STREAM, socket.SOCK_DGRAM):
                with socket.socket(socket.AF_INET, kind) as probe:
                    probe.bind(("", port))
        except OSError:
            continue
        return port


def privileged_or_random(port: int) -> Callable[[], int]:
    """`port` (443, say) when this process may bind it, else a random high port."""
    return lambda: port if os.geteuid() == 0 else random_port()


@dataclass
class ServerSettings:
    """What `elsewhere server` runs with: where it listens, each server inbound's port (by its
    port setting's name), the TLS files and the decoy site."""

    listen: str
    host: str
    idle_timeout: float
    ports: dict[str, int] = field(default_factory=dict)
    allow_private: bool = False
    cert: str | None = None
    key: str | None = None
    acme: AcmeSettings | None = None  # the certificate comes over ACME http-01
    http_port: int = 80  # where the ACME http-01 answers are served
    data: Path | None = None
    site: Path | None = None  # this server's own decoy site; None: the packaged one
    site_created: bool = False

    @property
    def port(self) -> int:
        """The first (Shadowsocks) port."""
        return self.ports.get("port", 0)


# A key's new (method, secret), from the store's settings and the method a person asked for
NewKey = Callable[["Store", str | None], tuple[str, str]]
AccessKeyOf = Callable[["Store", "KeyRecord"], "AccessKey"]
InboundConfig = Callable[[ServerSettings, "Store"], dict[str, Any] | None]
# Give a running inbound the store's current keys, grouped by protocol name
GiveKeys = Callable[["Inbound", Mapping[str, Sequence["KeyRecord"]]], None]


def _no_settings() -> Mapping[str, Callable[[], str]]:
    return MappingProxyType({})


def _never(method: str) -> bool:
    return False


@dataclass(frozen=True)
class KeyProtocol:
    """One kind of access key (see the module docstring). `settings` are store settings made
    once (name -> maker); `claims(method)` lets `keys add --method M` pick this protocol without
    --protocol (2022-… methods are Shadowsocks 2022); `default` marks the protocol of a key made
    with neither (and of a server's first key)."""

    name: str
    help: str
    method_help: str
    new_key: NewKey
    access_key: AccessKeyOf
    inbound: str
    settings: Mapping[str, Callable[[], str]] = field(default_factory=_no_settings)
    claims: Callable[[str], bool] = _never
    default: bool = False


@dataclass(frozen=True)
class ServerInbound:
    """One inbound of `elsewhere server` (see the module docstring). `default_port` makes the
    port setting's first value."""

    name: str
    port_setting: str
    flag: str
    help: str
    config: InboundConfig
    give_keys: GiveKeys
    default_port: Callable[[], int] = random_port
    settings: Mapping[str, Callable[[], str]] = field(default_factory=_no_settings)


PROTOCOLS: dict[str, KeyProtocol] = {}
SERVER_INBOUNDS: dict[str, ServerInbound] = {}


def register_protocol(protocol: KeyProtocol) -> KeyProtocol:
    PROTOCOLS[protocol.name] = protocol
    return protocol


def register_server_inbound(inbound: ServerInbound) -> ServerInbound:
    SERVER_INBOUNDS[inbound.name] = inbound
    return inbound


def protocols() -> dict[str, KeyProtocol]:
    load_all()
    return PROTOCOLS


def server_inbounds() -> dict[str, ServerInbound]:
    load_all()
    return SERVER_INBOUNDS


_loaded = False


def load_all() -> None:
    global _loaded
    if _loaded:
        return
    _loaded = True
    package = importlib.import_module("elsewhere.protocols")
    for module in pkgutil.iter_modules(package.__path__):
        importlib.import_module(f"elsewhere.protocols.{module.name}")
