"""Shared fixtures: free loopback ports, and skipping nothing silently."""

from __future__ import annotations

import socket

import pytest


def free_port(kind: int = socket.SOCK_STREAM) -> int:
    """A port on 127.0.0.1 that nobody listens on right now (TCP and UDP alike)."""
    while True:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as tcp:
            tcp.bind(("127.0.0.1", 0))
            port = tcp.getsockname()[1]
            try:
                with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
                    udp.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port


@pytest.fixture
def port() -> int:
    return free_port()


def pytest_asyncio_loop_factories(config: object, item: object) -> dict[str, object]:
    """Tests run on the loop elsewhere runs on: uvloop."""
    import uvloop

    return {"uvloop": uvloop.new_event_loop}
