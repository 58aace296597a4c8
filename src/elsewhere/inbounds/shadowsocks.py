"""The Shadowsocks AEAD server (SIP004/SIP002): many keys on one port found by trial
decryption (the last key that matched is tried first, as outline-ss-server does), a salt replay
filter, TCP and UDP on the same port, and the stealth reaction to anything else."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Hashable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, cast

from elsewhere.codecs.address import NeedMoreData, decode_address, encode_address
from elsewhere.codecs.shadowsocks import (
    Cipher,
    SaltFilter,
    StreamDecryptor,
    StreamEncryptor,
    decrypt_packet,
    encrypt_packet,
    find_cipher,
    min_probe_bytes,
)
from elsewhere.errors import ConfigError, ProtocolError
from elsewhere.inbounds.base import register
from elsewhere.inbounds.stealth import Handshake, unanswered
from elsewhere.session import Destination, Session
from elsewhere.transports.layer import CryptoLayer
from elsewhere.transports.tcp import listen_pair, listening_port
from elsewhere.udp import NatTable, forward

if TYPE_CHECKING:
    from elsewhere.inbounds.base import EngineAPI

log = logging.getLogger("elsewhere.shadowsocks")

# A request header is at most one address (1 + 1 + 255 + 2 bytes); it must arrive within the
# first chunks, which is how every client sends it. Past this, the client is not Shadowsocks.
MAX_HEADER = 1 + 1 + 255 + 2


@dataclass(frozen=True)
class ServerKey:
    id: str
    cipher: Cipher


class KeyRing:
    """The keys of one port, in trial order: the last one that matched goes first."""

    def __init__(self, keys: Sequence[ServerKey]) -> None:
        self.keys: list[ServerKey] = list(keys)
        self.ciphers: list[Cipher] = [k.cipher for k in self.keys]
        self.probe_bytes = min_probe_bytes(self.ciphers) if self.keys else 1

    def promote(self, index: int) -> ServerKey:
        key = self.keys[index]
        if index:
            del self.keys[index], self.ciphers[index]
            self.keys.insert(0, key)
            self.ciphers.insert(0, key.cipher)
        return key

    def replace(self, keys: Sequence[ServerKey]) -> None:
        self.__init__(keys)  # type: ignore[misc]


def parse_keys(tag: str, options: Mapping[str, Any]) -> list[ServerKey]:
    entries = list(options.get("keys", ()))
    if "password" in options:
        entries.append(
            {
                "id": options.get("id", "default"),
                "method": options.get("method", ""),
                "password": options["password"],
            }
        )
    keys = []
    for entry in entries:
        try:
            keys.append(
                ServerKey(
                    str(entry["id"]), Cipher.from_password(entry["method"], entry["password"])
                )
            )
        except KeyError as exc:
            raise ConfigError(f'inbound "{tag}": every key needs {exc.args[0]}') from None
    return keys


class _Handshake(Handshake):
    """From accept until the request header is read (or the client is found out)."""

    def __init__(self, inbound: ShadowsocksInbound) -> None:
        super().__init__(cast("EngineAPI", inbound.engine))
        self.inbound = inbound
        self.buffer = bytearray()
        self.decryptor: StreamDecryptor | None = None
        self.key: ServerKey | None = None
        self.header = b""

    def read(self, data: bytes) -> None:
        ring = self.inbound.ring
        if self.decryptor is None:
            self.buffer += data
            if len(self.buffer) < ring.probe_bytes:
                return
            found = find_cipher(ring.ciphers, self.buffer)
            if found is None:
                raise ProtocolError("no key matches")
            index, self.decryptor = found
            self.key = ring.promote(index)
            data, self.buffer = bytes(self.buffer), bytearray()
            plain = self.decryptor.decrypt(data)
            salt = self.decryptor.salt
            assert salt is not None
            if not self.inbound.salts.check_and_add(salt):
                raise ProtocolError("replayed salt")
        else:
            plain = self.decryptor.decrypt(data)
        self.header += plain
        try:
            destination, end = decode_address(self.header)
        except NeedMoreData:
            if len(self.header) > MAX_HEADER:
                raise ProtocolError("header too long") from None
            return
        self._start(destination, self.header[end:])

    def _start(self, destination: Destination, initial: bytes) -> None:
        key, decryptor = self.key, self.decryptor
        assert key is not None and decryptor is not None

        def layer() -> CryptoLayer:
            encryptor = StreamEncryptor(key.cipher)
            # our own salts go into the filter too, so a reply reflected back at us is a replay
            self.inbound.salts.check_and_add(encryptor.salt)
            return CryptoLayer(encryptor.encrypt, decryptor.decrypt)

        self.proven(self.inbound.tag, key.id, destination, layer, initial)


class _Datagrams(asyncio.DatagramProtocol):
    def __init__(self, inbound: ShadowsocksInbound) -> None:
        self.inbound = inbound
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: tuple[Any, ...]) -> None:
        inbound = self.inbound
        engine = inbound.engine
        assert engine is not None
        client = addr[:2]
        key = inbound.udp_keys.get(client)
        plain = b""
        if key is not None:
            try:
                plain = decrypt_packet(key.cipher, data)
            except ProtocolError:
                key = None
        if key is None:
            ring = inbound.ring
            for index, cipher in enumerate(ring.ciphers):
                try:
                    plain = decrypt_packet(cipher, data)
                except ProtocolError:
                    continue
                key = ring.promote(index)
                break
            else:
                unanswered(engine)
                return
        try:
            destination, end = decode_address(plain)
        except ProtocolError:
            unanswered(engine)
            return
        if not engine.admit(key.id):
            return
        inbound.udp_keys[client] = key
        transport = self.transport
        assert transport is not None
        cipher = key.cipher

        def reply(payload: bytes, source: Destination) -> None:
            if not transport.is_closing():
                transport.sendto(encrypt_packet(cipher, encode_address(source) + payload), client)

        session = Session(inbound.tag, destination, "udp", user=key.id, source=client)
        forward(engine, inbound.nat, client, session, plain[end:], reply)


class ShadowsocksInbound:
    def __init__(self, tag: str, options: Mapping[str, Any]) -> None:
        self.tag = tag
        self.host = options.get("listen", "0.0.0.0")
        self.port = int(options.get("port", 8388))
        self.udp = bool(options.get("udp", True))
        self.ring = KeyRing(parse_keys(tag, options))
        self.salts = SaltFilter()
        self.nat = NatTable(float(options.get("udp_timeout", 60)))
        self.udp_keys: dict[Hashable, ServerKey] = {}
        self.nat.on_expire = self._forget
        self.engine: EngineAPI | None = None
        self.server: asyncio.Server | None = None
        self.datagrams: asyncio.DatagramTransport | None = None

    def _forget(self, client: Hashable, _entry: object) -> None:
        self.udp_keys.pop(client, None)

    def set_keys(self, keys: Sequence[ServerKey]) -> None:
        """Swap the key list (keys added or revoked while running)."""
        self.ring.replace(keys)
        self.udp_keys.clear()

    async def start(self, engine: EngineAPI) -> None:
        self.engine = engine
        what = f'shadowsocks inbound "{self.tag}"'
        self.server, self.datagrams = await listen_pair(
            lambda: _Handshake(self),
            (lambda: _Datagrams(self)) if self.udp else None,
            self.host,
            self.port,
            what,
        )
        assert self.server is not None
        self.port = listening_port(self.server)
        if self.datagrams is not None:
            self.nat.start()

    async def stop(self) -> None:
        if self.server is not None:
            self.server.close()
        if self.datagrams is not None:
            self.datagrams.close()
        self.nat.close()

    def describe(self) -> str:
        count = len(self.ring.keys)
        return f"shadowsocks {self.host}:{self.port} ({count} key{'' if count == 1 else 's'})"


register("shadowsocks")(ShadowsocksInbound)
