"""The exit outbound (issue 9): how a relay inside the country reaches its exit abroad. It is
written as the exit's share link (any scheme elsewhere's client speaks: ss://, vless://,
trojan://), wraps the outbound that link makes, and watches the exit: a check at start and
again every few seconds while the exit fails, so the relay can say *why* it fails (unreachable,
TLS, a wrong key) and give its users a closed connection at once instead of a hang.

    [[outbounds]]
    type = "exit"
    link = "ss://2022-blake3-aes-256-gcm:…@203.0.113.5:8388#exit"
    check = "203.0.113.5:443"   # optional: an HTTPS server the exit can reach
    check_timeout = 10          # optional: seconds the exit gets to answer it

The check opens a session through the exit to `check` and sends a TLS ClientHello there: any
TLS record back proves the whole path (transport, key, the exit's own outbound). Without
`check`, a TLS-family exit is checked against its own TLS port (always there), and a
Shadowsocks exit only by a TCP connection to it: a Shadowsocks server stays silent to a
wrong key, so only a round trip through it can show one."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

from elsewhere.errors import ConfigError, ElsewhereError
from elsewhere.outbounds.base import (
    OUTBOUND_TYPES,
    DatagramFlow,
    DatagramReceiver,
    Outbound,
    register,
)
from elsewhere.session import Destination, Session
from elsewhere.transports.layer import Pending

log = logging.getLogger("elsewhere")

CHECK_TIMEOUT = 10.0  # seconds the exit gets to answer a check
RETRY_INTERVAL = 5.0  # seconds between checks while the exit fails
RECHECK_INTERVAL = 60.0  # seconds between checks while it works
TLS_RECORD_TYPES = (0x15, 0x16)  # alert, handshake: what a TLS server answers a ClientHello with
INBOUND_NAME = "relay-check"

State = Literal["unknown", "ok", "failing"]


@dataclass(frozen=True, slots=True)
class ExitHealth:
    """What the relay knows about its exit: the state and, when failing, why (one line)."""

    state: State
    reason: str = ""
    since: float = 0.0  # monotonic time of the last change of state

    def line(self, where: str) -> str:
        if self.state == "ok":
            return f"exit {where} ok"
        if self.state == "unknown":
            return f"exit {where}: checking"
        return f"exit {where} failing: {self.reason} (retrying every {RETRY_INTERVAL:g} s)"


def parse_check(text: str, tag: str) -> Destination | None:
    """`host:port` (or `none`) -> the check's destination."""
    if text.strip().lower() == "none":
        return None
    host, colon, port = text.strip().rpartition(":")
    host = host.strip("[]")
    if not colon or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ConfigError(f'outbound "{tag}": check must be host:port or none, not {text!r}')
    return Destination(host, int(port))


