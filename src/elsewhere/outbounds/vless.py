"""The VLESS client (Xray's VLESS, no flow): UUID and request header inside TLS (or
WebSocket/httpupgrade over TLS), the response header stripped from what comes back; UDP as
length-prefixed packets to the one destination of its stream."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from typing import Any

from elsewhere.codecs import vless
from elsewhere.errors import ConfigError, ProtocolError
from elsewhere.outbounds.base import DatagramReceiver, register
from elsewhere.outbounds.streamed import StreamDatagramFlow, close_pooled, open_stream
from elsewhere.session import Destination, Session
from elsewhere.transports.layer import Layer
from elsewhere.transports.settings import StreamSettings

log = logging.getLogger("elsewhere.vless")


class ResponseLayer(Layer):
    """Drops the server's response header (version, addons) in front of the first data."""

    def __init__(self) -> None:
        super().__init__()
        self.head: bytes | None = b""

    def data_received(self, data: bytes) -> None:
        if self.head is None:
            self.upper.data_received(data)
            return
        self.head += data
        try:
            end = vless.parse_response(self.head)
        except ProtocolError:
            self.abort()
            return
        if end is None:
            return
        rest, self.head = self.head[end:], None
        if rest:
            self.upper.data_received(rest)


class _UdpFlows:
    """VLESS UDP streams have one destination each: one stream per destination."""

    def __init__(self, outbound: VlessOutbound, receive: DatagramReceiver) -> None:
        self.outbound = outbound
        self.receive = receive
        self.flows: dict[Destination, StreamDatagramFlow | None] = {}
        self.queued: dict[Destination, list[bytes]] = {}

    def send(self, payload: bytes, destination: Destination) -> None:
        flow = self.flows.get(destination)
        if flow is not None:
            flow.send(payload, destination)
            return
        if destination in self.flows:
            self.queued[destination].append(payload)
            return
        self.flows[destination] = None
        self.queued[destination] = [payload]
        asyncio.get_running_loop().create_task(self._open(destination))

    async def _open(self, destination: Destination) -> None:
        try:
            flow = await self.outbound.udp_stream(destination, self.receive)
        except (OSError, ProtocolError, TimeoutError):
            self.flows.pop(destination, None)
            self.queued.pop(destination, None)
            return
        self.flows[destination] = flow
        for payload in self.queued.pop(destination, []):
            flow.send(payload, destination)

    def close(self) -> None:
        for flow in self.flows.values():
            if flow is not None:
                flow.close()
        self.flows.clear()


class VlessOutbound:
    def __init__(self, tag: str, options: Mapping[str, Any]) -> None:
        self.tag = tag
        missing = [f for f in ("server", "port", "uuid") if f not in options]
        if missing:
            raise ConfigError(f'outbound "{tag}": vless needs {", ".join(missing)}')
        self.host = str(options["server"])
        self.port = int(options["port"])
        self.uuid = vless.parse_uuid(str(options["uuid"]))
        if options.get("flow"):
            # the server's Vision is ours (inbounds); the client's is not written yet
            log.warning(
                'outbound "%s": flow %s is not spoken by elsewhere\'s client yet: it sends plain '
                "VLESS, which elsewhere's servers accept and Xray/sing-box servers that require "
                "the flow refuse", tag, options["flow"],
            )
        self.settings = StreamSettings.from_options(tag, options)

    async def open_tcp(self, session: Session) -> asyncio.Transport:
        header = vless.encode_request(self.uuid, vless.CMD_TCP, session.destination)
        return await open_stream(self.settings, self.host, self.port, header, ResponseLayer())

    async def udp_stream(
        self, destination: Destination, receive: DatagramReceiver
    ) -> StreamDatagramFlow:
        header = vless.encode_request(self.uuid, vless.CMD_UDP, destination)
        stream = await open_stream(self.settings, self.host, self.port, header, ResponseLayer())
        decoder = vless.UdpDecoder()

        def decode(data: bytes) -> list[tuple[bytes, Destination]]:
            decoder.feed(data)
            packets = []
            while (packet := decoder.next()) is not None:
                packets.append((packet, destination))
            return packets

        return StreamDatagramFlow(
            lambda payload, _dest: vless.encode_udp(payload), decode, receive
        ).attach(stream)

    async def open_udp(self, session: Session, receive: DatagramReceiver) -> _UdpFlows:
        flows = _UdpFlows(self, receive)
        return flows

    async def close(self) -> None:
        close_pooled(self.host, self.port)


register("vless")(VlessOutbound)
