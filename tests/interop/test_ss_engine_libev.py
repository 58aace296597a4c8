"""The engine's Shadowsocks AEAD (SIP004) against Debian's shadowsocks-libev, both ways, for all
three ciphers, TCP and UDP: ss-local / ss-tunnel -> elsewhere server -> local destinations, and
elsewhere client (tunnel inbound -> shadowsocks outbound) -> ss-server -> local destinations.
Large payloads must arrive byte-exact and be counted, to the byte, against the key that sent
them. The replay filter is checked with what a real ss-tunnel put on the wire."""

from __future__ import annotations

import asyncio
import hashlib
import os
from pathlib import Path
from typing import Any

import pytest

from elsewhere.codecs.shadowsocks import Cipher, StreamDecryptor
from elsewhere.config import from_mapping
from elsewhere.engine import Engine
from elsewhere.store.usage import UsageMeter
from interop.peers import HttpSink, curl, eventually, http_sink, running, udp_client, udp_echo
from ports import free_port

# Needs the Debian packages shadowsocks-libev and curl (.ci/apt-packages); never skipped.
pytestmark = pytest.mark.interop

METHODS = ["chacha20-ietf-poly1305", "aes-256-gcm", "aes-128-gcm"]
methods = pytest.mark.parametrize("method", METHODS)
PASSWORD = "interop-пароль-42"
UPLOAD = 3 << 20  # several hundred SIP004 chunks each way
DOWNLOAD = 2 << 20
# payload sizes; libev's UDP relay refuses datagrams of about 3 KB and more even between its
# own ss-tunnel and ss-server ("suspicious UDP packet"), so stay at 2 KiB
DATAGRAMS = [1, 100, 1400, 2048]


def server_config(method: str, idle: float = 30) -> dict[str, Any]:
    """An elsewhere server with several keys; the peer uses the last one, so trial decryption
    has to walk past the others."""
    keys = [{"id": f"decoy{i}", "method": method, "password": f"decoy-{i}"} for i in range(3)]
    keys.append({"id": "alice", "method": method, "password": PASSWORD})
    return {
        "inbounds": [{"type": "shadowsocks", "listen": "127.0.0.1", "port": 0, "keys": keys}],
        "outbounds": [{"type": "direct", "private": "allow"}],
        "timeouts": {"idle": idle},
    }


def client_config(server_port: int, dest_port: int, method: str) -> dict[str, Any]:
    return {
        "inbounds": [{"type": "tunnel", "port": 0, "destination": f"127.0.0.1:{dest_port}"}],
        "outbounds": [
            {
                "type": "shadowsocks",
                "server": "127.0.0.1",
                "port": server_port,
                "method": method,
                "password": PASSWORD,
            }
        ],
    }


def port_of(engine: Engine) -> int:
    return int(engine.inbounds[0].port)


async def post_through(sink: HttpSink, tmp_path: Path, origin: str, *proxy: str) -> None:
    """curl POSTs UPLOAD random bytes to the sink at `origin` (through `proxy` args) and
    downloads DOWNLOAD bytes; both must arrive byte-exact."""
    upload = tmp_path / "upload"
    upload.write_bytes(os.urandom(UPLOAD))
    download = tmp_path / "download"
    head = await curl(
        *proxy,
        "-H",
        "Expect:",  # no 100-continue round trip: the body follows the head at once
        "--data-binary",
        f"@{upload}",
        "-o",
        str(download),
        "-D",
        "-",
        f"{origin}/{DOWNLOAD}",
    )
    [exchange] = sink.exchanges
    assert download.read_bytes() == exchange.body
    assert len(exchange.body) == DOWNLOAD
    assert f"x-upload-sha256: {hashlib.sha256(upload.read_bytes()).hexdigest()}" in (
        head.decode().lower()
    )


async def settled(engine: Engine) -> None:
    """Wait (bounded) until the engine's relays have closed and reported their last bytes."""
    await eventually(lambda: engine.stats.active == 0, "the relays to close")


# ss-local / ss-tunnel -> elsewhere server


@methods
async def test_ss_local_reaches_a_site_through_our_server_and_the_key_is_metered(
    method: str, tmp_path: Path
) -> None:
    sink = await http_sink()
    meter = UsageMeter()
    async with sink.server, Engine(from_mapping(server_config(method)), meter=meter) as server:
        local = free_port()
        args = ["ss-local", "-s", "127.0.0.1", "-p", str(port_of(server)), "-b", "127.0.0.1"]
        args += ["-l", str(local), "-k", PASSWORD, "-m", method]
        async with running(args, tmp_path / "ss-local.log", tcp=local):
            # a host name, so the request header carries a domain the server resolves
            socks = ("--socks5-hostname", f"127.0.0.1:{local}")
            await post_through(sink, tmp_path, f"http://localhost:{sink.port}", *socks)
        await settled(server)
    [exchange] = sink.exchanges
    assert meter.drain() == {"alice": (exchange.read, exchange.written)}
    assert server.stats.probes == 0


