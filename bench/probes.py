"""Small helpers run.py starts inside a namespace (`python probes.py <what> ...`):

  serve HOST PORT              answers the first bytes of every connection with one byte, then
                               reads and discards until the peer closes
  ttfb HOST PORT COUNT LIMIT   COUNT fresh connections one after another: connect, send one
                               byte, wait for the answer; prints the times as JSON
  idle HOST PORT COUNT LIMIT   opens COUNT connections that each send a few bytes and wait for
                               the answer (so every tunnel is established end to end), prints
                               JSON, holds them until a line arrives on stdin, then closes them

Each loop has a count and a time limit (LIMIT seconds), so a helper always ends by itself."""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import sys
import time

CONNECT_TIMEOUT = 5.0
IDLE_CONCURRENCY = 50  # below every listen backlog in play (asyncio's 100, libev's 1024)
IDLE_HELLO = b"hello, tunnel"


class _Answer(asyncio.Protocol):
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport
        self.answered = False

    def data_received(self, data: bytes) -> None:
        if not self.answered:
            self.answered = True
            self.transport.write(b"!")  # type: ignore[attr-defined]


async def serve(host: str, port: int) -> None:
    loop = asyncio.get_running_loop()
    server = await loop.create_server(_Answer, host, port, backlog=4096, reuse_address=True)
    print("ready", flush=True)
    async with server:
        await server.serve_forever()


def ttfb(host: str, port: int, count: int, limit: float) -> None:
    times: list[float] = []
    errors = 0
    deadline = time.monotonic() + limit
    for _ in range(count):
        if time.monotonic() > deadline:
            break
        start = time.perf_counter()
        try:
            with socket.create_connection((host, port), timeout=CONNECT_TIMEOUT) as sock:
                sock.sendall(b"?")
                got = sock.recv(1)
                took = time.perf_counter() - start
        except OSError:
            errors += 1
            continue
        if got:
            times.append(took)
        else:
            errors += 1
    print(json.dumps({"seconds": times, "errors": errors}), flush=True)


async def idle(host: str, port: int, count: int, limit: float) -> None:
    loop = asyncio.get_running_loop()
    started = time.monotonic()
    gate = asyncio.Semaphore(IDLE_CONCURRENCY)
    held: list[asyncio.StreamWriter] = []
    failed = 0

    async def one() -> None:
        nonlocal failed
        async with gate:
            try:
                reader, writer = await asyncio.wait_for(
                    asyncio.open_connection(host, port), CONNECT_TIMEOUT
                )
            except (OSError, TimeoutError):
                failed += 1
                return
            held.append(writer)
            writer.write(IDLE_HELLO)
            try:
                if await asyncio.wait_for(reader.read(1), CONNECT_TIMEOUT) != b"!":
                    failed += 1
            except (OSError, TimeoutError):
                failed += 1

    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(asyncio.gather(*(one() for _ in range(count))), limit)
    report = {
        "established": len(held) - failed,
        "failed": failed + count - len(held),
        "seconds": time.monotonic() - started,
    }
    print(json.dumps(report), flush=True)
    # hold them until told (or until the limit), then close them all
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(loop.run_in_executor(None, sys.stdin.readline), limit)
    for writer in held:
        writer.close()


def main(argv: list[str]) -> None:
    what, host, port = argv[0], argv[1], int(argv[2])
    if what == "serve":
        import uvloop

        uvloop.run(serve(host, port))
    elif what == "ttfb":
        ttfb(host, port, int(argv[3]), float(argv[4]))
    elif what == "idle":
        asyncio.run(idle(host, port, int(argv[3]), float(argv[4])))
    else:
        raise SystemExit(f"unknown helper {what!r}")


if __name__ == "__main__":
    main(sys.argv[1:])
