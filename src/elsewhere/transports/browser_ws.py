"""WebSocket (RFC 6455) over TLS that opens with a browser's ClientHello, for censors that block
by TLS fingerprint (JA3/JA4): Python's `ssl` hello is plainly not a browser's. The TLS handshake,
the upgrade and the framing are done by curl-impersonate (BoringSSL set up as Chrome, Firefox or
Safari set it up) through the optional `curl_cffi` extra; this module wraps its AsyncWebSocket
as a stream layer, the way transports.websocket wraps our own codec.

The certificate pin (`pcs`: SHA-256 of the leaf's DER, transports.tls) cannot be handed to curl,
which pins public keys (CURLOPT_PINNEDPUBLICKEY, SHA-256 of the SubjectPublicKeyInfo). So the
first dial to a pinned server makes a bare TLS connection, compares the leaf's DER with the pin
and learns its key's hash; every WebSocket dial after that has curl refuse any other key inside
the handshake, before the upgrade request (path, Host) is sent, and compares the whole
certificate with the pin once more before any protocol byte goes out."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import hmac
import ipaddress
import logging
import os
import socket
import ssl
import weakref
from collections import deque
from typing import TYPE_CHECKING, Any

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from curl_cffi import Curl, CurlECode, CurlError, CurlInfo, CurlOpt, CurlWsFlag
from curl_cffi import ffi as curl_ffi
from curl_cffi import lib as curl_lib
from curl_cffi.requests import AsyncSession, AsyncWebSocket, WebSocketClosed
from curl_cffi.requests.impersonate import resolve_latest_browser_type

from elsewhere.codecs.websocket import CLOSE_NORMAL
from elsewhere.transports.layer import Layer
from elsewhere.transports.tls import PinMismatchError, certificate_pin, parse_pin
from elsewhere.transports.websocket import MAX_FRAME

if TYPE_CHECKING:
    from elsewhere.transports.settings import StreamSettings

log = logging.getLogger("elsewhere.transports")

# asyncio's defaults; the relay raises them (relay.WRITE_HIGH/LOW).
WRITE_HIGH = 64 * 1024
WRITE_LOW = 16 * 1024
# Messages curl_cffi may hold on each side beyond our own buffer: with MAX_FRAME messages this
# is 256 KiB each way, and a paused reader stops curl reading the socket once it is full.
SEND_QUEUE = 4
RECV_QUEUE = 4
# Our server sends MAX_FRAME frames, but a CDN in between may merge them into larger messages.
MAX_MESSAGE = 16 << 20
CLOSE_TIMEOUT = 3.0
# curl_cffi counts live WebSockets against this per session; a client never holds this many.
MAX_STREAMS = 1 << 14


class BrowserWebSocket(Layer):
    """A stream over a curl_cffi AsyncWebSocket: write() queues bytes for a sender task, which
    sends them as binary messages of at most MAX_FRAME; a reader task hands each message up.
    A Close from the server is an EOF for the protocol above, as in WebSocketLayer."""

    def __init__(self, ws: AsyncWebSocket, sessions: _Sessions) -> None:
        super().__init__()
        self.ws = ws
        self._sessions = sessions
        self._loop = asyncio.get_running_loop()
        self._pending: deque[bytes] = deque()
        self._buffered = 0
        self._high, self._low = WRITE_HIGH, WRITE_LOW
        self._writing_paused = False
        self._wake = asyncio.Event()
        self._reading = asyncio.Event()
        self._reading.set()
        self._eof_wanted = False  # write_eof() called: a Close goes out after the data
        self._send_ended = False  # our Close is out, or the server's ended the WebSocket
        self._eof_seen = False
        self._lost = False
        self._sender = self._loop.create_task(self._send_loop())
        self._receiver = self._loop.create_task(self._receive_loop())

    # asyncio.Transport (the protocol above calls these)
    def write(self, data: bytes | bytearray | memoryview) -> None:
        if not data or self._closing or self._eof_wanted:
            return
        chunk = bytes(data)  # the caller may reuse a bytearray once write() returns
        self._pending.append(chunk)
        self._buffered += len(chunk)
        self._wake.set()
        if not self._writing_paused and self._buffered > self._high:
            self._writing_paused = True
            self.upper.pause_writing()

    def can_write_eof(self) -> bool:
        return True

    def write_eof(self) -> None:
        """A WebSocket has no half-close: our Close frame ends our sending side."""
        self._eof_wanted = True
        self._wake.set()

    def close(self) -> None:
        """Send what is buffered, then the Close frame; nothing more is handed up."""
        if self._closing:
            return
        self._closing = True
        self._reading.clear()
        self._wake.set()

    def abort(self) -> None:
        self._closing = True
        self._pending.clear()
        self._buffered = 0
        self._finish(None)

    def is_closing(self) -> bool:
        return self._closing

    def pause_reading(self) -> None:
        self._reading.clear()

    def resume_reading(self) -> None:
        if not self._closing:
            self._reading.set()

    def is_reading(self) -> bool:
        return self._reading.is_set()

    def get_write_buffer_size(self) -> int:
        return self._buffered

    def get_write_buffer_limits(self) -> tuple[int, int]:
        return self._low, self._high

    def set_write_buffer_limits(self, high: int | None = None, low: int | None = None) -> None:
        self._high = WRITE_HIGH if high is None else high
        self._low = self._high // 4 if low is None else low

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        if self._lost:  # the curl handle is gone
            return default
        curl = self.ws.curl
        try:
            if name == "peername":
                return (_text(curl.getinfo(CurlInfo.PRIMARY_IP)),
                        curl.getinfo(CurlInfo.PRIMARY_PORT))
            if name == "sockname":
                return (_text(curl.getinfo(CurlInfo.LOCAL_IP)), curl.getinfo(CurlInfo.LOCAL_PORT))
        except CurlError:
            return default
        return default

    # private
    async def _send_loop(self) -> None:
        ws = self.ws
        while True:
            if self._pending:
                # whatever the protocol above wrote meanwhile leaves as one message
                data = self._pending[0] if len(self._pending) == 1 else b"".join(self._pending)
                self._pending.clear()
                view = memoryview(data)
                try:
                    for start in range(0, len(view), MAX_FRAME):
                        if not self._send_ended:
                            await ws.send(view[start : start + MAX_FRAME], CurlWsFlag.BINARY)
                except WebSocketClosed:
                    # the server's Close came first: what is left has nowhere to go, and the
                    # reader ends the stream cleanly once it has handed up the server's last data
                    self._send_ended = True
                except CurlError as exc:
                    self._finish(ConnectionResetError(f"WebSocket send failed: {exc}"))
                    return
                self._buffered -= len(data)
                if self._writing_paused and self._buffered <= self._low:
                    self._writing_paused = False
                    self.upper.resume_writing()
                continue
            if self._closing:
                if not self._send_ended:
                    with contextlib.suppress(CurlError):
                        await ws.close(CLOSE_NORMAL, timeout=CLOSE_TIMEOUT)
                self._finish(None)
                return
            if self._eof_wanted and not self._send_ended:
                # curl_cffi's writer stops after a Close; its reader reads on until the
                # server's Close answers ours
                self._send_ended = True
                with contextlib.suppress(WebSocketClosed):
                    await ws.send(CLOSE_NORMAL.to_bytes(2, "big"), CurlWsFlag.CLOSE)
                continue
            self._wake.clear()
            await self._wake.wait()

    async def _receive_loop(self) -> None:
        ws = self.ws
        try:
            while True:
                message, flags = await ws.recv()
                # holding this message while paused also stops us taking more, so curl_cffi's
                # queue fills, curl stops reading the socket and TCP pushes back on the server
                await self._reading.wait()
                if flags & CurlWsFlag.CLOSE:
                    self._end_of_stream()
                elif message and not self._closing:
                    self.upper.data_received(message)
        except WebSocketClosed:
            # after the server's Close, or a bare TCP/TLS end without one, which the stdlib
            # path (TLS under WebSocketLayer) also takes as an EOF
            self._end_of_stream()
            self._finish(None)
        except CurlError as exc:
            self._finish(ConnectionResetError(f"WebSocket receive failed: {exc}"))

    def _end_of_stream(self) -> None:
        if self._eof_seen or self._closing:
            return
        self._eof_seen = True
        if not self.upper.eof_received():
            self.close()

    def _finish(self, exc: Exception | None) -> None:
        if self._lost:
            return
        self._lost = self._closing = True
        self._reading.clear()
        current = asyncio.current_task()
        for task in (self._sender, self._receiver):
            if task is not current:
                task.cancel()
        self.ws.terminate()
        self._sessions.release()
        self._loop.call_soon(self._connection_lost, exc)

    def _connection_lost(self, exc: Exception | None) -> None:
        self.upper.connection_lost(exc)


class _Sessions:
    """One curl_cffi AsyncSession per event loop, shared by the streams open on it and closed
    with the last of them: each session runs a 10 Hz timer, which one per stream would waste."""

    def __init__(self) -> None:
        self.session: AsyncSession[Any] | None = None
        self.users = 0
        self.closing: set[asyncio.Task[None]] = set()

    def acquire(self) -> AsyncSession[Any]:
        if self.session is None:
            self.session = AsyncSession(max_clients=MAX_STREAMS, trust_env=False)
        self.users += 1
        return self.session

    def release(self) -> None:
        self.users -= 1
        if self.users == 0 and self.session is not None:
            session, self.session = self.session, None
            task = asyncio.get_running_loop().create_task(session.close())
            self.closing.add(task)
            task.add_done_callback(self.closing.discard)


_sessions: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _Sessions] = (
    weakref.WeakKeyDictionary()
)
# pin digest -> curl's public-key pin for the certificate that matched it
_key_pins: dict[bytes, str] = {}


async def dial_browser_ws(
    settings: StreamSettings, impersonate: str, host: str, port: int, timeout: float
) -> BrowserWebSocket:
    """A WebSocket to the server whose TLS hello is `impersonate`'s (a curl_cffi target such as
    "chrome"). Raises PinMismatchError or ssl.SSLCertVerificationError for a certificate we
    refuse, TimeoutError, or ConnectionError for anything else the dial ran into."""
    loop = asyncio.get_running_loop()
    url_host = settings.sni or host
    authority = f"[{url_host}]" if ":" in url_host else url_host
    options: dict[CurlOpt, Any] = {}
    if not _is_address(url_host):
        # the URL names the SNI; curl connects to the server's own addresses
        addresses = await _addresses(host, port)
        options[CurlOpt.RESOLVE] = [f"{url_host}:{port}:{','.join(addresses)}"]
    pin = parse_pin(settings.pin) if settings.pin is not None else None
    if pin is not None:
        key_pin = _key_pins.get(pin)
        if key_pin is None:
            key_pin = await _learn_key_pin(
                f"wss://{authority}:{port}/", pin, impersonate, options, timeout
            )
        options[CurlOpt.PINNEDPUBLICKEY] = key_pin
        options[CurlOpt.CERTINFO] = 1
    sessions = _sessions.setdefault(loop, _Sessions())
    session = sessions.acquire()
    try:
        ws = await session.ws_connect(
            f"wss://{authority}:{port}{settings.path}",
            impersonate=impersonate,
            verify=False if settings.insecure or pin is not None else _system_cas(),
            headers={"Host": settings.host} if settings.host else None,
            timeout=timeout,
            allow_redirects=False,
            curl_options=options,
            recv_queue_size=RECV_QUEUE,
            send_queue_size=SEND_QUEUE,
            max_message_size=MAX_MESSAGE,
            drain_on_error=True,
        )
    except CurlError as exc:
        sessions.release()
        raise _dial_error(exc) from None
    except BaseException:
        sessions.release()
        raise
    stream = BrowserWebSocket(ws, sessions)
    if pin is not None:
        try:
            _check_pin(_peer_certificate(ws.curl), pin)
        except BaseException:
            stream.abort()
            raise
    return stream


async def _learn_key_pin(
    url: str, pin: bytes, impersonate: str, options: dict[CurlOpt, Any], timeout: float
) -> str:
    """Open a bare TLS connection (the hello the WebSocket will send: a wss URL makes curl offer
    http/1.1 alone, as the upgrade will), check the leaf certificate against the pin and return
    curl's pin of its public key."""
    curl = Curl()
    if curl.impersonate(resolve_latest_browser_type(impersonate)) != 0:
        curl.close()
        raise ConnectionError(f"curl_cffi cannot impersonate {impersonate}")
    curl.setopt(CurlOpt.URL, url)
    curl.setopt(CurlOpt.CONNECT_ONLY, 1)
    curl.setopt(CurlOpt.SSL_VERIFYPEER, 0)
    curl.setopt(CurlOpt.SSL_VERIFYHOST, 0)
    curl.setopt(CurlOpt.CERTINFO, 1)
    curl.setopt(CurlOpt.CONNECTTIMEOUT_MS, int(timeout * 1000))
    for option, value in options.items():
        curl.setopt(option, value)
    perform = asyncio.get_running_loop().run_in_executor(None, curl.perform)
    try:
        # perform() cannot be interrupted: if we are cancelled, its thread still owns the handle
        await asyncio.shield(perform)
    except CurlError as exc:
        curl.close()
        raise _dial_error(exc) from None
    except BaseException:
        perform.add_done_callback(lambda done: _close_after(done, curl))
        raise
    try:
        der = _check_pin(_peer_certificate(curl), pin)
    finally:
        curl.close()
    spki = x509.load_der_x509_certificate(der).public_key().public_bytes(
        Encoding.DER, PublicFormat.SubjectPublicKeyInfo
    )
    key_pin = "sha256//" + base64.b64encode(hashlib.sha256(spki).digest()).decode("ascii")
    _key_pins[pin] = key_pin
    return key_pin


