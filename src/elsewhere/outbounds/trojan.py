"""The Trojan client (trojan-gfw protocol): SHA-224 password hash and a SOCKS-style request
inside TLS (or WebSocket/httpupgrade over TLS); UDP framed in the same stream."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import Any

from elsewhere.codecs import trojan
from elsewhere.errors import ConfigError
from elsewhere.outbounds.base import DatagramReceiver, register
from elsewhere.outbounds.streamed import StreamDatagramFlow, close_pooled, open_stream
from elsewhere.session import Destination, Session
from elsewhere.transports.settings import StreamSettings

# UDP ASSOCIATE's own address field is not used by servers; trojan-gfw clients send 0.0.0.0:0
UDP_PLACEHOLDER = Destination("0.0.0.0", 0)


class TrojanOutbound:
    def __init__(self, tag: str, options: Mapping[str, Any]) -> None:
        self.tag = tag
        missing = [f for f in ("server", "port", "password") if f not in options]
        if missing:
            raise ConfigError(f'outbound "{tag}": trojan needs {", ".join(missing)}')
        self.host = str(options["server"])
        self.port = int(options["port"])
        self.hash = trojan.password_hash(str(options["password"]))
        self.settings = StreamSettings.from_options(tag, options)

    async def open_tcp(self, session: Session) -> asyncio.Transport:
        header = trojan.encode_request(self.hash, trojan.CMD_CONNECT, session.destination)
        return await open_stream(self.settings, self.host, self.port, header)

    async def open_udp(self, session: Session, receive: DatagramReceiver) -> StreamDatagramFlow:
        header = trojan.encode_request(self.hash, trojan.CMD_UDP_ASSOCIATE, UDP_PLACEHOLDER)
        stream = await open_stream(self.settings, self.host, self.port, header)
        decoder = trojan.UdpDecoder()

        def decode(data: bytes) -> list[tuple[bytes, Destination]]:
            decoder.feed(data)
            packets = []
            while (packet := decoder.next()) is not None:
                packets.append((packet.payload, packet.destination))
            return packets

        return StreamDatagramFlow(
            lambda payload, dest: trojan.encode_udp(dest, payload), decode, receive
        ).attach(stream)

    async def close(self) -> None:
        close_pooled(self.host, self.port)


register("trojan")(TrojanOutbound)
