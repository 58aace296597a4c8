"""VLESS keys: a UUID, served on the TLS port; `vless://` links."""

from __future__ import annotations

import uuid
from typing import TYPE_CHECKING

from elsewhere.control import links_tls  # noqa: F401  (registers vless://)
from elsewhere.protocols.base import KeyProtocol, register_protocol
from elsewhere.protocols.tls import access_key, transport

if TYPE_CHECKING:
    from elsewhere.store.base import Store


def new_key(store: Store, method: str | None) -> tuple[str, str]:
    return transport("vless", method), str(uuid.uuid4())


register_protocol(
    KeyProtocol(
        "vless",
        help="VLESS over TLS, for v2rayNG, Hiddify, sing-box, Shadowrocket",
        method_help="tcp (default) or ws",
        new_key=new_key,
        access_key=access_key,
        inbound="tls",
    )
)
