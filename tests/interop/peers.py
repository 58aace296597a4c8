"""Real peers for the engine interop tests: third-party binaries (shadowsocks-libev, v2ray, curl)
started and stopped by PID, and the local destinations (an HTTP sink, a UDP echo) that traffic
reaches through them and elsewhere. Everything binds to loopback and every wait is bounded."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest

START_TIMEOUT = 10.0  # a binary that has not bound its port by then has failed
POLL_INTERVAL = 0.02  # seconds between looks while waiting on a condition
TCP_LISTEN = "0A"  # socket state in /proc/net/tcp (include/net/tcp_states.h: TCP_LISTEN)


def bound(port: int, proto: str) -> bool:
    """Is something listening on TCP `port` (proto "tcp") or bound to UDP `port` ("udp")?

    Read from /proc/net rather than by connecting: a test connection would reach the peer as a
    client (and, through v2ray, the elsewhere server behind it), skewing what the test counts."""
    for table in (f"/proc/net/{proto}", f"/proc/net/{proto}6"):
        with contextlib.suppress(FileNotFoundError), open(table) as lines:
            next(lines)  # header
            for line in lines:
                fields = line.split()
                local, state = fields[1], fields[3]
                if int(local.rsplit(":", 1)[1], 16) == port and (
                    proto == "udp" or state == TCP_LISTEN
                ):
                    return True
    return False


async def eventually(check: Callable[[], bool], what: str, timeout: float = START_TIMEOUT) -> None:
    """Poll `check` until it holds; fail the test naming `what` when `timeout` passes first."""
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout:g} s waiting for {what}")
        await asyncio.sleep(POLL_INTERVAL)


@contextlib.asynccontextmanager
async def running(
    args: list[str],
    log: Path,
    *,
    tcp: int | None = None,
    udp: int | None = None,
) -> AsyncIterator[asyncio.subprocess.Process]:
    """Run a peer binary until the block ends; first wait (bounded) until it has bound TCP port
    `tcp` and UDP port `udp`. Killed by its own PID afterwards, whatever happened."""
    with log.open("wb") as out:
        proc = await asyncio.create_subprocess_exec(*args, stdout=out, stderr=out)
    try:

        def ready() -> bool:
            if proc.returncode is not None:
                pytest.fail(f"{args[0]} exited with {proc.returncode}: {log.read_text('replace')}")
            return (tcp is None or bound(tcp, "tcp")) and (udp is None or bound(udp, "udp"))

        await eventually(ready, f"{args[0]} to bind tcp {tcp} / udp {udp}")
        yield proc
    finally:
        if proc.returncode is None:
            proc.kill()
        await asyncio.wait_for(proc.wait(), START_TIMEOUT)


async def curl(*args: str, timeout: float = 20) -> bytes:
    """Run curl with `args`; return its standard output, fail the test on a non-zero exit."""
    proc = await asyncio.create_subprocess_exec(
        "curl",
        "-sS",
        "--max-time",
        str(timeout),
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        out, err = await asyncio.wait_for(proc.communicate(), timeout + 5)
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    if proc.returncode != 0:
        pytest.fail(f"curl {' '.join(args)} exited with {proc.returncode}: {err.decode()}")
    return out


@dataclass
class Exchange:
    """One connection as the destination saw it: bytes read and written on its socket (what a
    relay in front of it must have counted), the request body's SHA-256, the body sent back."""

    read: int = 0
    written: int = 0
    upload_sha256: str = ""
    body: bytes = b""


@dataclass
class HttpSink:
    """A minimal HTTP/1.1 origin: `POST /<n>` (or GET) reads the request body, answers with `n`
    random bytes and the body's SHA-256 in `X-Upload-Sha256`, then closes."""

    server: asyncio.Server
    port: int
    exchanges: list[Exchange] = field(default_factory=list)


async def http_sink() -> HttpSink:
    sink: HttpSink

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        seen = Exchange()
        sink.exchanges.append(seen)
        try:
            head = await reader.readuntil(b"\r\n\r\n")
            lines = head.decode("latin-1").split("\r\n")
            target = lines[0].split()[1]
            length = 0
            for line in lines[1:]:
                name, _, value = line.partition(":")
                if name.strip().lower() == "content-length":
                    length = int(value)
            body = await reader.readexactly(length)
            seen.read = len(head) + length
            seen.upload_sha256 = hashlib.sha256(body).hexdigest()
            seen.body = os.urandom(int(target.strip("/") or 0))
            answer = (
                b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\nX-Upload-Sha256: %s\r\n"
                b"Connection: close\r\n\r\n" % (len(seen.body), seen.upload_sha256.encode())
            )
            writer.write(answer)
            writer.write(seen.body)
            await writer.drain()
            seen.written = len(answer) + len(seen.body)
        finally:
            writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    sink = HttpSink(server, server.sockets[0].getsockname()[1])
    return sink


class UdpEcho(asyncio.DatagramProtocol):
    """Sends every datagram straight back to where it came from, and keeps count."""

    def __init__(self) -> None:
        self.transport: asyncio.DatagramTransport | None = None
        self.received = 0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        self.received += len(data)
        assert self.transport is not None
        self.transport.sendto(data, addr)


@contextlib.asynccontextmanager
async def udp_echo() -> AsyncIterator[tuple[UdpEcho, int]]:
    loop = asyncio.get_running_loop()
    transport, echo = await loop.create_datagram_endpoint(UdpEcho, local_addr=("127.0.0.1", 0))
    try:
        yield echo, transport.get_extra_info("sockname")[1]
    finally:
        transport.close()


class UdpClient(asyncio.DatagramProtocol):
    """A connected UDP socket whose answers can be awaited one at a time."""

    def __init__(self) -> None:
        self.answers: asyncio.Queue[bytes] = asyncio.Queue()
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        self.answers.put_nowait(data)

    async def ask(self, payload: bytes, timeout: float = 5) -> bytes:
        """Send `payload` once and wait for one answer (never resent: the tests count bytes)."""
        assert self.transport is not None
        self.transport.sendto(payload)
        return await asyncio.wait_for(self.answers.get(), timeout)


@contextlib.asynccontextmanager
async def udp_client(port: int) -> AsyncIterator[UdpClient]:
    loop = asyncio.get_running_loop()
    transport, client = await loop.create_datagram_endpoint(
        UdpClient, remote_addr=("127.0.0.1", port)
    )
    try:
        yield client
    finally:
        transport.close()
