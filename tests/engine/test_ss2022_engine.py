"""Shadowsocks 2022 in the engine, on loopback: client engine -> ss2022 -> server engine ->
local servers, for every method; many users on one port; UDP sessions that survive an address
change; the stealth reaction next to the AEAD server's; and the client's clock warning."""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
import socket
import time
from collections.abc import Callable
from typing import Any

import pytest
from test_mixed_e2e import PAGE, curl, web_server
from test_tunnel_direct import sink_server

from elsewhere.codecs import socks5
from elsewhere.codecs.address import encode_address
from elsewhere.codecs.shadowsocks import Cipher, StreamEncryptor
from elsewhere.codecs.ss2022 import (
    Data,
    Request,
    ResponseHeader,
    SaltPool,
    TcpClient,
    TcpServer,
    decode_psk,
    decode_psks,
    generate_psk,
)
from elsewhere.codecs.ss2022_udp import UdpClient
from elsewhere.config import from_mapping
from elsewhere.engine import Engine
from elsewhere.errors import ConfigError
from elsewhere.outbounds.ss2022 import CLOCK_HINT, ClockWatch
from elsewhere.session import Destination

METHODS = ["2022-blake3-aes-128-gcm", "2022-blake3-aes-256-gcm", "2022-blake3-chacha20-poly1305"]
AES_METHODS = METHODS[:2]


# --- configs and small servers ------------------------------------------------------------


def server_config(
    method: str,
    psk: str,
    *,
    users: dict[str, str] | None = None,
    idle: float = 30,
    **extra: Any,
) -> dict:
    inbound: dict[str, Any] = {
        "type": "ss2022",
        "listen": "127.0.0.1",
        "port": 0,
        "method": method,
        "psk": psk,
        **extra,
    }
    if users is not None:
        inbound["users"] = [{"id": name, "psk": key} for name, key in users.items()]
    return {
        "inbounds": [inbound],
        "outbounds": [{"type": "direct", "private": "allow"}],
        "timeouts": {"idle": idle},
    }


def client_config(
    server_port: int, dest_port: int, method: str, password: str, **extra: Any
) -> dict:
    return {
        "inbounds": [{"type": "tunnel", "port": 0, "destination": f"127.0.0.1:{dest_port}"}],
        "outbounds": [
            {
                "type": "ss2022",
                "tag": "proxy",
                "server": "127.0.0.1",
                "port": server_port,
                "method": method,
                "password": password,
                **extra,
            }
        ],
    }


def port_of(engine: Engine) -> int:
    return int(engine.inbounds[0].port)  # type: ignore[attr-defined]


class Meter:
    def __init__(self) -> None:
        self.counted: dict[str, list[int]] = {}

    def add(self, key: str, up: int, down: int) -> None:
        c = self.counted.setdefault(key, [0, 0])
        c[0] += up
        c[1] += down


async def echo_server() -> tuple[asyncio.Server, int]:
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while data := await reader.read(1 << 16):
            writer.write(data)
        writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    return server, server.sockets[0].getsockname()[1]


