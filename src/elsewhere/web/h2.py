"""HTTP/2 (RFC 9113) connections on h2, sans-I/O, in the events of web.events. h2 sends no
more than the peer's flow-control window and frame size allow and buffers nothing: here each
stream keeps what did not fit yet and sends it when the window opens. What we receive is
acknowledged (the window handed back) as the reader above consumes it, which is the
backpressure of one stream without stalling the others."""

from __future__ import annotations

import contextlib
from collections.abc import Sequence

import h2.config
import h2.connection
import h2.errors
import h2.events
import h2.exceptions
import h2.settings
import hyperframe.frame

from elsewhere.web.events import (
    Closed,
    Data,
    End,
    Event,
    Headers,
    Request,
    Reset,
    Response,
    Writable,
)

# Windows large enough for a fast link's bandwidth-delay product, and frames large enough that
# h2's per-frame Python cost stays small next to the bytes (the peer may use up to this).
WINDOW = 16 * 1024 * 1024
MAX_FRAME = 1 << 20
MAX_CONCURRENT_STREAMS = 128  # nginx's http2_max_concurrent_streams
MAX_HEADER_LIST = 64 * 1024
PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
_S = h2.settings.SettingCodes


def _raw_data_repr(data: bytes | None) -> str:
    """hyperframe's own, hexlifying the 10 bytes it shows instead of the whole payload: h2
    puts repr(frame) in a trace log call for every frame it receives, which made a 1 MB DATA
    frame cost 2 MB of hex (10 % of a transfer's CPU, measured). The text is the same."""
    if not data:
        return "None"
    r = data[:11].hex()
    return "<hex:" + (r[:20] + "..." if len(r) > 20 else r) + ">"


hyperframe.frame._raw_data_repr = _raw_data_repr


def _text(headers: Sequence[tuple[bytes, bytes]]) -> Headers:
    return [(k.decode("latin-1"), v.decode("latin-1")) for k, v in headers]


class _H2:
    http2 = True

    def __init__(self, client_side: bool) -> None:
        config = h2.config.H2Configuration(client_side=client_side, header_encoding=None)
        conn = h2.connection.H2Connection(config)
        values = {
            _S.INITIAL_WINDOW_SIZE: WINDOW,
            _S.MAX_FRAME_SIZE: MAX_FRAME,
            _S.MAX_CONCURRENT_STREAMS: MAX_CONCURRENT_STREAMS,
            _S.MAX_HEADER_LIST_SIZE: MAX_HEADER_LIST,
        }
        if client_side:
            values[_S.ENABLE_PUSH] = 0
        conn.local_settings = h2.settings.Settings(client=client_side, initial_values=values)
        # in force from the start (h2 would apply them only when acknowledged, and a settings
        # object made with values has nothing left to acknowledge)
        conn.max_inbound_frame_size = MAX_FRAME
        conn.incoming_buffer.max_frame_size = MAX_FRAME
        conn.initiate_connection()
        conn.increment_flow_control_window(WINDOW - 65535)
        self.conn = conn
        self.closed = False
        self._pending: dict[int, bytearray] = {}
        self._ending: set[int] = set()

    def data_to_send(self) -> list[bytes]:
        out = self.conn.data_to_send()
        return [out] if out else []

    def receive(self, data: bytes) -> list[Event]:
        if self.closed:
            return []
        try:
            events = self.conn.receive_data(data)
        except h2.exceptions.ProtocolError:
            self.closed = True
            return [Closed(error=True)]
        out: list[Event] = []
        writable = False
        for event in events:
            if isinstance(event, h2.events.DataReceived):
                sid = event.stream_id
                padding = event.flow_controlled_length - len(event.data)
                if padding:
                    self.conn.acknowledge_received_data(padding, sid)
                if event.data:
                    out.append(Data(sid, event.data))
            elif isinstance(event, h2.events.StreamEnded):
                out.append(End(event.stream_id))  # after the DataReceived it came with
            elif isinstance(event, h2.events.StreamReset):
                self._drop(event.stream_id)
                out.append(Reset(event.stream_id))
            elif isinstance(event, h2.events.WindowUpdated | h2.events.RemoteSettingsChanged):
                writable = True
            elif isinstance(event, h2.events.ConnectionTerminated):
                self.closed = True
                out.append(Closed(error=event.error_code != 0))
            else:
                made = self._event(event)
                if made is not None:
                    out.append(made)
        if writable and self._pending:
            self.flush()
            out.append(Writable())
        return out

    def events(self) -> list[Event]:
        return []  # h2 hands every event out as it receives its frame

    def receive_eof(self) -> list[Event]:
        self.closed = True
        out: list[Event] = [Reset(sid) for sid in list(self.conn.streams)]
        return [*out, Closed()]

    def _event(self, event: h2.events.Event) -> Event | None:
        return None

    def send(self, stream: int, data: bytes) -> None:
        if self.closed or not data:
            return
        pending = self._pending.get(stream)
        if pending is not None:
            pending += data
            return
        conn = self.conn
        try:
            window = conn.local_flow_control_window(stream)
        except h2.exceptions.StreamClosedError:
            return
        frame = conn.max_outbound_frame_size
        size = len(data)
        if size <= window and size <= frame:
            conn.send_data(stream, data)
            return
        self._pending[stream] = bytearray(data)
        self.flush()

    def end(self, stream: int) -> None:
        if self.closed:
            return
        if stream in self._pending:
            self._ending.add(stream)
            return
        with contextlib.suppress(h2.exceptions.StreamClosedError, h2.exceptions.ProtocolError):
            self.conn.end_stream(stream)

    def reset(self, stream: int) -> None:
        self._drop(stream)
        if self.closed:
            return
        with contextlib.suppress(h2.exceptions.StreamClosedError, h2.exceptions.ProtocolError):
            self.conn.reset_stream(stream, h2.errors.ErrorCodes.CANCEL)

    def buffered(self, stream: int) -> int:
        """Bytes of `stream` waiting for the peer's window."""
        pending = self._pending.get(stream)
        return 0 if pending is None else len(pending)

    def consumed(self, stream: int, size: int) -> None:
        """The reader above took `size` bytes of `stream`: the peer may send that much more."""
        if self.closed or size <= 0:
            return
        with contextlib.suppress(
            h2.exceptions.StreamClosedError, h2.exceptions.ProtocolError, KeyError
        ):
            self.conn.acknowledge_received_data(size, stream)

    def flush(self) -> None:
        conn = self.conn
        frame = conn.max_outbound_frame_size
        for stream, pending in list(self._pending.items()):
            try:
                while pending:
                    window = conn.local_flow_control_window(stream)
                    if window <= 0:
                        break
                    size = min(window, frame, len(pending))
                    conn.send_data(stream, bytes(pending[:size]))
                    del pending[:size]
            except (h2.exceptions.StreamClosedError, h2.exceptions.ProtocolError):
                self._drop(stream)
                continue
            if not pending:
                del self._pending[stream]
                if stream in self._ending:
                    self._ending.discard(stream)
                    self.end(stream)

    def _drop(self, stream: int) -> None:
        self._pending.pop(stream, None)
        self._ending.discard(stream)

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self.conn.close_connection()

    @property
    def open_streams(self) -> int:
        return len(self.conn.streams)


