"""Our TLS 1.3 server (codecs/tls13_server.py) as a stream layer, once its handshake has been
started: a protocol to the TCP transport below, a transport to the protocol above, which gets
`connection_made` when the client's Finished has verified, then plaintext.

XTLS Vision's direct copy: once both ends agree, the inner TLS flows outside ours; `raw_reads()`
makes everything after the current record go up as it arrives, `raw_writes()` makes writes go
to TCP as they are (after what was sealed before them)."""

from __future__ import annotations

import asyncio
from typing import Any

from elsewhere.codecs.tls13_server import Tls13Server
from elsewhere.errors import ProtocolError
from elsewhere.transports.layer import Layer


class Tls13ServerLayer(Layer):
    def __init__(self, tls: Tls13Server, upper: asyncio.BaseProtocol) -> None:
        super().__init__(upper)
        self.tls = tls
        self._connected = False
        self._raw_in = False
        self._raw_out = False
        self._paused = False
        self._peer_done = False

    # asyncio.Protocol (the TCP transport below)

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.lower = transport  # type: ignore[assignment]
        # the upper protocol hears of it when the handshake completes (data_received)

    def data_received(self, data: bytes) -> None:
        if self._raw_in:
            self.upper.data_received(data)
            return
        self.tls.receive(data)
        self._pump()

    def _pump(self) -> None:
        """Open the records that are in; hand their content up, joined into one chunk, or one
        record at a time to a protocol above that `wants_records` (Vision, until it switches:
        it must see where the peer's padded stream ends and its raw stream begins)."""
        tls = self.tls
        chunks: list[bytes] = []
        try:
            while not self._raw_in and not self._paused:
                data = tls.next_data()
                if not self._connected and tls.handshake_complete:
                    self._connected = True
                    self.upper.connection_made(self)
                if data is None:
                    break
                if not data:
                    continue
                if getattr(self.upper, "wants_records", False):
                    self._deliver(chunks)
                    chunks = []
                    self.upper.data_received(data)
                else:
                    chunks.append(data)
        except ProtocolError:
            self._deliver(chunks)
            self.abort()
            return
        out = tls.take_output()
        if out and self.lower is not None:
            self.lower.write(out)
        self._deliver(chunks)
        if self._raw_in:
            rest = tls.take_rest()
            if rest:
                self.upper.data_received(rest)
        elif tls.peer_closed and self._connected and not self._paused:
            self._peer_closed()

    def _peer_closed(self) -> None:
        if self._peer_done:
            return
        self._peer_done = True
        if not self.upper.eof_received():
            self.close()

    def _deliver(self, chunks: list[bytes]) -> None:
        if chunks:
            self.upper.data_received(chunks[0] if len(chunks) == 1 else b"".join(chunks))

    def eof_received(self) -> bool | None:
        if not self._connected:
            return False  # cut short inside the handshake: close
        if self._raw_in:
            return bool(self.upper.eof_received())
        self._peer_closed()  # a FIN without close_notify: a truncation, taken as the end
        return not self._closing

    def connection_lost(self, exc: Exception | None) -> None:
        self._closing = True
        if self._connected:
            self.upper.connection_lost(exc)

    # asyncio.Transport (the protocol above)

    def write(self, data: bytes | bytearray | memoryview) -> None:
        if not data or self._closing or self.lower is None:
            return
        if self._raw_out:
            self.lower.write(data)
            return
        self.lower.write(self.tls.send(data))

    def write_eof(self) -> None:
        if not self._raw_out or self.lower is None:
            raise NotImplementedError("TLS here has no half-close; close() sends close_notify")
        self.lower.write_eof()  # after Vision's direct: the raw stream's own FIN

    def can_write_eof(self) -> bool:
        return self._raw_out and self.lower is not None and self.lower.can_write_eof()

    def close(self) -> None:
        if self._closing:
            return
        self._closing = True
        if self.lower is not None:
            if not self._raw_out:
                self.lower.write(self.tls.close())
            self.lower.close()

    def pause_reading(self) -> None:
        self._paused = True
        super().pause_reading()

    def resume_reading(self) -> None:
        self._paused = False
        super().resume_reading()
        if not self._raw_in:
            asyncio.get_running_loop().call_soon(self._pump)

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        if name == "alpn":
            return self.tls.alpn
        return super().get_extra_info(name, default)

    # XTLS Vision

    def raw_reads(self) -> None:
        """From now on bytes from TCP go up unopened (the peer sent Vision's direct command)."""
        self._raw_in = True

    def raw_writes(self) -> None:
        """From now on writes go to TCP unsealed (we sent Vision's direct command)."""
        self._raw_out = True
