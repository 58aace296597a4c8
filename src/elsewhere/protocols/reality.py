"""VLESS keys over REALITY (`elsewhere keys add NAME --protocol vless --method reality`): the
REALITY server (inbounds/reality.py) on a port of its own, showing strangers the real `dest`
site; its X25519 key pair and short id made once per server, dest and its names set by the
operator (`--dest`, `--sni`). The link is the one the apps import:

    vless://UUID@host:port?encryption=none&flow=xtls-rprx-vision&security=reality&sni=…
        &fp=chrome&pbk=…&sid=…&type=tcp#name
"""

from __future__ import annotations

import secrets
import uuid
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from elsewhere.codecs import reality
from elsewhere.control.links import AccessKey
from elsewhere.errors import ConfigError
from elsewhere.protocols.base import ServerInbound, ServerSettings, register_server_inbound

if TYPE_CHECKING:
    from elsewhere.inbounds.base import Inbound
    from elsewhere.store.base import KeyRecord, Store

METHOD = "reality"
FLOW = "xtls-rprx-vision"
FINGERPRINT = "chrome"  # what the link asks clients to show (Xray's and sing-box's default)
DEST_SETTING = "reality_dest"
SNI_SETTING = "reality_sni"
NEEDS_DEST = (
    "REALITY shows strangers a real TLS 1.3 site: give it once with --dest, e.g. "
    "`elsewhere keys add NAME --protocol vless --method reality --dest www.example.com` "
    "(README: choosing dest and sni)"
)


def set_dest(store: Store, dest: str | None, sni: str | None) -> None:
    """Remember the operator's dest (host[:port], 443 by default) and server names."""
    if dest:
        host, sep, port = dest.strip().rpartition(":")
        if not sep:
            host, port = dest.strip(), "443"
        if not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise ConfigError(f"--dest {dest!r} must be a host or host:port, like www.example.com")
        store.set_setting(DEST_SETTING, f"{host.strip('[]')}:{port}")
        if not sni and not store.get_setting(SNI_SETTING):
            sni = host.strip("[]")
    if sni:
        names = [n.strip().lower() for n in sni.split(",") if n.strip()]
        if not names:
            raise ConfigError("--sni needs a name dest answers to, like www.example.com")
        store.set_setting(SNI_SETTING, ",".join(names))


def new_key(store: Store) -> tuple[str, str]:
    if not store.get_setting(DEST_SETTING):
        raise ConfigError(NEEDS_DEST)
    return METHOD, str(uuid.uuid4())


def access_key(store: Store, record: KeyRecord) -> AccessKey:
    host = store.get_setting("host") or "127.0.0.1"
    private = reality.decode_key(store.get_setting("reality_private_key") or "")
    names = (store.get_setting(SNI_SETTING) or "").split(",")
    extra = {
        "security": "reality",
        "sni": names[0],
        "fp": FINGERPRINT,
        "pbk": reality.encode_key(reality.public_key(private)),
        "sid": store.get_setting("reality_short_id") or "",
        "type": "tcp",
        "flow": FLOW,
    }
    return AccessKey(
        protocol="vless",
        method="",
        password=record.secret,
        host=host,
        port=int(store.get_setting("port_reality") or 0),
        name=record.name,
        extra=extra,
    )


def inbound_config(settings: ServerSettings, store: Store) -> dict[str, Any] | None:
    dest = store.get_setting(DEST_SETTING)
    if not dest:
        return None  # no REALITY keys can have been made yet
    return {
        "type": "reality",
        "tag": "reality",
        "listen": settings.listen,
        "port": settings.ports["port_reality"],
        "dest": dest,
        "server_names": (store.get_setting(SNI_SETTING) or "").split(","),
        "private_key": store.get_setting("reality_private_key"),
        "short_ids": [store.get_setting("reality_short_id") or ""],
        "max_time_diff": 60_000,  # ms; Xray's examples use a minute too
    }


def give_keys(inbound: Inbound, keys: Mapping[str, Sequence[KeyRecord]]) -> None:
    from elsewhere.codecs.vless import parse_uuid
    from elsewhere.inbounds.reality import RealityInbound

    assert isinstance(inbound, RealityInbound)
    inbound.set_users(
        {parse_uuid(r.secret): r.id for r in keys.get("vless", ()) if r.method == METHOD}
    )


register_server_inbound(
    ServerInbound(
        "reality",
        port_setting="port_reality",
        flag="--port-reality",
        help="VLESS+REALITY port (remembered; 443 is best, if the TLS port is elsewhere)",
        config=inbound_config,
        give_keys=give_keys,
        settings={
            "reality_private_key": lambda: reality.encode_key(reality.generate_private_key()),
            "reality_short_id": lambda: secrets.token_hex(8),
        },
    )
)