class H2Server(_H2):
    def __init__(self) -> None:
        super().__init__(client_side=False)

    def _event(self, event: h2.events.Event) -> Event | None:
        if isinstance(event, h2.events.RequestReceived):
            sid = event.stream_id
            method = target = ""
            authority = None
            headers: Headers = []
            for k, v in _text(event.headers or ()):
                if k == ":method":
                    method = v
                elif k == ":path":
                    target = v
                elif k == ":authority":
                    authority = v
                elif not k.startswith(":"):
                    headers.append((k, v))
                    if k == "host" and authority is None:
                        authority = v
            return Request(sid, method, target, authority, headers)
        return None

    def respond(
        self,
        stream: int,
        status: int,
        headers: Sequence[tuple[str, str]],
        *,
        end: bool = False,
        close: bool = False,
    ) -> None:
        if self.closed:
            return
        fields = [(":status", str(status)), *headers]
        try:
            self.conn.send_headers(stream, fields, end_stream=end)
        except (h2.exceptions.StreamClosedError, h2.exceptions.ProtocolError):
            return
        if close:
            self.close()


class H2Client(_H2):
    def __init__(self) -> None:
        super().__init__(client_side=True)

    @property
    def can_open(self) -> bool:
        if self.closed:
            return False
        conn = self.conn
        return conn.open_outbound_streams < conn.remote_settings.max_concurrent_streams

    def request(
        self,
        method: str,
        target: str,
        authority: str,
        headers: Sequence[tuple[str, str]],
        *,
        scheme: str = "https",
        end: bool = False,
    ) -> int:
        conn = self.conn
        sid = conn.get_next_available_stream_id()
        fields = [
            (":method", method),
            (":authority", authority),
            (":scheme", scheme),
            (":path", target),
            *headers,
        ]
        conn.send_headers(sid, fields, end_stream=end)
        return sid

    def _event(self, event: h2.events.Event) -> Event | None:
        if isinstance(event, h2.events.ResponseReceived):
            status = 0
            headers: Headers = []
            for k, v in _text(event.headers or ()):
                if k == ":status":
                    status = int(v)
                elif not k.startswith(":"):
                    headers.append((k, v))
            return Response(event.stream_id, status, headers)
        return None
