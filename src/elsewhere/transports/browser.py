"""`browser-ws`: `tcp > tls > ws` in one step with a browser's TLS ClientHello, through
curl-impersonate (transports/browser_ws.py, the optional `browser` extra), when a link asks for
a browser fingerprint (`fp`). Without curl_cffi the stack goes out as it is: its `tls` layer
sends elsewhere's own browser-shaped hello (transports.tls_client)."""

from __future__ import annotations

import functools
import logging
from collections.abc import Awaitable, Callable

from elsewhere.transports.layer import Layer
from elsewhere.transports.registry import CONNECT_TIMEOUT, Transport, register
from elsewhere.transports.settings import FINGERPRINTS, StreamSettings

log = logging.getLogger("elsewhere.transports")

BrowserDial = Callable[[StreamSettings, str, str, int, float], Awaitable[Layer]]


@functools.cache
def browser_dialer() -> BrowserDial | None:
    """browser_ws.dial_browser_ws, or None (saying why once) when curl_cffi is not installed."""
    try:
        from elsewhere.transports.browser_ws import dial_browser_ws
    except ImportError:
        log.info(
            "curl_cffi is not installed (pip install 'elsewhere[browser]'); WebSocket goes "
            "out with elsewhere's own TLS client and its browser-shaped hello"
        )
        return None
    return dial_browser_ws


async def dial_browser(
    lower: Layer | None, settings: StreamSettings, host: str, port: int
) -> Layer:
    browser = browser_dialer()
    assert browser is not None and settings.fingerprint is not None  # compose() checked both
    return await browser(settings, FINGERPRINTS[settings.fingerprint], host, port, CONNECT_TIMEOUT)


register(
    Transport(
        "browser-ws",
        dial_browser,
        replaces=("tcp", "tls", "ws"),
        wants=lambda settings: settings.fingerprint is not None,
        available=lambda: browser_dialer() is not None,
        fingerprint=True,
    )
)
