"""WebSocket (RFC 6455) as a stream layer: bytes written above become binary frames below,
data frames read below become bytes above. Pings and the closing handshake are answered by the
codec (codecs/websocket.py); a Close from the peer is an EOF for the stream above."""

from __future__ import annotations

import asyncio

from elsewhere.codecs.websocket import Close, Data, FrameDecoder, encode_frame
from elsewhere.errors import ProtocolError
from elsewhere.transports.layer import Layer

# Frames no larger than this: a CDN or reverse proxy in between may buffer whole frames.
MAX_FRAME = 1 << 16


class WebSocketLayer(Layer):
    def __init__(self, *, client: bool, upper: asyncio.BaseProtocol | None = None) -> None:
        super().__init__(upper)
        self.client = client
        self.decoder = FrameDecoder(client=client)
        self.eof = False

    def data_received(self, data: bytes) -> None:
        decoder = self.decoder
        decoder.feed(data)
        try:
            while (event := decoder.next_event()) is not None:
                if isinstance(event, Data):
                    self.upper.data_received(event.payload)
                elif isinstance(event, Close) and not self.eof:
                    self.eof = True
                    if not self.upper.eof_received():
                        self.close()
        except ProtocolError:
            self.abort()
            return
        out = decoder.data_to_send()
        if out and self.lower is not None:
            self.lower.write(out)

    def write(self, data: bytes | bytearray | memoryview) -> None:
        if not data or self.lower is None:
            return
        if len(data) <= MAX_FRAME:
            self.lower.write(encode_frame(data, mask=self.client))
            return
        view = memoryview(data)
        self.lower.write(
            b"".join(
                encode_frame(view[i : i + MAX_FRAME], mask=self.client)
                for i in range(0, len(view), MAX_FRAME)
            )
        )

    def can_write_eof(self) -> bool:
        # A Close frame ends the whole WebSocket (the peer answers Close at once), so it is no
        # half-close: saying so lets the relay keep the answer flowing after the user's EOF.
        return False

    def write_eof(self) -> None:
        """A WebSocket has no half-close: our Close frame ends our sending side."""
        self.decoder.close()
        if self.lower is not None:
            self.lower.write(self.decoder.data_to_send())

    def close(self) -> None:
        if not self.decoder.close_sent and self.lower is not None and not self.lower.is_closing():
            self.decoder.close()
            self.lower.write(self.decoder.data_to_send())
        super().close()
