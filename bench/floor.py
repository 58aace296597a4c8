"""The floor row: the least a CPython + uvloop Shadowsocks tunnel can be, for the bench to
measure beside elsewhere and shadowsocks-libev in the same run.

    python floor.py server HOST PORT PASSWORD
    python floor.py client HOST PORT PASSWORD SERVER_HOST SERVER_PORT DEST_HOST DEST_PORT

It uses elsewhere's own Shadowsocks codec (aes-256-gcm) under the smallest adapters that carry
a connection: one task per connection to connect, one protocol per side, pause/resume for
backpressure. No router, address policy, accounting, idle timer, half-close, stealth or
replay filter: everything elsewhere does per connection beyond this is what the engine costs,
and what this row itself costs is what the language and the event loop cost. A reference for
the figures, not a product: never point a user at it."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Callable

import uvloop

from elsewhere.codecs.address import decode_address, encode_address
from elsewhere.codecs.shadowsocks import Cipher, StreamDecryptor, StreamEncryptor
from elsewhere.errors import ProtocolError
from elsewhere.session import Destination

METHOD = "aes-256-gcm"
Code = Callable[[bytes], bytes | bytearray]


class Pipe(asyncio.Protocol):
    """One side of a joined pair: what it reads goes through `code` to `peer`."""

    def __init__(self, peer: asyncio.Transport, code: Code) -> None:
        self.peer = peer
        self.code = code
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        try:
            out = self.code(data)
        except ProtocolError:
            self.peer.abort()
            return
        if out:
            self.peer.write(out)

    def pause_writing(self) -> None:
        self.peer.pause_reading()

    def resume_writing(self) -> None:
        self.peer.resume_reading()

    def connection_lost(self, exc: Exception | None) -> None:
        self.peer.close()


class Side(Pipe):
    """The accepted side: holds what arrives until the connection out exists."""

    def __init__(self, cipher: Cipher) -> None:
        super().__init__(None, self.hold)  # type: ignore[arg-type]
        self.cipher = cipher
        self.held = bytearray()

    def hold(self, data: bytes) -> bytes:
        self.held += data
        return b""

    def joined(self, peer: asyncio.Transport, code: Code, ready: bool = False) -> None:
        """Join to `peer`; what was held goes through `code` first (or as it is if `ready`)."""
        self.peer, self.code = peer, code
        if self.held:
            if ready:
                peer.write(bytes(self.held))
            else:
                self.data_received(bytes(self.held))
        assert self.transport is not None
        self.transport.resume_reading()

    def connection_lost(self, exc: Exception | None) -> None:
        if self.peer is not None:
            self.peer.close()


class ServerSide(Side):
    def __init__(self, cipher: Cipher) -> None:
        super().__init__(cipher)
        self.decryptor = StreamDecryptor(cipher)
        self.code = self.request

    def request(self, data: bytes) -> bytes:
        self.held += self.decryptor.decrypt(data)
        try:
            destination, end = decode_address(self.held)
        except ProtocolError:
            return b""
        del self.held[:end]  # the rest is the first data, already decrypted
        assert self.transport is not None
        self.transport.pause_reading()
        asyncio.get_running_loop().create_task(self.connect(destination))
        return b""

    async def connect(self, destination: Destination) -> None:
        assert self.transport is not None
        encryptor = StreamEncryptor(self.cipher)
        loop = asyncio.get_running_loop()
        try:
            remote, _ = await loop.create_connection(
                lambda: Pipe(self.transport, encryptor.encrypt),  # type: ignore[arg-type]
                destination.host,
                destination.port,
            )
        except OSError:
            self.transport.close()
            return
        self.joined(remote, self.decryptor.decrypt, ready=True)


class ClientSide(Side):
    server: tuple[str, int]
    destination: Destination

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        transport.pause_reading()  # type: ignore[attr-defined]
        asyncio.get_running_loop().create_task(self.connect())

    async def connect(self) -> None:
        assert self.transport is not None
        encryptor = StreamEncryptor(self.cipher)
        decryptor = StreamDecryptor(self.cipher)
        loop = asyncio.get_running_loop()
        try:
            remote, _ = await loop.create_connection(
                lambda: Pipe(self.transport, decryptor.decrypt),  # type: ignore[arg-type]
                *self.server,
            )
        except OSError:
            self.transport.close()
            return
        header: list[bytes] = [encode_address(self.destination)]

        def encrypt(data: bytes) -> bytes | bytearray:
            if header:
                data = header.pop() + data
            return encryptor.encrypt(data)

        self.joined(remote, encrypt)


async def main(argv: list[str]) -> None:
    role, host, port, password = argv[0], argv[1], int(argv[2]), argv[3]
    cipher = Cipher.from_password(METHOD, password)
    loop = asyncio.get_running_loop()
    if role == "server":
        await loop.create_server(lambda: ServerSide(cipher), host, port, backlog=1024)
    else:
        ClientSide.server = (argv[4], int(argv[5]))
        ClientSide.destination = Destination(argv[6], int(argv[7]))
        await loop.create_server(lambda: ClientSide(cipher), host, port, backlog=1024)
    await asyncio.Event().wait()


if __name__ == "__main__":
    uvloop.run(main(sys.argv[1:]))
