"""Opening a client stream: the layers of a StreamSettings' stack (`tcp > tls > ws`), each
dialed over the one below it, within one timeout (transports.registry says how a transport
registers). The stream that comes back is a layer whose protocol is a Pending, ready for the
protocol header."""

from __future__ import annotations

import asyncio
import logging

from elsewhere.transports.layer import Layer
from elsewhere.transports.registry import CONNECT_TIMEOUT, compose
from elsewhere.transports.settings import StreamSettings

log = logging.getLogger("elsewhere.transports")


async def dial(settings: StreamSettings, host: str, port: int) -> Layer:
    """A connected stream to the server through every layer of `settings.stack`."""
    layers = compose(settings)
    stream: Layer | None = None
    try:
        async with asyncio.timeout(CONNECT_TIMEOUT):
            for layer in layers:
                stream = await layer.dial(stream, settings, host, port)
    except BaseException:
        if stream is not None:
            stream.abort()
        raise
    assert stream is not None, "a stack has at least one layer"
    return stream
