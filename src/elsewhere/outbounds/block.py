"""The block outbound: the router's way of saying no."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import Any, NoReturn

from elsewhere.errors import PolicyError
from elsewhere.outbounds.base import DatagramReceiver, register
from elsewhere.session import Session


class BlockOutbound:
    def __init__(self, tag: str) -> None:
        self.tag = tag

    async def open_tcp(self, session: Session) -> asyncio.Transport:
        raise PolicyError(f"{session.destination} is blocked by the rules")

    async def open_udp(self, session: Session, receive: DatagramReceiver) -> NoReturn:
        raise PolicyError(f"{session.destination} is blocked by the rules")

    async def close(self) -> None:
        return None


@register("block")
def _make(tag: str, options: Mapping[str, Any]) -> BlockOutbound:
    return BlockOutbound(tag)