@methods
async def test_ss_tunnel_datagrams_come_back_through_our_server_and_are_metered(
    method: str, tmp_path: Path
) -> None:
    meter = UsageMeter()
    async with (
        udp_echo() as (echo, echo_port),
        Engine(from_mapping(server_config(method)), meter=meter) as server,
    ):
        tunnel = free_port()
        args = ["ss-tunnel", "-s", "127.0.0.1", "-p", str(port_of(server)), "-b", "127.0.0.1"]
        args += ["-l", str(tunnel), "-L", f"127.0.0.1:{echo_port}", "-u"]
        args += ["-k", PASSWORD, "-m", method]
        async with (
            running(args, tmp_path / "ss-tunnel.log", tcp=tunnel, udp=tunnel),
            udp_client(tunnel) as client,
        ):
            for size in DATAGRAMS:
                payload = os.urandom(size)
                assert await client.ask(payload) == payload
    total = sum(DATAGRAMS)
    assert echo.received == total
    assert meter.drain() == {"alice": (total, total)}
    assert server.stats.probes == 0


# elsewhere client -> ss-server


@methods
async def test_our_client_reaches_a_site_through_ss_server(method: str, tmp_path: Path) -> None:
    sink = await http_sink()
    port = free_port()
    args = ["ss-server", "-s", "127.0.0.1", "-p", str(port), "-k", PASSWORD, "-m", method, "-u"]
    async with (
        sink.server,
        running(args, tmp_path / "ss-server.log", tcp=port, udp=port),
        Engine(from_mapping(client_config(port, sink.port, method))) as client,
    ):
        await post_through(sink, tmp_path, f"http://127.0.0.1:{port_of(client)}")
        await settled(client)
    [exchange] = sink.exchanges
    assert (client.stats.up, client.stats.down) == (exchange.read, exchange.written)


@methods
async def test_our_client_datagrams_come_back_through_ss_server(
    method: str, tmp_path: Path
) -> None:
    port = free_port()
    args = ["ss-server", "-s", "127.0.0.1", "-p", str(port), "-k", PASSWORD, "-m", method, "-u"]
    async with (
        udp_echo() as (echo, echo_port),
        running(args, tmp_path / "ss-server.log", tcp=port, udp=port),
        Engine(from_mapping(client_config(port, echo_port, method))) as client,
        udp_client(port_of(client)) as app,
    ):
        for size in DATAGRAMS:
            payload = os.urandom(size)
            assert await app.ask(payload) == payload
    total = sum(DATAGRAMS)
    assert echo.received == total
    assert (client.stats.up, client.stats.down) == (total, total)


# the replay filter, fed what a real client sent


async def capture_first_packet(method: str, dest_port: int, request: bytes, log: Path) -> bytes:
    """What ss-tunnel puts on the wire for one connection carrying `request`: it is pointed at
    a recorder (not at our server), which reads until the bytes decrypt to the whole request."""
    cipher = Cipher.from_password(method, PASSWORD)
    captured = bytearray()
    done = asyncio.get_running_loop().create_future()

    async def record(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        decryptor, plain = StreamDecryptor(cipher), b""
        while not plain.endswith(request) and (chunk := await reader.read(65536)):
            captured.extend(chunk)
            plain += decryptor.decrypt(chunk)
        writer.close()
        done.set_result(None)

    recorder = await asyncio.start_server(record, "127.0.0.1", 0)
    tunnel = free_port()
    args = ["ss-tunnel", "-s", "127.0.0.1", "-p", str(recorder.sockets[0].getsockname()[1])]
    args += ["-b", "127.0.0.1", "-l", str(tunnel), "-L", f"127.0.0.1:{dest_port}"]
    args += ["-k", PASSWORD, "-m", method]
    async with recorder, running(args, log, tcp=tunnel):
        _, writer = await asyncio.open_connection("127.0.0.1", tunnel)
        writer.write(request)
        await asyncio.wait_for(done, 10)
        writer.close()
    return bytes(captured)


@methods
async def test_replayed_ss_tunnel_packet_gets_silence_and_the_idle_close(
    method: str, tmp_path: Path
) -> None:
    idle = 1.0
    sink = await http_sink()
    request = b"POST /5 HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n"
    packet = await capture_first_packet(method, sink.port, request, tmp_path / "ss-tunnel.log")
    loop = asyncio.get_running_loop()
    async with sink.server, Engine(from_mapping(server_config(method, idle))) as server:
        # the first delivery is the original: the site answers through our server
        reader, writer = await asyncio.open_connection("127.0.0.1", port_of(server))
        writer.write(packet)
        answer = StreamDecryptor(Cipher.from_password(method, PASSWORD)).decrypt(
            await asyncio.wait_for(reader.read(-1), 10)
        )
        writer.close()
        assert answer.startswith(b"HTTP/1.1 200 OK\r\n")
        # the same bytes again: not a byte back, closed only once the idle timeout has passed
        reader, writer = await asyncio.open_connection("127.0.0.1", port_of(server))
        writer.write(packet)
        sent = loop.time()
        assert await asyncio.wait_for(reader.read(-1), 2 * idle + 5) == b""
        assert 0.9 * idle <= loop.time() - sent <= 2 * idle + 0.5
        writer.close()
    assert len(sink.exchanges) == 1  # the replay never reached the site
    assert server.stats.probes == 1