class UdpEcho(asyncio.DatagramProtocol):
    """Answers `<port it was sent from>:<payload>`, so a test sees which NAT flow carried it."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport: Any = transport

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        self.transport.sendto(b"%d:" % addr[1] + data, addr)


async def udp_echo() -> tuple[asyncio.DatagramTransport, int]:
    loop = asyncio.get_running_loop()
    echo, _ = await loop.create_datagram_endpoint(UdpEcho, local_addr=("127.0.0.1", 0))
    return echo, echo.get_extra_info("sockname")[1]


async def until(condition: Callable[[], bool], timeout: float = 5.0) -> None:
    """Wait for a condition another task makes true (not a fixed sleep)."""
    async with asyncio.timeout(timeout):
        while not condition():
            await asyncio.sleep(0.01)


async def closed(reader: asyncio.StreamReader) -> bool:
    """True once the stream ends without more data (FIN, or a reset from an aborted relay)."""
    try:
        return await asyncio.wait_for(reader.read(-1), 5) == b""
    except ConnectionResetError:
        return True


def udp_socket() -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.setblocking(False)
    sock.bind(("127.0.0.1", 0))
    return sock


# --- TCP end to end -----------------------------------------------------------------------


@pytest.mark.parametrize("method", METHODS)
async def test_tcp_through_ss2022_is_byte_exact_and_counted(method: str) -> None:
    psk = generate_psk(method)
    sink, sink_port, _ = await sink_server()
    meter = Meter()
    async with sink, Engine(from_mapping(server_config(method, psk)), meter=meter) as server:
        config = client_config(port_of(server), sink_port, method, psk)
        async with Engine(from_mapping(config)) as client:
            reader, writer = await asyncio.open_connection("127.0.0.1", port_of(client))
            payload = os.urandom(3 << 20)
            writer.write(payload)
            writer.write_eof()
            answer = await asyncio.wait_for(reader.read(-1), 20)
            writer.close()
    assert answer[:32] == hashlib.sha256(payload).digest()
    assert len(answer) == 32 + (1 << 20)
    assert meter.counted["default"] == [len(payload), len(answer)]
    assert server.stats.probes == 0


async def test_client_sends_salt_headers_and_first_data_in_one_write() -> None:
    method = "2022-blake3-aes-256-gcm"
    psk = generate_psk(method)
    first_reads: asyncio.Queue[bytes] = asyncio.Queue()

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await first_reads.put(await reader.read(1 << 16))
        writer.close()

    fake = await asyncio.start_server(handle, "127.0.0.1", 0)
    async with fake:
        fake_port = fake.sockets[0].getsockname()[1]
        config = client_config(fake_port, 9, method, psk)
        async with Engine(from_mapping(config)) as client:
            _, writer = await asyncio.open_connection("127.0.0.1", port_of(client))
            writer.write(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            first = await asyncio.wait_for(first_reads.get(), 5)
            writer.close()
            # a client that says nothing: the request still goes, padded, on its own
            _, writer = await asyncio.open_connection("127.0.0.1", port_of(client))
            alone = await asyncio.wait_for(first_reads.get(), 5)
            writer.close()
    key = decode_psk(method, psk)
    events = TcpServer(method, key, salt_pool=SaltPool()).feed(first, now=time.time())
    assert events == [
        Request(Destination("127.0.0.1", 9), b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", None)
    ]
    events = TcpServer(method, key, salt_pool=SaltPool()).feed(alone, now=time.time())
    assert events == [Request(Destination("127.0.0.1", 9), b"", None)]
    assert len(alone) > 32 + 11 + 16 + 7 + 16  # not the bare header: padded


async def test_server_answers_with_salt_header_and_first_data_in_one_write() -> None:
    method = "2022-blake3-aes-128-gcm"
    psk = generate_psk(method)
    echo, echo_port = await echo_server()
    async with echo, Engine(from_mapping(server_config(method, psk))) as server:
        reader, writer = await asyncio.open_connection("127.0.0.1", port_of(server))
        codec = TcpClient(method, decode_psks(method, psk))
        writer.write(codec.request(Destination("127.0.0.1", echo_port), b"ping", now=time.time()))
        first = await asyncio.wait_for(reader.read(1 << 16), 5)
        assert codec.feed(first, now=time.time()) == [ResponseHeader(), Data(b"ping")]
        writer.close()


# --- many users on one port ---------------------------------------------------------------


def users_config(method: str, ipsk: str, users: dict[str, str], idle: float = 30) -> dict:
    return server_config(method, ipsk, users=users, idle=idle)


@pytest.mark.parametrize("method", AES_METHODS)
async def test_many_users_share_one_port_and_are_counted_apart(method: str) -> None:
    ipsk = generate_psk(method)
    users = {name: generate_psk(method) for name in ("alice", "bob", "carol")}
    sink, sink_port, _ = await sink_server()
    meter = Meter()
    sent: dict[str, int] = {}
    async with sink, Engine(from_mapping(users_config(method, ipsk, users)), meter=meter) as server:
        for name, size in (("alice", 100_000), ("bob", 300_000)):
            config = client_config(port_of(server), sink_port, method, f"{ipsk}:{users[name]}")
            async with Engine(from_mapping(config)) as client:
                reader, writer = await asyncio.open_connection("127.0.0.1", port_of(client))
                writer.write(os.urandom(size))
                writer.write_eof()
                answer = await asyncio.wait_for(reader.read(-1), 10)
                writer.close()
                assert len(answer) == 32 + (1 << 20)
                sent[name] = size
    assert meter.counted == {
        "alice": [sent["alice"], 32 + (1 << 20)],
        "bob": [sent["bob"], 32 + (1 << 20)],
    }
    assert server.stats.probes == 0


async def test_removing_a_user_closes_its_relay_and_refuses_it_without_restart() -> None:
    method = "2022-blake3-aes-256-gcm"
    ipsk = generate_psk(method)
    users = {"alice": generate_psk(method), "bob": generate_psk(method)}
    echo, echo_port = await echo_server()
    async with echo, Engine(from_mapping(users_config(method, ipsk, users, idle=1.0))) as server:
        inbound = server.inbounds[0]
        clients = {
            name: Engine(
                from_mapping(
                    client_config(port_of(server), echo_port, method, f"{ipsk}:{users[name]}")
                )
            )
            for name in users
        }
        for engine in clients.values():
            await engine.start()
        try:
            streams = {}
            for name, engine in clients.items():
                reader, writer = await asyncio.open_connection("127.0.0.1", port_of(engine))
                writer.write(b"hello " + name.encode())
                assert await asyncio.wait_for(reader.readexactly(6 + len(name)), 5)
                streams[name] = (reader, writer)

            gone = inbound.set_users({"alice": users["alice"]})  # type: ignore[attr-defined]
            assert gone == {"bob"}

            bob_reader, _ = streams["bob"]
            assert await closed(bob_reader)  # the server ended it
            alice_reader, alice_writer = streams["alice"]
            alice_writer.write(b"still here")
            assert await asyncio.wait_for(alice_reader.readexactly(10), 5) == b"still here"

            probes = server.stats.probes
            reader, writer = await asyncio.open_connection("127.0.0.1", port_of(clients["bob"]))
            writer.write(b"let me in")
            assert await asyncio.wait_for(reader.read(-1), 5) == b""  # silence, then closed
            assert server.stats.probes == probes + 1
            for _, w in streams.values():
                w.close()
            writer.close()
        finally:
            for engine in clients.values():
                await engine.stop()


def test_user_with_a_key_of_the_wrong_size_is_a_clear_config_error() -> None:
    method = "2022-blake3-aes-256-gcm"
    config = users_config(
        method, generate_psk(method), {"dave": generate_psk("2022-blake3-aes-128-gcm")}
    )
    with pytest.raises(ConfigError, match=r'user "dave".*32-byte key'):
        Engine(from_mapping(config))


def test_chacha_cannot_serve_many_users_on_one_port() -> None:
    method = "2022-blake3-chacha20-poly1305"
    config = users_config(method, generate_psk(method), {"eve": generate_psk(method)})
    with pytest.raises(ConfigError, match="cannot carry identity headers"):
        Engine(from_mapping(config))


def test_missing_psk_says_how_to_make_one() -> None:
    config = server_config("2022-blake3-aes-128-gcm", "x")
    del config["inbounds"][0]["psk"]
    with pytest.raises(ConfigError, match="keys add"):
        Engine(from_mapping(config))


# --- UDP ----------------------------------------------------------------------------------


@pytest.mark.parametrize("method", METHODS)
async def test_udp_through_ss2022(method: str) -> None:
    loop = asyncio.get_running_loop()
    psk = generate_psk(method)
    echo, echo_port = await udp_echo()
    try:
        async with Engine(from_mapping(server_config(method, psk))) as server:
            config = client_config(port_of(server), echo_port, method, psk)
            async with Engine(from_mapping(config)) as client:
                sock = udp_socket()
                sock.connect(("127.0.0.1", port_of(client)))
                for i in range(3):
                    sock.send(b"ping %d" % i)
                    got = await asyncio.wait_for(loop.sock_recv(sock, 2048), 5)
                    assert got.endswith(b":ping %d" % i)
                sock.close()
    finally:
        echo.close()


@pytest.mark.parametrize("method", ["2022-blake3-aes-256-gcm", "2022-blake3-chacha20-poly1305"])
async def test_udp_session_survives_a_change_of_client_address(method: str) -> None:
    loop = asyncio.get_running_loop()
    psk = generate_psk(method)
    echo, echo_port = await udp_echo()
    target = Destination("127.0.0.1", echo_port)
    try:
        async with Engine(from_mapping(server_config(method, psk))) as server:
            inbound: Any = server.inbounds[0]
            codec = UdpClient(method, decode_psks(method, psk))
            first, second = udp_socket(), udp_socket()
            server_addr = ("127.0.0.1", port_of(server))
            flows = set()
            for sock, word in ((first, b"one"), (second, b"two"), (second, b"three")):
                sock.sendto(codec.send(target, word, now=time.time()), server_addr)
                data = await asyncio.wait_for(loop.sock_recv(sock, 2048), 5)
                reply = codec.receive(data, now=time.time())
                nat_port, _, echoed = reply.payload.partition(b":")
                assert echoed == word
                assert reply.source == target
                flows.add(nat_port)
            assert len(flows) == 1  # one NAT flow: the session moved with the client
            assert list(inbound.nat.entries) == [codec.session_id]
            first.close()
            second.close()
    finally:
        echo.close()


async def test_replayed_udp_packet_is_dropped_without_an_answer() -> None:
    loop = asyncio.get_running_loop()
    method = "2022-blake3-aes-128-gcm"
    psk = generate_psk(method)
    echo, echo_port = await udp_echo()
    try:
        async with Engine(from_mapping(server_config(method, psk))) as server:
            codec = UdpClient(method, decode_psks(method, psk))
            sock = udp_socket()
            server_addr = ("127.0.0.1", port_of(server))
            packet = codec.send(Destination("127.0.0.1", echo_port), b"once", now=time.time())
            sock.sendto(packet, server_addr)
            await asyncio.wait_for(loop.sock_recv(sock, 2048), 5)
            sock.sendto(packet, server_addr)
            await until(lambda: server.stats.probes == 1)
            later = codec.send(Destination("127.0.0.1", echo_port), b"twice", now=time.time())
            sock.sendto(later, server_addr)
            # the next answer is to the later packet: the replay got none
            data = await asyncio.wait_for(loop.sock_recv(sock, 2048), 5)
            assert codec.receive(data, now=time.time()).payload.endswith(b":twice")
            sock.close()
    finally:
        echo.close()


async def test_idle_udp_sessions_expire_with_their_nat_entries() -> None:
    loop = asyncio.get_running_loop()
    method = "2022-blake3-aes-256-gcm"
    psk = generate_psk(method)
    echo, echo_port = await udp_echo()
    try:
        config = server_config(method, psk, udp_timeout=0.3)
        async with Engine(from_mapping(config)) as server:
            inbound: Any = server.inbounds[0]
            codec = UdpClient(method, decode_psks(method, psk))
            sock = udp_socket()
            packet = codec.send(Destination("127.0.0.1", echo_port), b"hi", now=time.time())
            sock.sendto(packet, ("127.0.0.1", port_of(server)))
            await asyncio.wait_for(loop.sock_recv(sock, 2048), 5)
            assert codec.session_id in inbound.udp
            await until(lambda: codec.session_id not in inbound.udp and not inbound.nat.entries)
            assert codec.session_id not in inbound.udp_clients
            sock.close()
    finally:
        echo.close()


async def test_removed_user_loses_its_udp_session_at_once() -> None:
    loop = asyncio.get_running_loop()
    method = "2022-blake3-aes-128-gcm"
    ipsk = generate_psk(method)
    users = {"alice": generate_psk(method), "bob": generate_psk(method)}
    echo, echo_port = await udp_echo()
    target = Destination("127.0.0.1", echo_port)
    try:
        async with Engine(from_mapping(users_config(method, ipsk, users))) as server:
            inbound: Any = server.inbounds[0]
            server_addr = ("127.0.0.1", port_of(server))
            codec = UdpClient(method, decode_psks(method, f"{ipsk}:{users['bob']}"))
            sock = udp_socket()
            sock.sendto(codec.send(target, b"a", now=time.time()), server_addr)
            await asyncio.wait_for(loop.sock_recv(sock, 2048), 5)
            assert inbound.set_users({"alice": users["alice"]}) == {"bob"}
            assert not inbound.nat.entries and codec.session_id not in inbound.udp
            sock.sendto(codec.send(target, b"b", now=time.time()), server_addr)
            await until(lambda: server.stats.probes == 1)
            assert not inbound.nat.entries
            sock.close()
    finally:
        echo.close()


# --- what a prober sees -------------------------------------------------------------------

IDLE = 0.5


def aead_server_config() -> dict:
    return {
        "inbounds": [
            {
                "type": "shadowsocks",
                "listen": "127.0.0.1",
                "port": 0,
                "method": "aes-256-gcm",
                "password": "s3cret",
            }
        ],
        "outbounds": [{"type": "direct", "private": "allow"}],
        "timeouts": {"idle": IDLE},
    }


def first_packet(kind: str, port: int, psk: str) -> bytes:
    """A genuine client's first packet, as a prober would record and replay it."""
    destination = Destination("127.0.0.1", port)
    if kind == "shadowsocks":
        encryptor = StreamEncryptor(Cipher.from_password("aes-256-gcm", "s3cret"))
        return encryptor.encrypt(encode_address(destination) + b"hello")
    method = "2022-blake3-aes-256-gcm"
    codec = TcpClient(method, decode_psks(method, psk))
    return codec.request(destination, b"hello", now=time.time())