def _close_after(perform: asyncio.Future[None], curl: Curl) -> None:
    if not perform.cancelled():
        perform.exception()  # retrieved: the dial that wanted it is gone
    curl.close()


def _check_pin(der: bytes | None, pin: bytes) -> bytes:
    if der is None:
        raise PinMismatchError("the server sent no certificate, so the pin cannot match")
    if not hmac.compare_digest(hashlib.sha256(der).digest(), pin):
        raise PinMismatchError(
            f"server certificate {certificate_pin(der)} does not match the pin {pin.hex().upper()}"
        )
    return der


def _peer_certificate(curl: Curl) -> bytes | None:
    """The DER of the server's leaf certificate from CURLINFO_CERTINFO. curl_cffi's getinfo reads
    that as a string list, which it is not (it is a struct curl_certinfo: the certificate count,
    then an array of string lists, one per certificate), so it is read here through curl_cffi's
    own cffi binding of curl_easy_getinfo."""
    handle = getattr(curl, "_curl", None)
    if handle is None:
        return None
    out = curl_ffi.new("void **")
    if curl_lib.curl_easy_getinfo(handle, CurlInfo.CERTINFO, out) != 0 or out[0] == curl_ffi.NULL:
        return None
    count = curl_ffi.cast("int *", out[0])[0]
    if count < 1:
        return None
    # struct curl_certinfo { int num_of_certs; struct curl_slist **certinfo; }
    lists = curl_ffi.cast(
        "struct curl_slist ***", curl_ffi.cast("char *", out[0]) + curl_ffi.alignof("void *")
    )[0]
    node = lists[0]
    while node != curl_ffi.NULL:
        field = curl_ffi.string(node.data)
        if field.startswith(b"Cert:"):
            return x509.load_pem_x509_certificate(field[5:]).public_bytes(Encoding.DER)
        node = node.next
    return None


