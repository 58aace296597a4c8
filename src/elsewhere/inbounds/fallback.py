"""Where a TLS-family server sends everyone who is not a client of ours (a browser, a scanner,
a censor's prober, a wrong password): a web server. What they see must be what that web server
alone would show them, so the fallback gets every byte they sent, untouched."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import Any, Protocol, cast

from elsewhere.errors import ConfigError
from elsewhere.transports.layer import Pending


class Fallback(Protocol):
    def take(self, transport: asyncio.Transport, received: bytes) -> None:
        """Serve `transport` (reading paused) whose peer already sent `received`."""
        ...


class UpstreamFallback:
    """A reverse proxy to a real web server (a local nginx, say): bytes both ways, unchanged."""

    def __init__(self, host: str, port: int) -> None:
        self.host = host
        self.port = port
        self._tasks: set[asyncio.Task[None]] = set()

    def take(self, transport: asyncio.Transport, received: bytes) -> None:
        task = asyncio.get_running_loop().create_task(self._serve(transport, received))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _serve(self, transport: asyncio.Transport, received: bytes) -> None:
        from elsewhere.relay import Relay

        loop = asyncio.get_running_loop()
        transport.set_protocol(Pending())
        try:
            upstream, _ = await loop.create_connection(Pending, self.host, self.port)
        except OSError:
            transport.abort()
            return
        if received:
            upstream.write(received)
        Relay(transport, cast(asyncio.Transport, upstream), idle_timeout=300)


class DecoyFallback:
    """The decoy site shipped in the package, served by elsewhere itself."""

    def __init__(self) -> None:
        from elsewhere.codecs import decoy

        self.content = decoy.default_content()

    def take(self, transport: asyncio.Transport, received: bytes) -> None:
        from elsewhere.inbounds.decoy_site import DecoyProtocol

        DecoyProtocol(self.content, transport, received)


def make_fallback(tag: str, options: Mapping[str, Any]) -> Fallback:
    spec = options.get("fallback", "decoy")
    if spec == "decoy":
        return DecoyFallback()
    host, sep, port = str(spec).rpartition(":")
    if not sep or not port.isdigit():
        raise ConfigError(
            f'inbound "{tag}": fallback must be "decoy" or host:port of a web server, not {spec!r}'
        )
    return UpstreamFallback(host.strip("[]"), int(port))
