"""The plug-in point of the survival matrix: a Transport carries the client's traffic from the
`client` namespace to the `server` namespace across the censor, and tells the lab how to use
it (a SOCKS5 proxy inside the client namespace, or the client's own routes through a tunnel
device). Direct access is the trivial transport; the real peers live in `peers`, and every
elsewhere transport plugs in the same way:

    class ElsewhereShadowsocks:
        name = "elsewhere-ss"

        @contextmanager
        def open(self, lab: Lab) -> Iterator[Route]:
            lab.spawn("server", [...], name="ew-server")      # server in `server`
            lab.spawn("client", [...], name="ew-client")      # client in `client`
            lab.wait_tcp("client", "127.0.0.1", 1080)
            yield Route(proxy="socks5h://127.0.0.1:1080", server=Destination(plan.SERVER, 8388))
            # processes the lab spawned are ended by lab.forget() here or at lab teardown
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from typing import Protocol

from elsewhere.lab.topology import Lab
from elsewhere.session import Destination, Network

FETCH_CONNECT_TIMEOUT = 3.0
FETCH_TIMEOUT = 6.0


@dataclass(frozen=True, slots=True)
class Route:
    """How to reach the Internet through an opened transport."""

    proxy: str | None = None  # curl proxy URL inside `client`, e.g. "socks5h://127.0.0.1:1080";
    # None: the client namespace's own routes (direct, or a tunnel device the transport set up)
    server: Destination | None = None  # where the censor sees the transport's traffic go
    network: Network = "tcp"
    ready: bool = True  # False: the transport never came up (e.g. its handshake was blocked)
    note: str = ""  # why it is not ready, for the matrix


class Transport(Protocol):
    """Something that gets the client to the server. `open` starts what it needs inside the
    lab's namespaces (never elsewhere), waits until it can carry traffic or clearly cannot, and
    stops it all when the context exits."""

    name: str

    def open(self, lab: Lab) -> AbstractContextManager[Route]: ...


class Direct:
    """No circumvention at all: the client's own resolver and routes, through the censor."""

    name = "direct"

    @contextmanager
    def open(self, lab: Lab) -> Iterator[Route]:
        yield Route()


@dataclass(frozen=True, slots=True)
class Fetch:
    """One HTTPS fetch from the client namespace."""

    url: str
    reached: bool  # a complete 200 response
    status: int
    size: int
    seconds: float
    error: str = ""


def fetch(
    lab: Lab,
    url: str,
    route: Route | None = None,
    *,
    connect_timeout: float = FETCH_CONNECT_TIMEOUT,
    timeout: float = FETCH_TIMEOUT,
) -> Fetch:
    """GET `url` with curl inside `client`, trusting the lab CA, through `route`."""
    route = route or Route()
    start = time.monotonic()
    if not route.ready:
        return Fetch(url, False, 0, 0, 0.0, route.note or "transport not ready")
    argv = ["curl", "-sS", "--cacert", str(lab.ca_cert), "-o", "/dev/null",
            "--connect-timeout", f"{connect_timeout:g}", "--max-time", f"{timeout:g}",
            "-w", "%{http_code} %{size_download}"]
    if route.proxy:
        argv += ["--proxy", route.proxy]
    done = lab.run("client", [*argv, url], check=False, timeout=timeout + 5)
    seconds = time.monotonic() - start
    fields = done.stdout.split()
    status = int(fields[0]) if fields and fields[0].isdigit() else 0
    size = int(fields[1]) if len(fields) > 1 and fields[1].isdigit() else 0
    reached = done.returncode == 0 and status == 200
    return Fetch(url, reached, status, size, seconds, done.stderr.strip().splitlines()[-1]
                 if done.stderr.strip() else "")
