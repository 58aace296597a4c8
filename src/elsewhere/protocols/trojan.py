"""Trojan keys (trojan-gfw): a password, served on the TLS port; `trojan://` links."""

from __future__ import annotations

from typing import TYPE_CHECKING

from elsewhere.control import links_tls  # noqa: F401  (registers trojan://)
from elsewhere.protocols.base import KeyProtocol, new_password, register_protocol
from elsewhere.protocols.tls import access_key, transport

if TYPE_CHECKING:
    from elsewhere.store.base import Store


def new_key(store: Store, method: str | None) -> tuple[str, str]:
    return transport("trojan", method), new_password()


register_protocol(
    KeyProtocol(
        "trojan",
        help="Trojan over TLS, for v2rayNG, Hiddify, sing-box, Shadowrocket",
        method_help="tcp (default), ws or xhttp",
        new_key=new_key,
        access_key=access_key,
        inbound="tls",
    )
)