async def _addresses(host: str, port: int) -> list[str]:
    """The server's addresses as curl's RESOLVE wants them (IPv6 in brackets)."""
    if _is_address(host):
        found = [host]
    else:
        try:
            infos = await asyncio.get_running_loop().getaddrinfo(
                host, port, type=socket.SOCK_STREAM
            )
        except socket.gaierror as exc:
            raise ConnectionError(f"cannot resolve {host}: {exc.strerror}") from None
        found = list(dict.fromkeys(str(info[4][0]) for info in infos))
    return [f"[{a}]" if ":" in a else a for a in found]


def _system_cas() -> str | bool:
    """The CA bundle the stdlib path trusts, so both paths accept the same servers; curl_cffi's
    own (certifi's) only where the system has none."""
    cafile = ssl.get_default_verify_paths().cafile
    return cafile if cafile and os.path.isfile(cafile) else True


def _is_address(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def _dial_error(exc: CurlError) -> OSError:
    """curl's failure as the exception the stdlib path raises for the same thing."""
    message = str(exc).partition(" See https://")[0]
    if exc.code == CurlECode.SSL_PINNEDPUBKEYNOTMATCH:
        return PinMismatchError(f"server public key does not match the pin ({message})")
    if exc.code == CurlECode.PEER_FAILED_VERIFICATION:
        return ssl.SSLCertVerificationError(message)
    if exc.code == CurlECode.OPERATION_TIMEDOUT:
        return TimeoutError(message)
    return ConnectionError(message)


def _text(value: object) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
