"""The server's TLS port (inbounds/tls.py): Trojan and VLESS keys on one port that shows
strangers a web site, raw TLS or WebSocket on a secret path; and the link parameters both
kinds of key share (`security=tls`, `sni`, `type`, the certificate pin)."""

from __future__ import annotations

import secrets
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from elsewhere.control.links import AccessKey
from elsewhere.errors import ConfigError
from elsewhere.protocols.base import (
    ServerInbound,
    ServerSettings,
    privileged_or_random,
    register_server_inbound,
)

if TYPE_CHECKING:
    from elsewhere.inbounds.base import Inbound
    from elsewhere.store.base import KeyRecord, Store

TRANSPORTS = ("tcp", "ws")  # what a key's method field may hold: how it reaches the TLS port
HTTPS_PORT = 443


def transport(protocol: str, method: str | None) -> str:
    """The transport a new Trojan or VLESS key keeps in its method field."""
    chosen = method or "tcp"
    if chosen not in TRANSPORTS:
        raise ConfigError(f"{protocol} keys go over tcp or ws, not {chosen!r}")
    return chosen


def access_key(store: Store, record: KeyRecord) -> AccessKey:
    host = store.get_setting("host") or "127.0.0.1"
    extra = {"security": "tls", "sni": store.get_setting("tls_name") or host, "type": record.method}
    if record.method == "ws":
        extra["path"] = store.get_setting("ws_path") or "/"
        extra["host"] = extra["sni"]
    if pin := store.get_setting("tls_pin"):
        extra["pcs"] = pin
        extra["allowInsecure"] = "1"  # older apps know no pcs; they still connect
    return AccessKey(
        protocol=record.protocol,
        method="",
        password=record.secret,
        host=host,
        port=int(store.get_setting("port_tls") or 0),
        name=record.name,
        extra=extra,
    )


def inbound_config(settings: ServerSettings, store: Store) -> dict[str, Any] | None:
    if not (settings.cert and settings.key):
        return None
    config: dict[str, Any] = {
        "type": "tls",
        "tag": "tls",
        "listen": settings.listen,
        "port": settings.ports["port_tls"],
        "cert": settings.cert,
        "key": settings.key,
        "fallback": "decoy",
        "websocket": {"path": store.get_setting("ws_path")},
    }
    if settings.site is not None:
        config["decoy"] = str(settings.site)
    return config


def give_keys(inbound: Inbound, keys: Mapping[str, Sequence[KeyRecord]]) -> None:
    from elsewhere.codecs.trojan import password_hash
    from elsewhere.codecs.vless import parse_uuid
    from elsewhere.inbounds.tls import TlsInbound, Users

    assert isinstance(inbound, TlsInbound)
    inbound.set_users(
        Users(
            trojan={password_hash(r.secret): r.id for r in keys.get("trojan", ())},
            vless={  # (REALITY's keys are the REALITY port's)
                parse_uuid(r.secret): r.id for r in keys.get("vless", ()) if r.method != "reality"
            },
        )
    )


register_server_inbound(
    ServerInbound(
        "tls",
        port_setting="port_tls",
        flag="--port-tls",
        help="Trojan/VLESS TLS port (remembered; 443 as root)",
        config=inbound_config,
        give_keys=give_keys,
        default_port=privileged_or_random(HTTPS_PORT),
        settings={"ws_path": lambda: "/" + secrets.token_urlsafe(12)},
    )
)
