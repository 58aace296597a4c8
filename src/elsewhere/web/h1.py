"""HTTP/1.1 (RFC 9112) connections on h11, sans-I/O, in the events of web.events: one request
at a time per connection, pipelined requests taken in turn, bodies by Content-Length or
chunked as h11 decides. Request number n on a connection is stream n."""

from __future__ import annotations

from collections.abc import Sequence
from typing import cast

import h11

from elsewhere.web.events import Closed, Data, End, Event, Headers, Request, Response

MAX_HEADER_BYTES = 16 * 1024


def _headers(raw: Sequence[tuple[bytes, bytes]]) -> Headers:
    return [(k.decode("latin-1"), v.decode("latin-1")) for k, v in raw]


def _encode(headers: Sequence[tuple[str, str]]) -> list[tuple[bytes, bytes]]:
    return [(k.encode("latin-1"), v.encode("latin-1")) for k, v in headers]


class _H1:
    http2 = False

    def __init__(self, role: type[h11.SERVER] | type[h11.CLIENT], max_header: int) -> None:
        self.conn = h11.Connection(role, max_incomplete_event_size=max_header)
        self.stream = 0
        self._out: list[bytes] = []
        self.closed = False  # nothing more will come or go: close the transport once written

    def data_to_send(self) -> list[bytes]:
        out, self._out = self._out, []
        return out

    def _send(self, event: h11.Event) -> None:
        try:
            data = self.conn.send_with_data_passthrough(event)
        except h11.LocalProtocolError:
            self.closed = True
            return
        if data:
            self._out += data

    def send(self, stream: int, data: bytes) -> None:
        if stream == self.stream and not self.closed and data:
            self._send(h11.Data(data=data))

    def buffered(self, stream: int) -> int:
        return 0  # h11 keeps nothing: written out at once

    def consumed(self, stream: int, size: int) -> None:
        """HTTP/1.1 has no flow control of its own: TCP's is the reader's pause."""

    def receive(self, data: bytes) -> list[Event]:
        if self.closed:
            return []
        self.conn.receive_data(data)
        return self.events()

    def receive_eof(self) -> list[Event]:
        if self.closed:
            return []
        self.conn.receive_data(b"")
        return self.events()

    def events(self) -> list[Event]:
        """What the data received so far makes (also after a cycle ended: pipelined ones)."""
        out: list[Event] = []
        conn = self.conn
        while not self.closed:
            try:
                event = conn.next_event()
            except h11.RemoteProtocolError:
                self.closed = True
                out.append(Closed(error=True))
                break
            if event is h11.NEED_DATA or event is h11.PAUSED:
                break
            made = self._event(cast(h11.Event, event))
            if made is not None:
                out.append(made)
            if isinstance(event, h11.ConnectionClosed):
                self.closed = True
                break
            if isinstance(event, h11.EndOfMessage):
                self._cycle()
        return out

    def _event(self, event: h11.Event) -> Event | None:
        if isinstance(event, h11.Data):
            return Data(self.stream, bytes(event.data))
        if isinstance(event, h11.EndOfMessage):
            return End(self.stream)
        if isinstance(event, h11.ConnectionClosed):
            return Closed()
        return None

    def _cycle(self) -> None:
        conn = self.conn
        if conn.our_state is h11.DONE and conn.their_state is h11.DONE:
            conn.start_next_cycle()
        elif h11.MUST_CLOSE in (conn.our_state, conn.their_state) and (
            conn.our_state in (h11.DONE, h11.MUST_CLOSE)
            and conn.their_state in (h11.DONE, h11.MUST_CLOSE)
        ):
            self.closed = True


class H1Server(_H1):
    def __init__(self, max_header: int = MAX_HEADER_BYTES) -> None:
        super().__init__(h11.SERVER, max_header)

    def _event(self, event: h11.Event) -> Event | None:
        if isinstance(event, h11.Request):
            self.stream += 1
            headers = _headers(event.headers.raw_items())
            headers = [(k.lower(), v) for k, v in headers]
            host = next((v for k, v in headers if k == "host"), None)
            return Request(
                self.stream,
                event.method.decode("latin-1"),
                event.target.decode("latin-1"),
                host,
                headers,
            )
        return super()._event(event)

    def respond(
        self,
        stream: int,
        status: int,
        headers: Sequence[tuple[str, str]],
        *,
        end: bool = False,
        close: bool = False,
    ) -> None:
        """A response head; `end`: with an empty body; `close`: and the connection ends."""
        if stream != self.stream or self.closed or self.conn.our_state is not h11.SEND_RESPONSE:
            return
        fields = list(headers)
        if end:
            fields.append(("content-length", "0"))
        if close:
            fields.append(("connection", "close"))
        self._send(h11.Response(status_code=status, headers=_encode(fields)))
        if end:
            self.end(stream)

    def end(self, stream: int) -> None:
        if stream != self.stream or self.closed or self.conn.our_state is not h11.SEND_BODY:
            return
        self._send(h11.EndOfMessage())
        self._cycle()

    def reset(self, stream: int) -> None:
        """No way to end one request alone: the connection ends."""
        if stream == self.stream:
            self.closed = True


class H1Client(_H1):
    def __init__(self, max_header: int = MAX_HEADER_BYTES) -> None:
        super().__init__(h11.CLIENT, max_header)

    @property
    def idle(self) -> bool:
        """Ready for the next request (the last one's exchange complete)."""
        return not self.closed and self.conn.our_state is h11.IDLE

    def request(
        self,
        method: str,
        target: str,
        authority: str,
        headers: Sequence[tuple[str, str]],
        *,
        end: bool = False,
    ) -> int:
        self.stream += 1
        fields = [("host", authority), *headers]
        if not end and not any(k == "content-length" for k, _ in headers):
            fields.append(("transfer-encoding", "chunked"))
        self._send(h11.Request(method=method, target=target, headers=_encode(fields)))
        if end:
            self.end(self.stream)
        return self.stream

    def end(self, stream: int) -> None:
        if stream != self.stream or self.closed or self.conn.our_state is not h11.SEND_BODY:
            return
        self._send(h11.EndOfMessage())
        self._cycle()

    def reset(self, stream: int) -> None:
        if stream == self.stream:
            self.closed = True

    def _event(self, event: h11.Event) -> Event | None:
        if isinstance(event, h11.Response):
            return Response(self.stream, event.status_code, _headers(event.headers.raw_items()))
        if isinstance(event, h11.InformationalResponse):
            return None
        return super()._event(event)