def client_hello(server_name: str) -> bytes:
    """A TLS ClientHello for `server_name` from Python's own TLS (no certificate is checked:
    only the first answer matters, and it comes before any certificate could be)."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    name = None if Destination(server_name, 1).ip is not None else server_name
    tls = context.wrap_bio(incoming, outgoing, server_hostname=name)
    with contextlib.suppress(ssl.SSLWantReadError):
        tls.do_handshake()
    return outgoing.read()


class _Answer(asyncio.Protocol):
    """Takes over an opened stream and resolves with its first bytes (b"" when it ends)."""

    def __init__(self, transport: asyncio.Transport) -> None:
        self.done: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()
        held = transport.get_protocol()
        transport.set_protocol(self)
        if isinstance(held, Pending):
            for chunk in held.chunks:
                self.data_received(chunk)
            if held.eof or held.lost:
                self._end()
        transport.resume_reading()

    def data_received(self, data: bytes) -> None:
        if not self.done.done() and data:
            self.done.set_result(bytes(data))

    def eof_received(self) -> bool:
        self._end()
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self._end()

    def _end(self) -> None:
        if not self.done.done():
            self.done.set_result(b"")


def describe_failure(exc: BaseException) -> str:
    """Half a line for a person: why the exit could not be used."""
    if isinstance(exc, ssl.SSLCertVerificationError):
        return f"its TLS certificate is not the one the link expects ({exc.verify_message})"
    if isinstance(exc, ssl.SSLError):
        return f"TLS with it failed ({exc.reason or exc})"
    if isinstance(exc, ConnectionRefusedError):
        return "cannot reach it: connection refused (nothing listens there?)"
    if isinstance(exc, TimeoutError):
        return "cannot reach it: no answer in time (blocked or down?)"
    if isinstance(exc, OSError):
        return f"cannot reach it: {exc.strerror or exc}"
    if isinstance(exc, ElsewhereError):
        return f"it did not answer as the link's protocol does: {exc}"
    return f"{exc!r}"


class ExitOutbound:
    """A protocol outbound made from the exit's link, with the exit's health watched."""

    def __init__(self, tag: str, options: Mapping[str, Any]) -> None:
        from elsewhere.control.links import outbound_options, parse_access_key

        self.tag = tag
        link = options.get("link")
        if not isinstance(link, str) or not link.strip():
            raise ConfigError(f'outbound "{tag}": type "exit" needs link = "ss://…" (the exit)')
        try:
            self.key = parse_access_key(link)
        except ConfigError as exc:
            raise ConfigError(f'outbound "{tag}": the exit link: {exc}') from None
        from elsewhere import outbounds

        outbounds.load_all()  # the protocol outbound the link names (this runs at build time)
        spec = dict(outbound_options(self.key))
        kind = spec.pop("type")
        spec.pop("tag", None)
        self.inner: Outbound = OUTBOUND_TYPES[kind](tag, spec)
        self.where = str(self.key.destination)
        self.tls_family = self.key.protocol != "ss"
        check = options.get("check")
        if check is not None:
            self.check_target = parse_check(str(check), tag)
        else:
            self.check_target = self.key.destination if self.tls_family else None
        sni = self.key.extra.get("sni") if self.tls_family else None
        self.check_name = sni or (self.check_target.host if self.check_target else "")
        self.check_timeout = float(options.get("check_timeout", CHECK_TIMEOUT))
        if not self.check_timeout > 0:
            raise ConfigError(f'outbound "{tag}": check_timeout must be a positive number')
        self.health = ExitHealth("unknown", since=time.monotonic())
        self.announce = True  # log changes of health (a relay's status line says them instead)
        self._wake: asyncio.Event | None = None
        self._watch: asyncio.Task[None] | None = None

    # Outbound
    async def open_tcp(self, session: Session) -> asyncio.Transport:
        self.start_watching()
        self._refuse_while_failing()
        try:
            return await self.inner.open_tcp(session)
        except (OSError, ElsewhereError, ssl.SSLError) as exc:
            self._session_failed(exc)
            raise

    async def open_udp(self, session: Session, receive: DatagramReceiver) -> DatagramFlow:
        self.start_watching()
        self._refuse_while_failing()
        try:
            return await self.inner.open_udp(session, receive)
        except (OSError, ElsewhereError, ssl.SSLError) as exc:
            self._session_failed(exc)
            raise

    async def close(self) -> None:
        if self._watch is not None:
            self._watch.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._watch
            self._watch = None
        await self.inner.close()

    # watching
    def start_watching(self) -> None:
        """Check now and keep checking (owned by this outbound; close() ends it)."""
        if self._watch is None:
            self._wake = asyncio.Event()
            self._watch = asyncio.get_running_loop().create_task(self._watch_loop())

    async def check(self) -> ExitHealth:
        """One check of the exit now; updates and returns `health`."""
        connected = asyncio.Event()  # set once the exit took the connection (and its TLS)
        try:
            async with asyncio.timeout(self.check_timeout):
                reason = await self._probe(connected)
        except TimeoutError:
            if connected.is_set():
                reason = (
                    f"it takes connections but answered nothing through the tunnel in "
                    f"{self.check_timeout:g} s: is the link's key (password, method) right?"
                )
            else:
                reason = describe_failure(TimeoutError())
        except (OSError, ElsewhereError, ssl.SSLError) as exc:
            reason = describe_failure(exc)
        except Exception as exc:  # a check must never end the watch
            reason = f"the check failed: {exc!r}"
        self._set("failing" if reason else "ok", reason)
        return self.health

    async def _probe(self, connected: asyncio.Event) -> str:
        """"" when the exit works, else why not."""
        if self.check_target is None:
            _, writer = await asyncio.open_connection(self.key.host, self.key.port)
            writer.close()
            return ""
        session = Session(INBOUND_NAME, self.check_target)
        stream = await self.inner.open_tcp(session)
        connected.set()
        try:
            answer = _Answer(stream)
            stream.write(client_hello(self.check_name))
            first = await answer.done
        finally:
            stream.close()
        if first and first[0] in TLS_RECORD_TYPES:
            return ""
        if first:
            shown = first[:12].decode("ascii", "replace").split("\r")[0]
            return (
                f"it answered the check with {shown!r}, not TLS from {self.check_target}: "
                "a server shows its web site to a wrong password or UUID"
            )
        return (
            "it closed the check without an answer: is the link's key right? "
            f"(or it cannot reach {self.check_target})"
        )

    async def _watch_loop(self) -> None:
        assert self._wake is not None
        while True:
            health = await self.check()
            wait = RETRY_INTERVAL if health.state == "failing" else RECHECK_INTERVAL
            self._wake.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), wait)

    def _set(self, state: State, reason: str) -> None:
        if (state, reason) == (self.health.state, self.health.reason):
            return
        self.health = ExitHealth(state, reason, time.monotonic())
        if self.announce:
            level = logging.WARNING if state == "failing" else logging.INFO
            log.log(level, "%s", self.health.line(self.where))

    def _refuse_while_failing(self) -> None:
        # a failing exit is retried by the watch; users get a closed connection now, not a
        # connection that hangs until the exit's own timeout
        if self.health.state == "failing" and self._watch is not None:
            raise ConnectionRefusedError(self.health.reason)

    def _session_failed(self, exc: BaseException) -> None:
        self._set("failing", describe_failure(exc))
        if self._wake is not None:
            self._wake.set()


register("exit")(ExitOutbound)
