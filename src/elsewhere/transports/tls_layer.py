"""Server-side TLS (RFC 8446, RFC 5246) as a stream layer: the stdlib's OpenSSL driven through
memory BIOs (`SSLContext.wrap_bio`), so that a failed handshake ends the way an OpenSSL web server
(nginx, `openssl s_server`) ends it. When a censor replays a recorded client flight in one piece,
OpenSSL answers the ClientHello, fails on the replayed Finished and adds an alert: nginx sends all
of that and then a FIN. asyncio's and uvloop's built-in TLS drop what OpenSSL had queued when the
handshake fails in the same read, and send nothing — a tell. Here the outgoing BIO is always
flushed before the close. Failed handshakes are also reported (`on_handshake_failed`), so the
server can count them as probes, which it cannot see behind `create_server(ssl=...)`.

nginx on an `ssl` port peeks at the first byte before OpenSSL sees anything
(ngx_http_ssl_handshake): a TLS handshake record (0x16) or an SSLv2 hello (high bit set) goes to
OpenSSL; anything else is served as plain HTTP, which ends in its 400 "The plain HTTP request was
sent to HTTPS port". With `on_plain`, this layer makes the same decision and hands such a
connection over."""

from __future__ import annotations

import asyncio
import contextlib
import ssl
import threading
import time
from collections.abc import Callable
from typing import Any, cast

from elsewhere.transports.tcp import TLS_HANDSHAKE_TIMEOUT

# What one socket read may bring, and the most decrypted bytes handed up in one data_received:
# large chunks keep the relay's per-chunk cost (a method call and a socket write) off the
# per-record path. OpenSSL gives out one record (at most 16 KiB) per read call, so records are
# decrypted into one buffer and copied out once.
READ_CHUNK = 256 * 1024
# A handshake not finished this long after the accept is closed, without a byte (nginx:
# client_header_timeout, 60 s by default, which runs from the accept).
HANDSHAKE_TIMEOUT = TLS_HANDSHAKE_TIMEOUT
TLS_HANDSHAKE_RECORD = 0x16  # RFC 8446 §5.1 ContentType handshake(22)

HandshakeFailed = Callable[[BaseException | None], None]
# (the TCP transport, reading paused; what it sent so far; when it was accepted, wall clock)
PlainTaker = Callable[[asyncio.Transport, bytes, float], None]

_HANDSHAKE, _OPEN, _LINGERING, _CLOSED = "handshake", "open", "lingering", "closed"


class _Buffers(threading.local):
    """Read buffers per thread (an event loop runs on one), not per connection: a thousand
    idle tunnels must not hold half a MiB each. Per thread, not per process, because OpenSSL
    decrypts with the GIL released. `received` is lent to the socket for one read and copied
    into the BIO at once; `plain` takes decrypted records until they are copied out."""

    def __init__(self) -> None:
        self.received = memoryview(bytearray(READ_CHUNK))
        self.plain = memoryview(bytearray(READ_CHUNK))


_buffers = _Buffers()


