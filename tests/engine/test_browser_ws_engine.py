"""Client engine (tunnel inbound -> VLESS outbound over WebSocket+TLS with fp=chrome, so through
curl_cffi) -> TLS-family server engine -> echo: byte-exact, with a browser's ClientHello on the
wire, and the certificate pin enforced before anything of the tunnel is sent."""

from __future__ import annotations

import asyncio
import hashlib
import os
import struct
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding
from test_tls_inbound import UUID, echo_server, fallback_server, server_config
from tls_helpers import make_cert

from elsewhere.config import from_mapping
from elsewhere.engine import Engine
from elsewhere.transports.browser_ws import BrowserWebSocket
from elsewhere.transports.dial import dial
from elsewhere.transports.settings import StreamSettings
from elsewhere.transports.tls import PinMismatchError, certificate_pin, server_context

PAYLOAD = 3 << 20


def client_config(server_port: int, dest_port: int, **tls: object) -> dict:
    return {
        "inbounds": [{"type": "tunnel", "port": 0, "destination": f"127.0.0.1:{dest_port}"}],
        "outbounds": [
            {
                "type": "vless",
                "server": "127.0.0.1",
                "port": server_port,
                "uuid": UUID,
                "sni": "localhost",
                "network": "ws",
                "path": "/ws-secret",
                "fp": "chrome",
                **tls,
            }
        ],
    }


def cert_pin(config: dict) -> str:
    pem = Path(config["inbounds"][0]["cert"]).read_bytes()
    return certificate_pin(x509.load_pem_x509_certificate(pem).public_bytes(Encoding.DER))


class RecordingProxy:
    """A TCP relay in front of the server that keeps what each client sent first."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.firsts: list[bytes] = []
        self.writers: list[asyncio.StreamWriter] = []

    async def __aenter__(self) -> int:
        self.server = await asyncio.start_server(self.handle, "127.0.0.1", 0)
        return int(self.server.sockets[0].getsockname()[1])

    async def __aexit__(self, *exc: object) -> None:
        self.server.close()
        for writer in self.writers:
            writer.transport.abort()
        await self.server.wait_closed()

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.port)
        self.writers += [writer, up_writer]
        first = await reader.read(65536)
        self.firsts.append(first)
        up_writer.write(first)
        await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))


async def pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    except ConnectionError:
        pass
    writer.close()


def first_cipher_suite(record: bytes) -> int:
    """The first cipher suite a ClientHello record offers (RFC 8446 §4.1.2)."""
    session_id_length = record[5 + 4 + 2 + 32]
    at = 5 + 4 + 2 + 32 + 1 + session_id_length + 2
    return int(struct.unpack_from("!H", record, at)[0])


def is_grease(value: int) -> bool:
    return value & 0x0F0F == 0x0A0A and value >> 8 == value & 0xFF  # RFC 8701


async def echo_through(local_port: int, payload: bytes) -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", local_port)
    writer.write(payload)
    answer = await asyncio.wait_for(reader.readexactly(len(payload)), 30)
    writer.close()
    return answer


@pytest.mark.parametrize("trust", ["insecure", "pinned"])
async def test_vless_over_ws_with_a_chrome_hello_is_byte_exact(tmp_path: Path, trust: str) -> None:
    echo, echo_port = await echo_server()
    fallback, fallback_port, seen = await fallback_server()
    config = server_config(tmp_path, fallback_port)
    tls = {"insecure": True} if trust == "insecure" else {"pin": cert_pin(config)}
    async with echo, fallback, Engine(from_mapping(config)) as server:
        proxy = RecordingProxy(server.inbounds[0].port)
        async with proxy as proxy_port:
            config = client_config(proxy_port, echo_port, **tls)
            async with Engine(from_mapping(config)) as client:
                payload = os.urandom(PAYLOAD)
                answer = await echo_through(client.inbounds[0].port, payload)
    assert hashlib.sha256(answer).digest() == hashlib.sha256(payload).digest()
    assert seen == []
    # Python's ssl never offers GREASE; Chrome opens its cipher list with it
    assert proxy.firsts and all(first[0] == 0x16 for first in proxy.firsts)
    assert all(is_grease(first_cipher_suite(first)) for first in proxy.firsts)


async def test_a_wrong_pin_is_refused(tmp_path: Path) -> None:
    fallback, fallback_port, seen = await fallback_server()
    async with fallback, Engine(from_mapping(server_config(tmp_path, fallback_port))) as server:
        port = server.inbounds[0].port
        settings = StreamSettings(
            sni="localhost", pin="AB" * 32, network="ws", path="/ws-secret", fingerprint="chrome"
        )
        with pytest.raises(PinMismatchError, match="does not match the pin"):
            await dial(settings, "127.0.0.1", port)
    assert seen == []


async def test_a_learned_pin_refuses_another_key_before_the_upgrade_is_sent(tmp_path: Path) -> None:
    """Once a pin is known to belong to a key, curl itself refuses any other key inside the
    handshake: an impostor with another certificate never reads the secret path."""
    fallback, fallback_port, _ = await fallback_server()
    config = server_config(tmp_path, fallback_port)
    pin = cert_pin(config)
    (tmp_path / "impostor").mkdir()
    impostor_cert, impostor_key = make_cert(tmp_path / "impostor")
    heard: list[bytes] = []

    async def impostor(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        heard.append(await reader.read(65536))
        writer.close()

    settings = StreamSettings(
        sni="localhost", pin=pin, network="ws", path="/ws-secret", fingerprint="chrome"
    )
    async with fallback, Engine(from_mapping(config)) as server:
        genuine = await dial(settings, "127.0.0.1", server.inbounds[0].port)
        assert isinstance(genuine, BrowserWebSocket)
        genuine.close()
    fake = await asyncio.start_server(
        impostor, "127.0.0.1", 0, ssl=server_context(impostor_cert, impostor_key)
    )
    async with fake:
        with pytest.raises(PinMismatchError, match="public key does not match the pin"):
            await dial(settings, "127.0.0.1", fake.sockets[0].getsockname()[1])
    assert heard in ([], [b""])