async def probe(port: int, data: bytes) -> tuple[bytes, float]:
    """Send `data`, then read until the server closes: what came back, and after how long."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(data)
    await writer.drain()
    start = time.monotonic()
    try:
        answer = await asyncio.wait_for(reader.read(-1), 5)
    finally:
        writer.close()
    return answer, time.monotonic() - start


async def first_answer(port: int, data: bytes) -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(data)
    try:
        return await asyncio.wait_for(reader.read(1 << 16), 5)
    finally:
        writer.close()


@pytest.mark.parametrize("kind", ["shadowsocks", "ss2022"])
async def test_probes_get_silence_and_a_close_after_the_idle_timeout_like_aead(kind: str) -> None:
    psk = generate_psk("2022-blake3-aes-256-gcm")
    config = (
        aead_server_config()
        if kind == "shadowsocks"
        else server_config("2022-blake3-aes-256-gcm", psk, idle=IDLE)
    )
    echo, echo_port = await echo_server()
    async with echo, Engine(from_mapping(config)) as server:
        port = port_of(server)
        genuine = first_packet(kind, echo_port, psk)
        assert await first_answer(port, genuine)  # the genuine client got its echo
        # garbage, a trickle, a replay: all at once, each on its own connection
        results = await asyncio.gather(
            *(probe(port, data) for data in (os.urandom(300), os.urandom(7), genuine))
        )
        for answer, elapsed in results:
            assert answer == b""
            assert IDLE * 0.9 <= elapsed < IDLE * 4
        # (the AEAD server cannot even tell 7 bytes from a slow client; the reaction is the same)
        assert server.stats.probes == 3  # the 7-byte trickle too, once it is closed


async def test_request_whose_fixed_header_misses_the_first_read_is_a_probe() -> None:
    method = "2022-blake3-aes-256-gcm"
    psk = generate_psk(method)
    echo, echo_port = await echo_server()
    async with echo, Engine(from_mapping(server_config(method, psk, idle=IDLE))) as server:
        genuine = first_packet("ss2022", echo_port, psk)
        reader, writer = await asyncio.open_connection("127.0.0.1", port_of(server))
        writer.write(genuine[:40])  # the salt and a little: a prober trickling bytes
        await until(lambda: server.stats.probes == 1)
        writer.write(genuine[40:])
        start = time.monotonic()
        assert await asyncio.wait_for(reader.read(-1), 5) == b""
        assert time.monotonic() - start >= IDLE * 0.9
        writer.close()
        assert server.stats.sessions == 0


# --- the client's clock warning -----------------------------------------------------------


@pytest.mark.parametrize(
    ("server_offset", "client_offset"), [(120.0, 0.0), (0.0, -45.0)], ids=["server", "client"]
)
async def test_client_warns_about_the_clock_when_connections_close_unanswered(
    server_offset: float, client_offset: float, caplog: pytest.LogCaptureFixture
) -> None:
    method = "2022-blake3-aes-128-gcm"
    psk = generate_psk(method)
    echo, echo_port = await echo_server()
    server_config_ = server_config(method, psk, idle=0.2, clock_offset=server_offset)
    async with echo, Engine(from_mapping(server_config_)) as server:
        config = client_config(port_of(server), echo_port, method, psk, clock_offset=client_offset)
        async with Engine(from_mapping(config)) as client:
            watch = client.outbounds["proxy"].clock_watch  # type: ignore[attr-defined]
            with caplog.at_level(logging.WARNING, logger="elsewhere.ss2022"):
                for count in range(1, 5):
                    reader, writer = await asyncio.open_connection("127.0.0.1", port_of(client))
                    writer.write(b"hello")
                    assert await asyncio.wait_for(reader.read(-1), 5) == b""
                    writer.close()
                    await until(lambda n=count: watch.unanswered == n)  # type: ignore[misc]
                    assert watch.suspect == (count >= 3)
    warnings = [r.getMessage() for r in caplog.records if CLOCK_HINT in r.getMessage()]
    assert len(warnings) == 1  # once, not once per connection
    assert "check the system clock: Shadowsocks 2022 needs it within 30 s" in warnings[0]
    assert server.stats.probes == 4


async def test_no_clock_warning_when_the_server_answers() -> None:
    method = "2022-blake3-aes-128-gcm"
    psk = generate_psk(method)
    echo, echo_port = await echo_server()
    async with echo, Engine(from_mapping(server_config(method, psk, clock_offset=25.0))) as server:
        config = client_config(port_of(server), echo_port, method, psk)
        async with Engine(from_mapping(config)) as client:
            watch = client.outbounds["proxy"].clock_watch  # type: ignore[attr-defined]
            for _ in range(4):
                reader, writer = await asyncio.open_connection("127.0.0.1", port_of(client))
                writer.write(b"hello")
                assert await asyncio.wait_for(reader.readexactly(5), 5) == b"hello"
                writer.close()
            await until(lambda: client.stats.active == 0)
            assert watch.unanswered == 0 and not watch.suspect


def test_unanswered_connections_spread_over_more_than_a_minute_are_no_clock_problem() -> None:
    watch = ClockWatch("server:1")
    for at in (0.0, 40.0, 80.0):
        watch.unanswered_close(at)
    assert not watch.suspect
    watch.unanswered_close(81.0)  # 40, 80, 81: three within a minute
    assert watch.suspect and watch.warnings == 1
    watch.unanswered_close(82.0)
    assert watch.warnings == 1
    watch.answered()
    assert not watch.suspect and watch.unanswered == 0


# --- through the client's mixed port ------------------------------------------------------


def mixed_client_config(server_port: int, method: str, password: str) -> dict:
    return {
        "inbounds": [{"type": "mixed", "port": 0}],
        "outbounds": [
            {
                "type": "ss2022",
                "tag": "proxy",
                "key": f"ss://{method}:{password.replace('+', '%2B').replace('/', '%2F')}"
                f"@127.0.0.1:{server_port}",
            }
        ],
    }


async def test_curl_fetches_a_page_through_the_mixed_port_and_ss2022() -> None:
    method = "2022-blake3-aes-256-gcm"
    ipsk = generate_psk(method)
    users = {"alice": generate_psk(method)}
    web, web_port, heads = await web_server()
    meter = Meter()
    async with web, Engine(from_mapping(users_config(method, ipsk, users)), meter=meter) as server:
        config = mixed_client_config(port_of(server), method, f"{ipsk}:{users['alice']}")
        async with Engine(from_mapping(config)) as client:
            code, body = await curl(
                "--socks5-hostname", f"127.0.0.1:{port_of(client)}", f"http://localhost:{web_port}/"
            )
    assert (code, body) == (0, PAGE)
    assert heads[0].startswith(b"GET / HTTP/1.1\r\n")
    assert meter.counted["alice"][1] > len(PAGE)


async def test_socks5_udp_associate_reaches_a_udp_echo_through_ss2022() -> None:
    loop = asyncio.get_running_loop()
    method = "2022-blake3-chacha20-poly1305"
    psk = generate_psk(method)
    echo, echo_port = await udp_echo()
    try:
        async with Engine(from_mapping(server_config(method, psk))) as server:
            config = mixed_client_config(port_of(server), method, psk)
            async with Engine(from_mapping(config)) as client:
                reader, writer = await asyncio.open_connection("127.0.0.1", port_of(client))
                hello = socks5.Socks5Client(
                    Destination("0.0.0.0", 0), command=socks5.CMD_UDP_ASSOCIATE
                )
                writer.write(hello.data_to_send())
                bound = None
                while bound is None:
                    hello.feed(await asyncio.wait_for(reader.read(512), 5))
                    while (event := hello.next_event()) is not None:
                        if out := hello.data_to_send():
                            writer.write(out)
                        if isinstance(event, socks5.Connected):
                            bound = event.bound
                sock = udp_socket()
                sock.connect((bound.host, bound.port))
                dest = Destination("localhost", echo_port)
                for word in (b"one", b"two", b"three"):
                    sock.send(socks5.encode_udp(dest, word))
                    data = await asyncio.wait_for(loop.sock_recv(sock, 2048), 5)
                    source, payload = socks5.decode_udp(data)
                    assert payload.endswith(b":" + word)
                    assert source.port == echo_port
                sock.close()
                writer.close()
    finally:
        echo.close()
