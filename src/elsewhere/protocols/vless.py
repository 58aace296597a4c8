"""VLESS keys: a UUID, served on the TLS port, or on the REALITY port (protocols/reality.py);
`vless://` links."""

from __future__ import annotations

import uuid
from typing import TYPE_CHECKING

from elsewhere.control import links_tls  # noqa: F401  (registers vless://)
from elsewhere.protocols import reality
from elsewhere.protocols.base import KeyProtocol, register_protocol
from elsewhere.protocols.tls import access_key, transport

if TYPE_CHECKING:
    from elsewhere.control.links import AccessKey
    from elsewhere.store.base import KeyRecord, Store


def new_key(store: Store, method: str | None) -> tuple[str, str]:
    if method == reality.METHOD:
        return reality.new_key(store)
    return transport("vless", method), str(uuid.uuid4())


def vless_access_key(store: Store, record: KeyRecord) -> AccessKey:
    if record.method == reality.METHOD:
        return reality.access_key(store, record)
    return access_key(store, record)


register_protocol(
    KeyProtocol(
        "vless",
        help="VLESS over TLS, for v2rayNG, Hiddify, sing-box, Shadowrocket",
        method_help="tcp (default), ws, xhttp, or reality (its own port; give --dest)",
        new_key=new_key,
        access_key=vless_access_key,
        inbound="tls",
    )
)
