"""Shadowsocks AEAD (SIP004) keys: one random port serves every key (inbounds/shadowsocks.py),
each key with its own cipher and password; the link is SIP002 `ss://` (Outline's keys).
Codecs and inbounds are imported where used: the CLI loads every registration to build --help."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from elsewhere.control import links_ss  # noqa: F401  (registers ss://)
from elsewhere.control.links import AccessKey
from elsewhere.errors import ConfigError
from elsewhere.protocols.base import (
    KeyProtocol,
    ServerInbound,
    ServerSettings,
    new_password,
    register_protocol,
    register_server_inbound,
)

if TYPE_CHECKING:
    from elsewhere.inbounds.base import Inbound
    from elsewhere.store.base import KeyRecord, Store

DEFAULT_METHOD = "chacha20-ietf-poly1305"  # what Outline hands out: fast on phones without AES


def new_key(store: Store, method: str | None) -> tuple[str, str]:
    from elsewhere.codecs.shadowsocks import METHODS

    method = method or DEFAULT_METHOD
    if method not in METHODS:
        raise ConfigError(f"unknown method {method!r}; choose one of {', '.join(METHODS)}")
    return method, new_password()


def access_key(store: Store, record: KeyRecord) -> AccessKey:
    return AccessKey(
        protocol="ss",
        method=record.method,
        password=record.secret,
        host=store.get_setting("host") or "127.0.0.1",
        port=int(store.get_setting("port") or 0),
        name=record.name,
    )


def inbound_config(settings: ServerSettings, store: Store) -> dict[str, Any]:
    return {
        "type": "shadowsocks",
        "tag": "ss",
        "listen": settings.listen,
        "port": settings.ports["port"],
        "keys": [],
    }


def give_keys(inbound: Inbound, keys: Mapping[str, Sequence[KeyRecord]]) -> None:
    from elsewhere.codecs.shadowsocks import Cipher
    from elsewhere.inbounds.shadowsocks import ServerKey, ShadowsocksInbound

    assert isinstance(inbound, ShadowsocksInbound)
    inbound.set_keys(
        [ServerKey(r.id, Cipher.from_password(r.method, r.secret)) for r in keys.get("ss", ())]
    )


register_server_inbound(
    ServerInbound(
        "ss",
        port_setting="port",
        flag="--port",
        help="Shadowsocks port to listen on (remembered; first run picks one)",
        config=inbound_config,
        give_keys=give_keys,
    )
)
register_protocol(
    KeyProtocol(
        "ss",
        help="Shadowsocks, for Outline and every Shadowsocks app (default)",
        method_help=f"{DEFAULT_METHOD} (default), aes-256-gcm, aes-128-gcm",
        new_key=new_key,
        access_key=access_key,
        inbound="ss",
        default=True,
    )
)
