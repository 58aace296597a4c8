"""Client engine (Trojan / VLESS outbounds over TLS, WebSocket, httpupgrade) -> TLS-family
server engine -> local TCP sink and UDP echo."""

from __future__ import annotations

import asyncio
import hashlib
import os
import socket
import ssl
from pathlib import Path

import pytest
from test_tls_inbound import PASSWORD, UUID, echo_server, fallback_server, server_config

from elsewhere.config import from_mapping
from elsewhere.engine import Engine
from elsewhere.transports.dial import dial
from elsewhere.transports.settings import StreamSettings
from elsewhere.transports.tls import certificate_pin

CARRIERS = {
    "tls": {},
    "ws": {"network": "ws", "path": "/ws-secret"},
    "httpupgrade": {"network": "httpupgrade", "path": "/hu-secret"},
}


def client_config(kind: str, carrier: str, port: int, dest_port: int) -> dict:
    secret = {"password": PASSWORD} if kind == "trojan" else {"uuid": UUID}
    return {
        "inbounds": [{"type": "tunnel", "port": 0, "destination": f"127.0.0.1:{dest_port}"}],
        "outbounds": [
            {
                "type": kind,
                "server": "127.0.0.1",
                "port": port,
                "sni": "localhost",
                "insecure": True,
                **secret,
                **CARRIERS[carrier],
            }
        ],
    }


@pytest.mark.parametrize("kind", ["trojan", "vless"])
@pytest.mark.parametrize("carrier", list(CARRIERS))
async def test_tcp_is_byte_exact_through_each_carrier(
    tmp_path: Path, kind: str, carrier: str
) -> None:
    echo, echo_port = await echo_server()
    fallback, fallback_port, seen = await fallback_server()
    async with echo, fallback, Engine(from_mapping(server_config(tmp_path, fallback_port))) as srv:
        port = srv.inbounds[0].port  # type: ignore[attr-defined]
        async with Engine(from_mapping(client_config(kind, carrier, port, echo_port))) as client:
            local = client.inbounds[0].port  # type: ignore[attr-defined]
            reader, writer = await asyncio.open_connection("127.0.0.1", local)
            payload = os.urandom(2 << 20)
            writer.write(payload)
            answer = await asyncio.wait_for(reader.readexactly(len(payload)), 20)
            writer.close()
    assert hashlib.sha256(answer).digest() == hashlib.sha256(payload).digest()
    assert seen == []


@pytest.mark.parametrize("kind", ["trojan", "vless"])
async def test_udp_inside_the_stream(tmp_path: Path, kind: str) -> None:
    loop = asyncio.get_running_loop()

    class Echo(asyncio.DatagramProtocol):
        def connection_made(self, transport: asyncio.BaseTransport) -> None:
            self.transport = transport

        def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
            self.transport.sendto(b"re:" + data, addr)  # type: ignore[attr-defined]

    echo, _ = await loop.create_datagram_endpoint(Echo, local_addr=("127.0.0.1", 0))
    echo_port = echo.get_extra_info("sockname")[1]
    fallback, fallback_port, _ = await fallback_server()
    try:
        async with fallback, Engine(from_mapping(server_config(tmp_path, fallback_port))) as srv:
            port = srv.inbounds[0].port  # type: ignore[attr-defined]
            config = client_config(kind, "ws", port, echo_port)
            async with Engine(from_mapping(config)) as client:
                local = client.inbounds[0].port  # type: ignore[attr-defined]
                sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
                sock.setblocking(False)
                sock.connect(("127.0.0.1", local))
                for i in range(3):
                    sock.send(b"dgram %d" % i)
                    got = await asyncio.wait_for(loop.sock_recv(sock, 2048), 5)
                    assert got == b"re:dgram %d" % i
                sock.close()
    finally:
        echo.close()


async def test_certificate_pin_is_checked(tmp_path: Path) -> None:
    fallback, fallback_port, _ = await fallback_server()
    config = server_config(tmp_path, fallback_port)
    from cryptography import x509
    from cryptography.hazmat.primitives.serialization import Encoding

    cert = x509.load_pem_x509_certificate(Path(config["inbounds"][0]["cert"]).read_bytes())
    good = certificate_pin(cert.public_bytes(Encoding.DER))
    async with fallback, Engine(from_mapping(config)) as srv:
        port = srv.inbounds[0].port  # type: ignore[attr-defined]
        stream = await dial(StreamSettings(sni="localhost", pin=good), "127.0.0.1", port)
        stream.close()
        with pytest.raises(ssl.SSLCertVerificationError, match="does not match the pin"):
            await dial(StreamSettings(sni="localhost", pin="AB" * 32), "127.0.0.1", port)
        with pytest.raises(OSError):  # no pin, no insecure: a self-signed chain is refused
            await dial(StreamSettings(sni="localhost"), "127.0.0.1", port)
