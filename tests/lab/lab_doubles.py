"""Test doubles for the lab: small TCP servers living in the `server` namespace, run by threads
of the test process (sockets made inside the namespace), and payload makers."""

from __future__ import annotations

import asyncio
import contextlib
import random
import socket
import threading
from collections.abc import Callable

from elsewhere.codecs.address import encode_address
from elsewhere.lab import plan
from elsewhere.lab.censor import CensorProcess
from elsewhere.lab.plan import Role
from elsewhere.lab.techniques.fet_gfw import exemption
from elsewhere.lab.topology import Lab
from elsewhere.session import Destination

# what the `censor` fixture (tests/lab/conftest.py) returns
CensorStarter = Callable[..., CensorProcess]

Handler = Callable[[socket.socket], None]
READ_SIZE = 65536


class TcpDouble:
    """Listens on plan.SERVER:port inside `server` (or on `address` inside `role`); each
    connection gets `handler` in a thread."""

    def __init__(
        self, lab: Lab, port: int, handler: Handler, *, role: Role = "server",
        address: str = plan.SERVER,
    ) -> None:
        self.port = port
        self.handler = handler
        self.listener = lab.socket(role)
        self.listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.listener.bind((address, port))
        self.listener.listen(128)
        self.connections: list[socket.socket] = []
        self.accepted = 0
        self.thread = threading.Thread(target=self._accept, daemon=True)
        self.thread.start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return  # closed
            self.accepted += 1
            self.connections.append(conn)
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        with contextlib.suppress(OSError):
            self.handler(conn)

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.listener.shutdown(socket.SHUT_RDWR)  # wakes the blocked accept()
        self.listener.close()
        for conn in self.connections:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)
            conn.close()
        self.thread.join(2)

    def __enter__(self) -> TcpDouble:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def echo(conn: socket.socket) -> None:
    while data := conn.recv(READ_SIZE):
        conn.sendall(data)


def read_forever(conn: socket.socket) -> None:
    """Swallow everything and never answer (what a well-behaved proxy does with garbage)."""
    while conn.recv(READ_SIZE):
        pass


def close_after(threshold: int) -> Handler:
    """Read until `threshold` bytes arrived, then close: a server that gives itself away."""

    def handler(conn: socket.socket) -> None:
        seen = 0
        while seen < threshold:
            data = conn.recv(READ_SIZE)
            if not data:
                return
            seen += len(data)
        conn.close()

    return handler


def encrypted_looking(rng: random.Random, size: int = 200) -> bytes:
    """Random bytes that no fet_gfw exemption spares (what a fully encrypted first packet is)."""
    while True:
        payload = rng.randbytes(size)
        if exemption(payload) is None:
            return payload


def exchange(lab: Lab, port: int, payload: bytes, timeout: float = 1.0) -> bytes | None:
    """Connect from `client` to the server's `port`, send `payload`, return the first reply;
    None when the connection could not be made or nothing came back in time."""
    try:
        with lab.connect("client", plan.SERVER, port, timeout=timeout) as sock:
            sock.sendall(payload)
            return sock.recv(READ_SIZE)
    except OSError:
        return None


def sent_unanswered(lab: Lab, port: int, payload: bytes, wait: float = 1.0) -> bool:
    """Was `payload` sent on an established connection and then met no reply for `wait`
    seconds? A data block, told apart from a connection that never came up: that would pass
    exchange() is None without the censor having seen the payload at all (a SYN delayed past
    the timeout on a loaded machine)."""
    with lab.connect("client", plan.SERVER, port, timeout=5.0) as sock:
        sock.sendall(payload)
        sock.settimeout(wait)
        try:
            return sock.recv(READ_SIZE) == b""  # closed without a reply counts as unanswered
        except TimeoutError:
            return True
        except OSError:  # reset
            return True


def echoed(lab: Lab, port: int, payload: bytes, timeout: float = 5.0) -> bool:
    """Does an echo on the server's `port` send `payload` back whole? For flows that must
    pass: the echo may come in more than one segment, and a loaded machine (the censor sees
    every packet in Python) may take longer than the 1 s a blocked flow is given."""
    got = b""
    try:
        with lab.connect("client", plan.SERVER, port, timeout=timeout) as sock:
            sock.sendall(payload)
            while len(got) < len(payload):
                chunk = sock.recv(READ_SIZE)
                if not chunk:
                    break
                got += chunk
    except OSError:
        return False
    return got == payload


async def socks_exchange(
    lab: Lab, proxy_port: int, destination: Destination, request: bytes, timeout: float
) -> bytes | None:
    """Through the SOCKS5 proxy on 127.0.0.1:`proxy_port` in `client` (RFC 1928, no auth):
    CONNECT to `destination`, send `request`, return the first bytes of the answer, or None
    when nothing came back within `timeout` seconds."""
    sock = lab.socket("client")
    sock.setblocking(False)
    loop = asyncio.get_running_loop()
    writer: asyncio.StreamWriter | None = None
    try:
        async with asyncio.timeout(timeout):
            await loop.sock_connect(sock, ("127.0.0.1", proxy_port))
            reader, writer = await asyncio.open_connection(sock=sock)
            writer.write(b"\x05\x01\x00")
            if await reader.readexactly(2) != b"\x05\x00":
                return None
            writer.write(b"\x05\x01\x00" + encode_address(destination))
            reply = await reader.readexactly(4)
            if reply[1] != 0:
                return None
            await reader.readexactly({1: 4, 4: 16}.get(reply[3], 0) + 2)  # bound address
            writer.write(request)
            return await reader.read(READ_SIZE) or None
    except (TimeoutError, OSError, asyncio.IncompleteReadError):
        return None
    finally:
        if writer is not None:
            writer.close()
        else:
            sock.close()
