"""The Shadowsocks AEAD client (SIP004): streams and UDP packets to a Shadowsocks server,
with Outline's salt prefix. The request header rides in the same first write as the client's
first data (as shadowsocks-libev and Outline do), so the first packet has no telling length;
if the client says nothing for a moment (a server-speaks-first protocol) it goes alone."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import Any

from elsewhere.codecs.address import decode_address, encode_address
from elsewhere.codecs.shadowsocks import (
    Cipher,
    StreamDecryptor,
    StreamEncryptor,
    decrypt_packet,
    encrypt_packet,
)
from elsewhere.control.links import AccessKey, parse_access_key
from elsewhere.errors import ConfigError
from elsewhere.outbounds.base import DatagramReceiver, register
from elsewhere.outbounds.packets import PacketFlow, connect
from elsewhere.session import Destination, Session
from elsewhere.transports.layer import SealedHeaderLayer
from elsewhere.transports.tcp import connect_tcp

CONNECT_TIMEOUT = 10.0
HEADER_WAIT = 0.01  # Outline waits 10 ms for the first data before sending the header alone
HEADERS = 1024  # encoded request addresses kept per outbound (emptied when full)


class ShadowsocksOutbound:
    def __init__(self, tag: str, key: AccessKey) -> None:
        self.tag = tag
        self.key = key
        self.cipher = Cipher.from_password(key.method, key.password)
        self.prefix = key.prefix
        StreamEncryptor(self.cipher, prefix=self.prefix)  # a bad prefix is a config error now
        self.headers: dict[tuple[str, int], bytes] = {}

    def header(self, destination: Destination) -> bytes:
        """The request's address (SIP004), kept per host and port: encoding parses the host as
        an IP address first, which costs more than the rest of the client's setup."""
        key = (destination.host, destination.port)
        header = self.headers.get(key)
        if header is None:
            header = encode_address(destination)
            if len(self.headers) >= HEADERS:
                self.headers.clear()
            self.headers[key] = header
        return header

    async def open_tcp(self, session: Session) -> asyncio.Transport:
        loop = asyncio.get_running_loop()
        stream = SealedHeaderLayer(
            self.header(session.destination),
            StreamEncryptor(self.cipher, prefix=self.prefix).encrypt,
            StreamDecryptor(self.cipher).decrypt,
            HEADER_WAIT,
            loop,
        )
        await connect_tcp(loop, lambda: stream, self.key.host, self.key.port, CONNECT_TIMEOUT)
        return stream

    async def open_udp(self, session: Session, receive: DatagramReceiver) -> PacketFlow:
        cipher = self.cipher

        def seal(payload: bytes, destination: Destination) -> bytes:
            return encrypt_packet(cipher, encode_address(destination) + payload)

        def open_(packet: bytes) -> tuple[bytes, Destination]:
            plain = decrypt_packet(cipher, packet)
            source, end = decode_address(plain)
            return plain[end:], source

        return await connect(PacketFlow(seal, open_, receive), self.key.host, self.key.port)

    async def close(self) -> None:
        return None


def key_from_options(tag: str, options: Mapping[str, Any]) -> AccessKey:
    """An outbound is written either as `key = "ss://..."` or with its fields spelled out."""
    if "key" in options:
        return parse_access_key(options["key"])
    missing = [f for f in ("server", "port", "method", "password") if f not in options]
    if missing:
        raise ConfigError(
            f'outbound "{tag}": needs key = "ss://…" or server, port, method and password'
            f" (missing {', '.join(missing)})"
        )
    prefix = options.get("prefix", "")
    return AccessKey(
        protocol="ss",
        method=options["method"],
        password=options["password"],
        host=options["server"],
        port=int(options["port"]),
        prefix=prefix.encode("latin-1") if isinstance(prefix, str) else bytes(prefix),
    )


@register("shadowsocks")
def _make(tag: str, options: Mapping[str, Any]) -> ShadowsocksOutbound:
    return ShadowsocksOutbound(tag, key_from_options(tag, options))