class TlsServerLayer(asyncio.BufferedProtocol, asyncio.Transport):
    """The server end of a TLS connection: a protocol to the accepted TCP transport below, a
    transport to the protocol above (`upper`), which gets `connection_made` once the handshake
    is done, then plaintext. A handshake that fails, times out or is cut short never reaches
    `upper`: whatever OpenSSL produced (its reply and its alert) goes out, the connection is
    closed (a FIN, as from nginx) and `on_handshake_failed` is called once with the reason.

    With `on_plain`, a connection whose first byte is neither a handshake record nor an SSLv2
    hello is no TLS at all: the TCP transport below, its reading paused, goes to `on_plain`
    with the bytes it sent, and this layer is out of the way (`upper` never hears of it).

    close_lingering() is nginx's lingering close over TLS: close_notify and a FIN, then the
    peer's bytes are read (undecrypted) and dropped until it closes or the protocol above does.

    get_extra_info("accepted_at") is when the connection was accepted (wall clock): nginx's
    client_header_timeout runs from then through the handshake to the end of the first request
    head, so a web server served above counts from then too.

    Not a transports.layer.Layer: uvloop reads into a protocol's own buffer only when it is not
    an asyncio.Protocol, and a fresh quarter-MiB bytes object per socket read made glibc trim
    and regrow its heap (brk, page faults): 2.4 times the server CPU per GB, measured.
    """

    def __init__(
        self,
        context: ssl.SSLContext,
        upper: asyncio.BaseProtocol,
        *,
        on_handshake_failed: HandshakeFailed | None = None,
        on_plain: PlainTaker | None = None,
        handshake_timeout: float = HANDSHAKE_TIMEOUT,
    ) -> None:
        self.context = context
        self.upper: Any = upper
        self.lower: asyncio.Transport | None = None
        self.on_handshake_failed = on_handshake_failed
        self.on_plain = on_plain
        self.handshake_timeout = handshake_timeout
        self._accepted_at = 0.0
        self._peeked = on_plain is None  # the first byte was looked at (or need not be)
        self._incoming = ssl.MemoryBIO()
        self._outgoing = ssl.MemoryBIO()
        self._sslobj: ssl.SSLObject | None = None
        self._state = _HANDSHAKE
        self._closing = False
        self._timer: asyncio.TimerHandle | None = None
        self._paused = False  # reading paused by the protocol above
        self._read_scheduled = False
        self._writing_paused = False
        self._upper_connected = False
        self._eof_pending = False  # the peer's end, read while the protocol above was paused
        self._peer_done = False  # ... and passed up
        # XTLS Vision (transports/vision.py): records to OpenSSL one at a time, then raw
        self._records: bytearray | None = None
        self._raw_in = False
        self._raw_out = False

    # asyncio.BufferedProtocol (the TCP transport below calls these)

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.lower = cast("asyncio.Transport", transport)  # uvloop's are not asyncio's
        self._sslobj = self.context.wrap_bio(self._incoming, self._outgoing, server_side=True)
        loop = asyncio.get_running_loop()
        self._timer = loop.call_later(self.handshake_timeout, self._handshake_timed_out)
        self._accepted_at = time.time()

    def get_buffer(self, sizehint: int) -> memoryview:
        return _buffers.received

    def buffer_updated(self, nbytes: int) -> None:
        self.data_received(_buffers.received[:nbytes])

    def data_received(self, data: bytes | memoryview) -> None:
        if self._state is _OPEN:
            if self._raw_in:
                self.upper.data_received(bytes(data))
                return
            if self._records is not None:
                self._records += data
                if not self._paused:
                    self._read_records()
                return
            self._incoming.write(data)
            if not self._paused:
                self._read()
        elif self._state is _LINGERING:
            self.upper.data_received(bytes(data))  # read and dropped: see close_lingering
        elif self._state is _HANDSHAKE:
            if not self._peeked and data:
                self._peeked = True
                first = data[0]
                if first != TLS_HANDSHAKE_RECORD and not first & 0x80:
                    self._plain(bytes(data))
                    return
            self._incoming.write(data)
            self._handshake()

    def eof_received(self) -> bool:
        if self._state is _LINGERING:
            self._peer_closed()  # nginx's lingering read gets 0 and closes
            return False
        if self._raw_in and self._state is _OPEN:
            return bool(self.upper.eof_received())  # the raw stream's own FIN
        self._incoming.write_eof()
        if self._state is _HANDSHAKE:
            self._handshake()  # fails: OpenSSL answers a cut-short handshake as it does
        if self._state is _OPEN and not self._paused:
            self._read()
        # open for writing until the protocol above decides (in _peer_closed)
        return self._state is _OPEN

    def connection_lost(self, exc: Exception | None) -> None:
        state, self._state = self._state, _CLOSED
        self._closing = True
        self._cancel_timer()
        if state is _HANDSHAKE:
            self._failed(exc)
        elif self._upper_connected:
            self.upper.connection_lost(exc)

    def pause_writing(self) -> None:
        self._writing_paused = True
        if self._upper_connected:
            self.upper.pause_writing()

    def resume_writing(self) -> None:
        self._writing_paused = False
        if self._upper_connected:
            self.upper.resume_writing()

    # asyncio.Transport (the protocol above calls these)

    def write(self, data: bytes | bytearray | memoryview) -> None:
        if self._state is not _OPEN or self._closing or not data:
            return
        if self._raw_out:
            assert self.lower is not None
            self.lower.write(data)
            return
        assert self._sslobj is not None
        try:
            self._sslobj.write(data)  # the whole chunk: OpenSSL cuts it into records
        except ssl.SSLError as exc:
            self._fatal(exc)
            return
        self._flush()

    def writelines(self, list_of_data: Any) -> None:
        self.write(b"".join(list_of_data))

    def write_eof(self) -> None:
        if not self._raw_out or self.lower is None:
            raise NotImplementedError("TLS here has no half-close; close() sends close_notify")
        self.lower.write_eof()  # after Vision's direct: the raw stream's own FIN

    def can_write_eof(self) -> bool:
        return self._raw_out and self.lower is not None and self.lower.can_write_eof()

    def close_lingering(self) -> None:
        """nginx's lingering close over TLS (ngx_http_set_lingering_close): close_notify and a
        FIN go out at once, and the connection stays open for reading, so that what the peer
        sends after the answer is taken in, not answered with a RST. Like nginx, which reads
        the socket itself once its SSL shutdown is sent, the bytes that come are not decrypted
        (a record that would not decrypt draws no alert): they go up to the protocol above, as
        bytes it must drop, only so that it sees each read and can time its lingering by them.
        It ends on the peer's FIN (eof_received) or on close(). Measured against nginx 1.22.1:
        tests/interop/test_tls_endings_nginx.py.

        Not write_eof: can_write_eof() stays False, so a relay never half-closes TLS and the
        tunnels' data path is as before."""
        if self._state is not _OPEN or self._closing or self.lower is None:
            return
        assert self._sslobj is not None
        self._state = _LINGERING
        # records read and not yet decrypted are dropped here, so that unwrap's second
        # SSL_shutdown (waiting for the peer's close_notify) finds nothing to parse or refuse
        self._incoming.read()
        with contextlib.suppress(ssl.SSLError, ValueError):
            self._sslobj.unwrap()  # queues close_notify; the peer's is not waited for
        self._flush()
        if self.lower.can_write_eof():
            self.lower.write_eof()
        else:
            self.close()

    def close(self) -> None:
        if self._closing:
            return
        self._closing = True
        if self._state is _OPEN and self._sslobj is not None and not self._raw_out:
            # queues close_notify; nginx does not wait for the peer's either
            with contextlib.suppress(ssl.SSLError, ValueError):
                self._sslobj.unwrap()
            self._flush()
        self._state = _CLOSED
        self._cancel_timer()
        if self.lower is not None:
            self.lower.close()

    def abort(self) -> None:
        self._closing = True
        self._state = _CLOSED
        self._cancel_timer()
        if self.lower is not None:
            self.lower.abort()

    def is_closing(self) -> bool:
        return self._closing or (self.lower is not None and self.lower.is_closing())

    def pause_reading(self) -> None:
        self._paused = True
        if self.lower is not None:
            self.lower.pause_reading()

    def resume_reading(self) -> None:
        self._paused = False
        if self.lower is not None:
            self.lower.resume_reading()
        if self._state is _OPEN and not self._read_scheduled:
            # records may be waiting in the BIO: hand them up from the loop, not from inside
            # the caller
            self._read_scheduled = True
            asyncio.get_running_loop().call_soon(self._scheduled_read)

    def is_reading(self) -> bool:
        return not self._paused and self.lower is not None and self.lower.is_reading()

    def set_protocol(self, protocol: asyncio.BaseProtocol) -> None:
        self.upper = protocol

    def get_protocol(self) -> asyncio.BaseProtocol:
        return cast(asyncio.BaseProtocol, self.upper)

    def get_write_buffer_size(self) -> int:
        # OpenSSL's output is flushed on every write: only the socket's buffer holds any
        return self.lower.get_write_buffer_size() if self.lower is not None else 0

    def set_write_buffer_limits(self, high: int | None = None, low: int | None = None) -> None:
        if self.lower is not None:
            self.lower.set_write_buffer_limits(high, low)

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        if name == "accepted_at":
            return self._accepted_at
        sslobj = self._sslobj
        if sslobj is not None:
            if name == "ssl_object":
                return sslobj
            if name == "sslcontext":
                return sslobj.context
            if name == "peercert":
                return sslobj.getpeercert()
            if name == "cipher":
                return sslobj.cipher()
            if name == "compression":
                return sslobj.compression()
        if self.lower is None:
            return default
        return self.lower.get_extra_info(name, default)

    # XTLS Vision

    def records_one_by_one(self) -> None:
        """From now on OpenSSL is given one whole record at a time and drained after each, so
        that the protocol above can call raw_reads() between two records. (Records already
        given to it before this came with the VLESS request, before any "direct" can.)"""
        if self._records is None:
            self._records = bytearray()

    def raw_reads(self) -> None:
        """What follows the record just opened goes up as it is (the peer went direct)."""
        self._raw_in = True

    def raw_writes(self) -> None:
        """Writes go to TCP as they are (we went direct), after what OpenSSL sealed before."""
        self._flush()
        self._raw_out = True

    def _read_records(self) -> None:
        records = self._records
        assert records is not None
        while not self._raw_in and not self._paused and self._state is _OPEN:
            if not getattr(self.upper, "wants_records", True):
                # Vision's padding ended inside TLS: no "direct" can follow, back to bulk reads
                self._records = None
                if records:
                    self._incoming.write(bytes(records))
                    self._read()
                return
            if len(records) < 5:
                break
            end = 5 + (records[3] << 8 | records[4])
            if len(records) < end:
                break
            self._incoming.write(bytes(records[:end]))
            del records[:end]
            self._read()
        if self._raw_in and records:
            rest = bytes(records)
            records.clear()
            self.upper.data_received(rest)

    # private

    def _handshake(self) -> None:
        assert self._sslobj is not None
        try:
            self._sslobj.do_handshake()
        except ssl.SSLWantReadError:
            self._flush()
            return
        except ssl.SSLError as exc:
            self._fail_handshake(exc)
            return
        self._cancel_timer()
        self._state = _OPEN
        self._flush()  # the server's last flight and, in TLS 1.3, its session tickets
        self._upper_connected = True
        self.upper.connection_made(self)
        if self._writing_paused:
            self.upper.pause_writing()
        if self._state is _OPEN and not self._paused:
            self._read()  # application data that came with the client's Finished

    def _fail_handshake(self, exc: BaseException | None) -> None:
        self._state = _CLOSED
        self._closing = True
        self._cancel_timer()
        self._flush()  # OpenSSL's reply to what it did read, and its alert
        assert self.lower is not None
        self.lower.close()
        self._failed(exc)

    def _failed(self, exc: BaseException | None) -> None:
        hook, self.on_handshake_failed = self.on_handshake_failed, None
        if hook is not None:
            hook(exc)

    def _plain(self, received: bytes) -> None:
        """No TLS: the connection below is handed over as it is, and this layer forgets it."""
        assert self.lower is not None and self.on_plain is not None
        lower, take = self.lower, self.on_plain
        self._state = _CLOSED
        self._closing = True
        self._cancel_timer()
        self.lower = None
        self.on_handshake_failed = self.on_plain = None
        lower.pause_reading()
        take(lower, received, self._accepted_at)

    def _handshake_timed_out(self) -> None:
        self._timer = None
        if self._state is _HANDSHAKE:
            self._fail_handshake(TimeoutError("TLS handshake timed out"))

    def _scheduled_read(self) -> None:
        self._read_scheduled = False
        if self._state is _OPEN and not self._paused:
            self._read()
            if self._records is not None:
                self._read_records()

    def _read(self) -> None:
        """Decrypt what the incoming BIO holds and hand it up in chunks of up to READ_CHUNK,
        until it is empty or the protocol above pauses or closes; then the peer's end, if
        that is what came."""
        if self._eof_pending:
            self._eof_pending = False
            self._peer_closed()
            return
        assert self._sslobj is not None
        # read into our buffer (typeshed knows only read() -> bytes)
        read = cast(Callable[[int, memoryview], int], self._sslobj.read)
        view = _buffers.plain
        size = len(view)
        ended: BaseException | None = None
        peer_closed = False
        while True:
            filled = 0
            try:
                while filled < size:
                    count = read(size - filled, view[filled:])
                    if not count:  # close_notify (the stdlib says so with 0, not an error)
                        peer_closed = True
                        break
                    filled += count
            except ssl.SSLWantReadError:
                pass
            except (ssl.SSLZeroReturnError, ssl.SSLEOFError):
                # the stream ended without close_notify: a truncation nginx tolerates too
                peer_closed = True
            except ssl.SSLError as exc:
                ended = exc
            if filled:
                self.upper.data_received(bytes(view[:filled]))
            if ended is not None:
                self._fatal(ended)
                return
            if self._state is not _OPEN or self._closing:
                return
            if peer_closed:
                if self._paused:
                    self._eof_pending = True
                else:
                    self._peer_closed()
                return
            if filled < size or self._paused:
                return

    def _peer_closed(self) -> None:
        if self._peer_done:
            return
        self._peer_done = True
        if not self.upper.eof_received():
            self.close()

    def _fatal(self, exc: BaseException) -> None:
        """A record that does not decrypt past the handshake: corruption or tampering. OpenSSL's
        alert goes out, and the connection is cut."""
        self._flush()
        self.abort()

    def _flush(self) -> None:
        if self._outgoing.pending and self.lower is not None:
            self.lower.write(self._outgoing.read())

    def _cancel_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
