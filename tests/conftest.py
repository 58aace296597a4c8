"""Shared fixtures: free loopback ports, and skipping nothing silently."""

from __future__ import annotations

import pytest

from ports import free_port


@pytest.fixture
def port() -> int:
    return free_port()


def pytest_asyncio_loop_factories(config: object, item: object) -> dict[str, object]:
    """Tests run on the loop elsewhere runs on: uvloop."""
    import uvloop

    return {"uvloop": uvloop.new_event_loop}
