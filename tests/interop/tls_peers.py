"""Peers for the TLS-family interop tests: Debian's v2ray 4.34 and trojan-gfw 1.16 run as child
processes from JSON configs written here, and the loopback echo servers they reach.

Peers are waited for by the line they log once listening, not by connecting to them: a test
connection to a client-side peer would make it dial our server and count as a probe there."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import subprocess
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from elsewhere.session import Destination
from elsewhere.transports.tls import certificate_pin

TIMEOUT = 5.0
UUID = "b831381d-6324-4d53-ad4f-8cda48b30811"
PASSWORD = "interop-пароль-42"
WS_PATH = "/ws-secret"
WS_HOST = "cdn.example.test"  # the Host a CDN-fronted client sends; checked by our server
SNI = "localhost"  # what make_cert's certificate names
V2RAY_READY = b"V2Ray 4.34.0 started"
TROJAN_READY = b") started at"  # "trojan service (server) started at 127.0.0.1:443"


@contextlib.asynccontextmanager
async def running(args: list[str], log: Path, ready: bytes) -> AsyncIterator[None]:
    """Run a peer until the block ends; wait (bounded) until its log says it listens."""
    with log.open("wb") as out:
        proc = subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + TIMEOUT
        while ready not in log.read_bytes():
            if proc.poll() is not None:
                pytest.fail(f"{args[0]} exited: {log.read_text(errors='replace')}")
            if time.monotonic() > deadline:
                pytest.fail(f"{args[0]} never said it started: {log.read_text(errors='replace')}")
            await asyncio.sleep(0.02)  # poll interval while the binary starts
        yield
    finally:
        proc.kill()
        proc.wait(timeout=TIMEOUT)


def write_config(directory: Path, name: str, config: dict[str, Any]) -> Path:
    path = directory / name
    path.write_text(json.dumps(config, indent=1))
    return path


# v2ray (v4 JSON: inbounds, outbounds, streamSettings)


def v2ray_stream(carrier: str, served: tuple[Path, Path] | None = None) -> dict[str, Any]:
    """streamSettings for TLS or WebSocket+TLS: a server's with its (cert, key) files, or a
    client's, which takes our self-signed leaf (v2ray 4.34 has no certificate pin)."""
    tls: dict[str, Any] = {"serverName": SNI}
    if served is None:
        tls["allowInsecure"] = True
    else:
        cert, key = served
        tls["certificates"] = [{"certificateFile": str(cert), "keyFile": str(key)}]
    stream: dict[str, Any] = {"network": "tcp", "security": "tls", "tlsSettings": tls}
    if carrier == "ws":
        stream["network"] = "ws"
        stream["wsSettings"] = {"path": WS_PATH, "headers": {"Host": WS_HOST}}
    return stream


def v2ray_client(
    protocol: str, carrier: str, local_port: int, target: Destination, server_port: int
) -> dict[str, Any]:
    """dokodemo-door (TCP and UDP) on loopback to `target`, through a vless/trojan outbound."""
    if protocol == "vless":
        user: dict[str, Any] = {"id": UUID, "encryption": "none"}
        settings: dict[str, Any] = {
            "vnext": [{"address": "127.0.0.1", "port": server_port, "users": [user]}]
        }
    else:
        settings = {
            "servers": [{"address": "127.0.0.1", "port": server_port, "password": PASSWORD}]
        }
    return {
        "log": {"loglevel": "warning"},
        "inbounds": [
            {
                "listen": "127.0.0.1",
                "port": local_port,
                "protocol": "dokodemo-door",
                "settings": {"address": target.host, "port": target.port, "network": "tcp,udp"},
            }
        ],
        "outbounds": [
            {
                "protocol": protocol,
                "settings": settings,
                "streamSettings": v2ray_stream(carrier),
            }
        ],
    }


def v2ray_server(protocol: str, carrier: str, port: int, cert: Path, key: Path) -> dict[str, Any]:
    """A vless/trojan inbound with our certificate, out through freedom."""
    if protocol == "vless":
        settings: dict[str, Any] = {"clients": [{"id": UUID}], "decryption": "none"}
    else:
        settings = {"clients": [{"password": PASSWORD}]}
    return {
        "log": {"loglevel": "warning"},
        "inbounds": [
            {
                "listen": "127.0.0.1",
                "port": port,
                "protocol": protocol,
                "settings": settings,
                "streamSettings": v2ray_stream(carrier, (cert, key)),
            }
        ],
        "outbounds": [{"protocol": "freedom"}],
    }


# trojan-gfw (docs/config.md: run_type server / forward)


def trojan_forward(local_port: int, target: Destination, server_port: int, cert: Path) -> dict:
    """A trojan-gfw client forwarding TCP and UDP on `local_port` to `target`; it checks our
    certificate against the file (verify and verify_hostname on)."""
    return {
        "run_type": "forward",
        "local_addr": "127.0.0.1",
        "local_port": local_port,
        "remote_addr": "127.0.0.1",
        "remote_port": server_port,
        "target_addr": target.host,
        "target_port": target.port,
        "password": [PASSWORD],
        "udp_timeout": 10,
        "log_level": 1,
        "ssl": {"verify": True, "verify_hostname": True, "cert": str(cert), "sni": SNI},
    }


