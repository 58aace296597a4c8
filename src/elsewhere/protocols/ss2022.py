"""Shadowsocks 2022 (SIP022) keys: many users on one port (identity headers, SIP022-2 EIH)
behind the server's identity key, so every key on the port shares its method; the link is
`ss://` with the percent-encoded `method:ipsk:upsk` user info SIP002 asks of 2022 methods."""

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
    register_protocol,
    register_server_inbound,
)

if TYPE_CHECKING:
    from elsewhere.inbounds.base import Inbound
    from elsewhere.store.base import KeyRecord, Store

METHOD = "2022-blake3-aes-256-gcm"
METHOD_PREFIX = "2022-"


def generate_psk(method: str = METHOD) -> str:
    from elsewhere.codecs.ss2022 import generate_psk

    return generate_psk(method)


def new_key(store: Store, method: str | None) -> tuple[str, str]:
    server_method = store.get_setting("ss2022_method") or METHOD
    if method not in (None, server_method):
        raise ConfigError(
            f"this server's Shadowsocks 2022 port uses {server_method}; "
            "every 2022 key on it must use the same method"
        )
    return server_method, generate_psk(server_method)


def access_key(store: Store, record: KeyRecord) -> AccessKey:
    return AccessKey(
        protocol="ss",
        method=record.method,
        password=f"{store.get_setting('ss2022_psk')}:{record.secret}",
        host=store.get_setting("host") or "127.0.0.1",
        port=int(store.get_setting("port_ss2022") or 0),
        name=record.name,
    )


def inbound_config(settings: ServerSettings, store: Store) -> dict[str, Any]:
    return {
        "type": "ss2022",
        "tag": "ss2022",
        "listen": settings.listen,
        "port": settings.ports["port_ss2022"],
        "method": store.get_setting("ss2022_method"),
        "psk": store.get_setting("ss2022_psk"),
        "users": [],
    }


def give_keys(inbound: Inbound, keys: Mapping[str, Sequence[KeyRecord]]) -> None:
    from elsewhere.inbounds.ss2022 import Ss2022Inbound

    assert isinstance(inbound, Ss2022Inbound)
    inbound.set_users({r.id: r.secret for r in keys.get("ss2022", ())})


register_server_inbound(
    ServerInbound(
        "ss2022",
        port_setting="port_ss2022",
        flag="--port-2022",
        help="Shadowsocks 2022 port (remembered)",
        config=inbound_config,
        give_keys=give_keys,
        settings={"ss2022_method": lambda: METHOD, "ss2022_psk": generate_psk},
    )
)
register_protocol(
    KeyProtocol(
        "ss2022",
        help="Shadowsocks 2022",
        method_help="a 2022-blake3-… method",
        new_key=new_key,
        access_key=access_key,
        inbound="ss2022",
        claims=lambda method: method.startswith(METHOD_PREFIX),
    )
)
