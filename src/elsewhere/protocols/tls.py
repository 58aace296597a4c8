"""The server's TLS port (inbounds/tls.py): Trojan and VLESS keys on one port that shows
strangers a web site, raw TLS or WebSocket on a secret path; and the link parameters both
kinds of key share (`security=tls`, `sni`, `type`, the certificate pin)."""

from __future__ import annotations

import re
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

TRANSPORTS = ("tcp", "ws", "xhttp")  # a key's method field: how it reaches the TLS port
# `xhttp:cdn.example.com`: XHTTP through that CDN (its name in the link as address, SNI, Host)
CDN_SEPARATOR = ":"
_HOSTNAME = re.compile(r"(?=.{1,253}$)([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?\.)+[a-z]{2,63}", re.I)
HTTPS_PORT = 443


def transport(protocol: str, method: str | None, cdn: str | None = None) -> str:
    """The transport a new Trojan or VLESS key keeps in its method field (`xhttp:HOST` for
    XHTTP through the CDN called HOST)."""
    chosen = method or ("xhttp" if cdn else "tcp")
    if CDN_SEPARATOR in chosen:
        chosen, _, cdn = chosen.partition(CDN_SEPARATOR)
    if chosen not in TRANSPORTS:
        raise ConfigError(f"{protocol} keys go over {', '.join(TRANSPORTS)}, not {chosen!r}")
    if cdn is None:
        return chosen
    if chosen != "xhttp":
        raise ConfigError(f"--cdn is for XHTTP keys (--method xhttp), not {chosen!r}")
    if not _HOSTNAME.fullmatch(cdn):
        raise ConfigError(f"--cdn {cdn!r} is not a host name like cdn.example.com")
    return f"xhttp{CDN_SEPARATOR}{cdn.lower()}"


def access_key(store: Store, record: KeyRecord) -> AccessKey:
    host = store.get_setting("host") or "127.0.0.1"
    extra = {"security": "tls", "sni": store.get_setting("tls_name") or host, "type": record.method}
    if record.method == "ws":
        extra["path"] = store.get_setting("ws_path") or "/"
        extra["host"] = extra["sni"]
    port = int(store.get_setting("port_tls") or 0)
    if record.method.startswith("xhttp"):
        _, _, cdn = record.method.partition(CDN_SEPARATOR)
        extra |= {"type": "xhttp", "path": store.get_setting("xhttp_path") or "/", "mode": "auto"}
        if cdn:
            # the CDN's name is what the app dials and shows; its certificate is the CDN's own,
            # so no pin; packet-up is what every CDN forwards
            host, port = cdn, HTTPS_PORT
            extra |= {"sni": cdn, "host": cdn, "mode": "packet-up"}
            return _key(record, host, port, extra)
        extra["host"] = extra["sni"]
    if pin := store.get_setting("tls_pin"):
        extra["pcs"] = pin
        extra["allowInsecure"] = "1"  # older apps know no pcs; they still connect
    return _key(record, host, port, extra)


def _key(record: KeyRecord, host: str, port: int, extra: dict[str, str]) -> AccessKey:
    return AccessKey(
        protocol=record.protocol,
        method="",
        password=record.secret,
        host=host,
        port=port,
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
        "xhttp": {"path": store.get_setting("xhttp_path")},
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
        settings={
            "ws_path": lambda: "/" + secrets.token_urlsafe(12),
            "xhttp_path": lambda: "/" + secrets.token_urlsafe(12),
        },
    )
)
