"""XTLS Vision (codecs/vision.py) as a stream layer over a TLS layer that can step aside: it pads
and unpads the proxied stream, and when either side says "direct" it tells the TLS layer below
to pass that direction's bytes raw (`raw_reads()` / `raw_writes()`). Until the peer's "direct"
it takes the TLS layer's records one by one (`wants_records`), so that nothing raw is ever
handed to the TLS engine as a record."""

from __future__ import annotations

import asyncio
import logging
from typing import Protocol, cast

from elsewhere.codecs import vless
from elsewhere.codecs.vision import TrafficState, VisionReader, VisionWriter
from elsewhere.transports.layer import Layer

log = logging.getLogger("elsewhere.vision")


class RawSwitch(Protocol):
    """What a TLS layer under Vision offers."""

    def raw_reads(self) -> None: ...

    def raw_writes(self) -> None: ...


class VisionLayer(Layer):
    """`prefix` goes out in front of the first write, unpadded: the server's VLESS response
    header, which precedes the padded stream (Xray writes both in one buffer)."""

    def __init__(
        self,
        uuid: bytes,
        tls: RawSwitch,
        upper: asyncio.BaseProtocol | None = None,
        prefix: bytes = b"",
    ) -> None:
        super().__init__(upper)
        state = TrafficState()
        self.tls = tls
        self.reader = VisionReader(state, uuid)
        self.writer = VisionWriter(state, uuid)
        self.prefix = prefix
        self._raw_in = False
        self._raw_out = False

    @property
    def wants_records(self) -> bool:
        """Record by record while the peer may still say "direct": until it has, or until its
        padding ended inside TLS ("end") and the filter is done."""
        reader = self.reader
        return not self._raw_in and (reader.within_padding or reader.state.packets_to_filter > 0)

    def data_received(self, data: bytes) -> None:
        plain, direct = self.reader.decode(data)
        if direct and not self._raw_in:
            self._raw_in = True
            self.tls.raw_reads()  # before the next record is opened
            log.debug("XTLS Vision: the peer went direct")
        if plain:
            self.upper.data_received(plain)

    def write(self, data: bytes | bytearray | memoryview) -> None:
        assert self.lower is not None
        if self._raw_out:
            self.lower.write(data)
            return
        out, direct = self.writer.encode(bytes(data))
        if self.prefix:
            out, self.prefix = self.prefix + out, b""
        self.lower.write(out)
        if direct:
            self._raw_out = True
            self.tls.raw_writes()
            log.debug("XTLS Vision: we went direct")

    def write_eof(self) -> None:
        assert self.lower is not None
        if self.prefix:
            self.write(b"")
        self.lower.write_eof()

    def can_write_eof(self) -> bool:
        return self._raw_out and super().can_write_eof()


def start_vision(
    transport: asyncio.Transport, request: vless.VlessRequest[str], initial: bytes
) -> tuple[VisionLayer, bytes]:
    """A server's VLESS session with flow xtls-rprx-vision: the Vision layer goes between
    `transport` (a TLS layer that can step aside; reading paused) and whatever the session
    puts above it; `initial` (what came after the request header) is unpadded. Returns the
    layer, as the session's transport, and the unpadded initial bytes. The VLESS response
    header goes out in front of the first padded write."""
    tls = cast("RawSwitch", transport)
    records = getattr(transport, "records_one_by_one", None)
    if records is not None:
        records()
    layer = VisionLayer(request.uuid, tls, prefix=vless.encode_response())
    transport.set_protocol(layer)
    layer.connection_made(transport)
    plain = b""
    if initial:
        plain, _direct = layer.reader.decode(initial)
    return layer, plain
