"""Free loopback ports for tests (a module of its own: every test folder may have a conftest,
and `from conftest import` would pick whichever was imported first).

A port the kernel hands out for bind(0) lies in the ephemeral range, which is also where every
outgoing connection of every test takes its local port: with thousands of connections a
second beside it, such a port was sometimes taken between free_port() and the bind of the
program it was for. So ports come from below the ephemeral range, where no connect() lands,
each xdist worker from its own slice, in turn (never the same port twice from one process)."""

from __future__ import annotations

import itertools
import os
import random
import socket
from pathlib import Path

LOWEST = 20000
WORKERS = 8  # slices; xdist workers beyond this share them (still checked free)


def _ephemeral_low() -> int:
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


def _slice() -> range:
    top = max(_ephemeral_low(), LOWEST + WORKERS * 100)
    worker = os.environ.get("PYTEST_XDIST_WORKER", "gw0").removeprefix("gw")
    index = int(worker) % WORKERS if worker.isdigit() else 0
    span = (top - LOWEST) // WORKERS
    return range(LOWEST + index * span, LOWEST + (index + 1) * span)


_PORTS = _slice()
_START = random.randrange(len(_PORTS))
_NEXT = itertools.cycle([*_PORTS[_START:], *_PORTS[:_START]])


def _is_free(port: int) -> bool:
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as tcp:
            tcp.bind(("127.0.0.1", port))
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
            udp.bind(("127.0.0.1", port))
    except OSError:
        return False
    return True


def free_port(kind: int = socket.SOCK_STREAM) -> int:
    """A port on 127.0.0.1 that nobody uses right now for TCP or UDP, and that no outgoing
    connection will take as its local port."""
    for _ in range(len(_PORTS)):
        port = next(_NEXT)
        if _is_free(port):
            return port
    raise RuntimeError(f"no free port in {_PORTS}")
