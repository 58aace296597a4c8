"""The decoy web site on a live connection: an asyncio shell around web.decoy.DecoySite,
which decides every byte and every close the way nginx would; this only moves bytes, reads the
clock and keeps the one timer the site asks for."""

from __future__ import annotations

import asyncio
import time

from elsewhere.transports.tls_layer import TlsServerLayer
from elsewhere.web.decoy import DecoySite
from elsewhere.web.decoy_content import DecoyContent
from elsewhere.web.nginx import CLIENT_HEADER_TIMEOUT


class DecoyProtocol(asyncio.Protocol):
    """Serves `transport` (reading paused) whose peer already sent `received`. `since`: when
    the connection was accepted (wall clock), if before now; the request head's timeout runs
    from then, as nginx's does. `plain_on_https_port`: see web.decoy."""

    def __init__(
        self,
        content: DecoyContent,
        transport: asyncio.Transport,
        received: bytes,
        *,
        since: float | None = None,
        header_timeout: float = CLIENT_HEADER_TIMEOUT,
        plain_on_https_port: bool = False,
    ):
        self.site = DecoySite(
            content,
            now=time.time() if since is None else since,
            header_timeout=header_timeout,
            plain_on_https_port=plain_on_https_port,
        )
        self.transport = transport
        self.timer: asyncio.TimerHandle | None = None
        transport.set_protocol(self)
        if received:
            self.site.feed(received, time.time())
        self._act()
        if not self.site.closed:
            transport.resume_reading()

    def data_received(self, data: bytes) -> None:
        self.site.feed(data, time.time())
        self._act()

    def eof_received(self) -> bool:
        self.site.eof()
        self._act()
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None

    def _act(self) -> None:
        site, transport = self.site, self.transport
        if transport.is_closing():
            return
        out = site.data_to_send()
        if out:
            transport.write(out)
        if site.closed:
            transport.close()
            return
        if site.half_closed:
            # lingering close: our FIN (over TLS after close_notify, as nginx's), then keep
            # reading and dropping a while, so that late bytes draw no RST
            if transport.can_write_eof():
                transport.write_eof()
            elif isinstance(transport, TlsServerLayer):
                transport.close_lingering()
            else:
                transport.close()  # no half-close below (not TLS of ours): a close is nearest
                return
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        deadline = site.deadline
        if deadline is not None:
            self.timer = asyncio.get_running_loop().call_later(
                max(0.0, deadline - time.time()), self._expire
            )

    def _expire(self) -> None:
        self.timer = None
        deadline = self.site.deadline
        if deadline is not None and deadline > time.time():
            self._act()  # moved on since the timer was set
            return
        if self.site.times_out_quietly:
            self.transport.abort()  # over TLS: no close_notify; over TCP: the same FIN
        else:
            self.transport.close()


def would_answer(content: DecoyContent, received: bytes) -> bool:
    """Would a web server already answer (or hang up on) these bytes? Then a server that
    waits for more of them has given itself away, and the fallback must take them now."""
    site = DecoySite(content, now=time.time())
    site.feed(received, time.time())
    return site.closed or site.half_closed or bool(site.data_to_send())
