"""Where a TLS-family server sends everyone who is not a client of ours (a browser, a scanner,
a censor's prober, a wrong password): a web server. What they see must be what that web server
alone would show them, so the fallback gets every byte they sent, untouched. And those who do
not even start TLS on the TLS port: what nginx's `ssl` port shows them (serve_plain_http)."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Protocol, cast

from elsewhere.errors import ConfigError
from elsewhere.inbounds.decoy_site import DecoyProtocol
from elsewhere.relay import Relay
from elsewhere.transports.layer import Pending
from elsewhere.web.decoy_content import DecoyContent, default_content
from elsewhere.web.nginx import CLIENT_HEADER_TIMEOUT

# A reverse proxy's connection is the upstream's to end; this only reaps the abandoned ones.
UPSTREAM_IDLE_TIMEOUT = 300.0


class Fallback(Protocol):
    def take(self, transport: asyncio.Transport, received: bytes) -> None:
        """Serve `transport` (reading paused) whose peer already sent `received`."""
        ...

    def close(self) -> None:
        """The server stops: end what this fallback holds open that would outlive it."""
        ...


class UpstreamFallback:
    """A reverse proxy to a real web server (a local nginx, say): bytes both ways, unchanged."""

    def __init__(self, host: str, port: int) -> None:
        self.host = host
        self.port = port
        self._tasks: set[asyncio.Task[None]] = set()
        self._relays: set[Relay] = set()

    def take(self, transport: asyncio.Transport, received: bytes) -> None:
        task = asyncio.get_running_loop().create_task(self._serve(transport, received))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _serve(self, transport: asyncio.Transport, received: bytes) -> None:
        loop = asyncio.get_running_loop()
        transport.set_protocol(Pending())
        try:
            upstream, _ = await loop.create_connection(Pending, self.host, self.port)
        except OSError:
            transport.abort()
            return
        except asyncio.CancelledError:  # the server stops while the upstream is dialled
            transport.abort()
            raise
        if received:
            upstream.write(received)
        relay = Relay(
            transport,
            cast(asyncio.Transport, upstream),
            idle_timeout=UPSTREAM_IDLE_TIMEOUT,
            on_done=self._relays.discard,
        )
        if not relay.finished:
            self._relays.add(relay)

    def close(self) -> None:
        """Both sides of every proxied connection, and those still dialling the upstream, end
        with the server: they are the engine's connections too, just not tunnels."""
        for task in self._tasks:
            task.cancel()
        for relay in list(self._relays):
            relay.abort()


class DecoyFallback:
    """A static site served by elsewhere itself as nginx would serve it: the files of
    `content` (a directory's, with their mtimes), or the site shipped in the package."""

    def __init__(
        self,
        header_timeout: float = CLIENT_HEADER_TIMEOUT,
        content: DecoyContent | None = None,
    ) -> None:
        self.content = content or default_content()
        self.header_timeout = header_timeout

    def close(self) -> None:
        """Nothing to end: each connection closes on nginx's own timeouts (at most 75 s
        keep-alive, 60 s for a request head, 30 s of lingering), as nginx's graceful stop
        lets its open connections finish."""

    def take(self, transport: asyncio.Transport, received: bytes) -> None:
        # nginx's header timeout runs from the accept, through the TLS handshake (tls_layer)
        since = transport.get_extra_info("accepted_at")
        DecoyProtocol(
            self.content, transport, received, since=since, header_timeout=self.header_timeout
        )


def serve_plain_http(
    transport: asyncio.Transport,
    received: bytes,
    *,
    since: float,
    header_timeout: float = CLIENT_HEADER_TIMEOUT,
) -> None:
    """Serve a connection to the TLS port whose first byte was no TLS (plain HTTP, an SSH
    banner, ...): `transport` is the TCP connection itself (reading paused), accepted at `since`
    (wall clock). nginx with `listen ... ssl` handles it as HTTP and, once a request head
    passes its checks, answers 400 "The plain HTTP request was sent to HTTPS port" and closes;
    the decoy does the same, byte for byte (web/decoy.py, `plain_on_https_port`).

    This is what happens whatever the fallback, the decoy or an upstream web server. The
    upstream is reached in plain HTTP behind our TLS, so handing it these bytes would show its
    plain site (or its port-80 redirect) on a TLS port, which no HTTPS server does; and it
    cannot give an HTTPS server's answer to plain bytes, because for it they did come over
    plain HTTP. The port's TLS is ours, with nginx's OpenSSL settings, so nginx's answer is the
    one that fits it. Its pages name nginx/1.22.1 (Debian 12's nginx, as the decoy): with an
    upstream other than that nginx, HTTPS answers and this one name different servers, a
    smaller tell than silence or a site on the wrong protocol; an operator who wants none runs
    that nginx as the upstream, or the decoy."""
    # the content is never served: every request ends in 497 or an error before the location
    DecoyProtocol(
        default_content(),
        transport,
        received,
        since=since,
        header_timeout=header_timeout,
        plain_on_https_port=True,
    )


def make_fallback(
    tag: str, options: Mapping[str, Any], *, header_timeout: float = CLIENT_HEADER_TIMEOUT
) -> Fallback:
    """`fallback` is "decoy" (the default) or host:port of a web server; with "decoy",
    `decoy` may name a directory whose files are the site (a flat one: index.html, 404.html
    and the rest, served with their mtimes, as `elsewhere server` generates); without it, the
    site shipped in the package."""
    spec = options.get("fallback", "decoy")
    site = options.get("decoy")
    if spec == "decoy":
        return DecoyFallback(header_timeout, None if site is None else _site(tag, site))
    if site is not None:
        raise ConfigError(
            f'inbound "{tag}": decoy = {site!r} is the site of fallback = "decoy", '
            f"but fallback is {spec!r}; drop one of them"
        )
    host, sep, port = str(spec).rpartition(":")
    if not sep or not port.isdigit():
        raise ConfigError(
            f'inbound "{tag}": fallback must be "decoy" or host:port of a web server, not {spec!r}'
        )
    return UpstreamFallback(host.strip("[]"), int(port))


def _site(tag: str, directory: object) -> DecoyContent:
    path = Path(str(directory)).expanduser()
    if not isinstance(directory, str) or not path.is_dir():
        raise ConfigError(
            f'inbound "{tag}": decoy must be the directory of the decoy site, '
            f"and {directory!r} is not a directory"
        )
    try:
        content = DecoyContent.load(path)
    except OSError as e:
        raise ConfigError(f'inbound "{tag}": cannot read the decoy site in {path}: {e}') from e
    if not content.files:
        raise ConfigError(f'inbound "{tag}": the decoy site directory {path} is empty')
    return content