def trojan_server(port: int, fallback: Destination, cert: Path, key: Path) -> dict:
    """A trojan-gfw server whose strangers go to `fallback` (its remote_addr/remote_port)."""
    return {
        "run_type": "server",
        "local_addr": "127.0.0.1",
        "local_port": port,
        "remote_addr": fallback.host,
        "remote_port": fallback.port,
        "password": [PASSWORD],
        "log_level": 1,
        "ssl": {"cert": str(cert), "key": str(key), "alpn": ["http/1.1"]},
    }


# loopback targets


@contextlib.asynccontextmanager
async def tcp_echo() -> AsyncIterator[int]:
    """A TCP echo on loopback; yields its port."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(ConnectionError):
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    async with server:
        yield server.sockets[0].getsockname()[1]


class _UdpEcho(asyncio.DatagramProtocol):
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        self.transport.sendto(data, addr)  # type: ignore[attr-defined]


@contextlib.asynccontextmanager
async def udp_echo() -> AsyncIterator[int]:
    """A UDP echo on loopback; yields its port."""
    loop = asyncio.get_running_loop()
    transport, _ = await loop.create_datagram_endpoint(_UdpEcho, local_addr=("127.0.0.1", 0))
    try:
        yield transport.get_extra_info("sockname")[1]
    finally:
        transport.close()


@contextlib.asynccontextmanager
async def echo(network: str) -> AsyncIterator[int]:
    """A TCP or UDP echo on loopback; yields its port."""
    async with tcp_echo() if network == "tcp" else udp_echo() as port:
        yield port


PAYLOAD = os.urandom(1 << 20)  # many TLS records and WebSocket frames each way
DATAGRAMS = [b"first", os.urandom(1200), b"last"]  # no b"": asyncio's sendto drops it


async def round_trip(network: str, port: int) -> None:
    """PAYLOAD (TCP) or DATAGRAMS (UDP) to a local port and back, unchanged."""
    if network == "tcp":
        assert await tcp_round_trip(port, PAYLOAD) == PAYLOAD
    else:
        assert await udp_round_trips(port, DATAGRAMS) == DATAGRAMS


async def tcp_round_trip(port: int, payload: bytes) -> bytes:
    """Send `payload` to a local port (a peer's or our tunnel's) and read as much back."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(payload)
        return await asyncio.wait_for(reader.readexactly(len(payload)), TIMEOUT)
    finally:
        writer.close()


async def udp_round_trips(port: int, payloads: list[bytes]) -> list[bytes]:
    """Send each datagram to a local port and wait for its echo before the next."""
    loop = asyncio.get_running_loop()
    replies: asyncio.Queue[bytes] = asyncio.Queue()

    class Client(asyncio.DatagramProtocol):
        def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
            replies.put_nowait(data)

    transport, _ = await loop.create_datagram_endpoint(Client, remote_addr=("127.0.0.1", port))
    got = []
    try:
        for payload in payloads:
            transport.sendto(payload)
            got.append(await asyncio.wait_for(replies.get(), TIMEOUT))
    finally:
        transport.close()
    return got


# elsewhere's side


def our_server(cert: Path, key: Path, fallback: Destination) -> dict[str, Any]:
    """An elsewhere TLS-family server: Trojan and VLESS, raw and on WS_PATH for WS_HOST."""
    return {
        "inbounds": [
            {
                "type": "tls",
                "listen": "127.0.0.1",
                "port": 0,
                "cert": str(cert),
                "key": str(key),
                "trojan": [{"id": "tom", "password": PASSWORD}],
                "vless": [{"id": "vera", "uuid": UUID}],
                "websocket": {"path": WS_PATH},
                "host": WS_HOST,
                "fallback": f"{fallback.host}:{fallback.port}",
            }
        ],
        "outbounds": [{"type": "direct", "private": "allow"}],
        "timeouts": {"idle": 10},
    }


def our_client(
    protocol: str, carrier: str, server_port: int, target: Destination, pin: str
) -> dict[str, Any]:
    """An elsewhere client: a tunnel (TCP and UDP) to `target` through a trojan/vless outbound
    that checks the server's certificate pin."""
    secret = {"password": PASSWORD} if protocol == "trojan" else {"uuid": UUID}
    ws = {"network": "ws", "path": WS_PATH, "host": WS_HOST} if carrier == "ws" else {}
    return {
        "inbounds": [{"type": "tunnel", "port": 0, "destination": f"{target.host}:{target.port}"}],
        "outbounds": [
            {
                "type": protocol,
                "server": "127.0.0.1",
                "port": server_port,
                "sni": SNI,
                "pin": pin,
                **secret,
                **ws,
            }
        ],
    }


def pin_of(cert: Path) -> str:
    """The certificate pin our clients take (SHA-256 of the DER certificate)."""
    der = x509.load_pem_x509_certificate(cert.read_bytes()).public_bytes(Encoding.DER)
    return certificate_pin(der)
