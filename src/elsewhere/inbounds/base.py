"""What every inbound offers the engine (PEP 544): start listening, stop. Inbound modules
register a factory under their config `type`."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from elsewhere.engine import Engine


class Inbound(Protocol):
    tag: str

    async def start(self, engine: Engine) -> None: ...

    async def stop(self) -> None: ...

    def describe(self) -> str:
        """Where it listens, for people: `socks5+http 127.0.0.1:1080`."""
        ...


InboundFactory = Callable[[str, Mapping[str, Any]], Inbound]
INBOUND_TYPES: dict[str, InboundFactory] = {}


def register(name: str) -> Callable[[InboundFactory], InboundFactory]:
    def put(factory: InboundFactory) -> InboundFactory:
        INBOUND_TYPES[name] = factory
        return factory

    return put
