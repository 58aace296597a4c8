"""Active probing of the Shadowsocks AEAD server (DESIGN.md §4 Stealth, SIP004): whatever a
stranger sends — random bytes of any length, a real client's first packet cut short or with a
bit flipped, an exact replay of a real first packet, the server's own reply reflected back — it
gets one reaction: not a byte back, and the connection closed one idle timeout after the
stranger's last byte, exactly as a valid session that goes quiet. A stranger who half-closes is
closed at once, whatever it sent. The probes run concurrently, so the file takes seconds."""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from typing import Any, cast

import pytest

from elsewhere.codecs.address import encode_address
from elsewhere.codecs.shadowsocks import (
    Cipher,
    StreamDecryptor,
    StreamEncryptor,
    decrypt_packet,
    encrypt_packet,
)
from elsewhere.config import from_mapping
from elsewhere.engine import Engine
from elsewhere.session import Destination

METHODS = ["chacha20-ietf-poly1305", "aes-256-gcm", "aes-128-gcm"]
methods = pytest.mark.parametrize("method", METHODS)
PASSWORD = "probe-me-if-you-can"
IDLE = 1.0  # [timeouts] idle of the server under test
LENGTH_SIZE, TAG_SIZE = 2, 16  # SIP004: a sealed length is 2 bytes plus a 16-byte tag
REQUEST, RESPONSE = b"ping from a real client", b"pong from the site"
WAIT = 2 * IDLE + 5  # the longest any probe waits for the server to close


def server_config(method: str) -> dict[str, Any]:
    keys = [{"id": f"user{i}", "method": method, "password": f"other-{i}"} for i in range(3)]
    keys.append({"id": "alice", "method": method, "password": PASSWORD})
    return {
        "inbounds": [{"type": "shadowsocks", "listen": "127.0.0.1", "port": 0, "keys": keys}],
        "outbounds": [{"type": "direct", "private": "allow"}],
        "timeouts": {"idle": IDLE},
    }


def port_of(engine: Engine) -> int:
    return int(engine.inbounds[0].port)


@dataclass(frozen=True)
class Reaction:
    """What the server did to one probe."""

    answer: bytes  # every byte it sent back
    reset: bool  # closed with RST instead of FIN
    closed_after: float  # seconds from the probe's last byte (or its EOF) to the close


async def probe(port: int, *pieces: bytes, pause: float = 0.0, eof: bool = False) -> Reaction:
    """Connect, send `pieces` `pause` seconds apart (then EOF if asked), and wait for the server
    to close; the clock starts at the last byte sent."""
    loop = asyncio.get_running_loop()
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        for index, piece in enumerate(pieces):
            if index:
                await asyncio.sleep(pause)  # the prober's own timing, part of the probe
            writer.write(piece)
            await writer.drain()
        if eof:
            writer.write_eof()
        last = loop.time()
        reset = False
        try:
            answer = await asyncio.wait_for(reader.read(-1), WAIT)
        except ConnectionResetError:
            answer, reset = b"", True
        return Reaction(answer, reset, loop.time() - last)
    finally:
        writer.close()


def silent_and_closed_on_idle(reaction: Reaction) -> bool:
    return (
        reaction.answer == b""
        and not reaction.reset
        and 0.9 * IDLE <= reaction.closed_after <= 2 * IDLE + 0.5
    )


def silent_and_closed_at_once(reaction: Reaction) -> bool:
    return reaction.answer == b"" and not reaction.reset and reaction.closed_after < IDLE / 4


# what the probes are made of


def random_lengths(salt_size: int) -> list[int]:
    """~40 lengths in 1..1000: every boundary of the first packet's parse (around the salt,
    the sealed length, one address header) for 16- and 32-byte salts, plus a random spread."""
    edges: set[int] = {1, 2, 999, 1000, 259, 260, 261}  # 259: the longest address header
    for salt in (16, 32, salt_size):
        first = salt + LENGTH_SIZE + TAG_SIZE  # where trial decryption can start: 34 or 50
        edges |= {salt - 1, salt, salt + 1, salt + LENGTH_SIZE, first - 1, first, first + 1}
    spread = random.Random(salt_size)
    while len(edges) < 40:
        edges.add(spread.randint(1, 1000))
    return sorted(edges)


def first_packet(method: str, payload: bytes = b"GET / HTTP/1.1\r\nHost: x\r\n\r\n") -> bytes:
    """A valid client's first write (fresh salt each time): the header with its first data."""
    header = encode_address(Destination("site.test", 80))
    return StreamEncryptor(Cipher.from_password(method, PASSWORD)).encrypt(header + payload)


def truncations(method: str) -> dict[str, bytes]:
    """A valid first write cut at every point where the server's parse changes state."""
    salt = Cipher.from_password(method, PASSWORD).salt_size
    length_end = salt + LENGTH_SIZE + TAG_SIZE
    full = len(first_packet(method))
    cuts = {
        "one salt byte": 1,
        "salt less one": salt - 1,
        "salt": salt,
        "salt and a length byte": salt + 1,
        "length without tag": salt + LENGTH_SIZE,
        "length tag less one": length_end - 1,
        "sealed length": length_end,
        "one payload byte": length_end + 1,
        "half the header": length_end + 6,
        "payload without tag": full - TAG_SIZE,
        "last tag byte missing": full - 1,
    }
    return {f"cut: {name}": first_packet(method)[:at] for name, at in cuts.items()}


def tampered(method: str) -> dict[str, bytes]:
    """A valid first write with one bit flipped in each of its parts."""
    salt = Cipher.from_password(method, PASSWORD).salt_size
    places = {"salt": 0, "sealed length": salt, "length tag": salt + 3, "payload tag": -1}
    out = {}
    for name, at in places.items():
        packet = bytearray(first_packet(method))
        packet[at] ^= 0x01
        out[f"flipped bit: {name}"] = bytes(packet)
    return out


# a real client's first packet, and a site behind the server


@dataclass
class Site:
    """Answers REQUEST with RESPONSE and closes; stays silent otherwise. Counts connections."""

    port: int = 0
    connections: int = 0


@pytest.fixture
async def site() -> AsyncIterator[Site]:
    state = Site()

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        state.connections += 1
        try:
            if await reader.read(len(REQUEST)) == REQUEST:
                writer.write(RESPONSE)
                await writer.drain()
            else:
                await reader.read(-1)
        finally:
            writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    state.port = server.sockets[0].getsockname()[1]
    async with server:
        yield state


async def captured_client_packet(method: str, site_port: int) -> bytes:
    """Everything an elsewhere client (tunnel inbound -> shadowsocks outbound, with an Outline
    prefix) writes for one connection that sends REQUEST: the client is pointed at a recorder,
    not at the server, so the server first sees these bytes when the test sends them."""
    recorded = asyncio.get_running_loop().create_future()

    async def record(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        recorded.set_result(await reader.read(-1))
        writer.close()

    recorder = await asyncio.start_server(record, "127.0.0.1", 0)
    client = {
        "inbounds": [{"type": "tunnel", "port": 0, "destination": f"127.0.0.1:{site_port}"}],
        "outbounds": [
            {
                "type": "shadowsocks",
                "server": "127.0.0.1",
                "port": recorder.sockets[0].getsockname()[1],
                "method": method,
                "password": PASSWORD,
                "prefix": "HTTP/1.",  # an Outline prefix that fits the 16-byte salts too
            }
        ],
    }
    async with recorder, Engine(from_mapping(client)) as engine:
        _, writer = await asyncio.open_connection("127.0.0.1", port_of(engine))
        writer.write(REQUEST)
        writer.write_eof()
        packet: bytes = await asyncio.wait_for(recorded, 10)
        writer.close()
    assert packet.startswith(b"HTTP/1.")
    return packet


async def deliver(port: int, packet: bytes, method: str) -> tuple[bytes, bytes]:
    """Send a real client's bytes once, as the client would have; return the server's raw
    reply and its plaintext."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(packet)
    raw = await asyncio.wait_for(reader.read(-1), 10)
    writer.close()
    return raw, StreamDecryptor(Cipher.from_password(method, PASSWORD)).decrypt(raw)


async def all_probes(method: str, server: Engine, site: Site) -> dict[str, Sequence[bytes]]:
    """Every probe, by name, as the pieces it is sent in; the replay material is taken from
    a real client and delivered once first (that delivery must work)."""
    salt = Cipher.from_password(method, PASSWORD).salt_size
    packet = await captured_client_packet(method, site.port)
    reply, plain = await deliver(port_of(server), packet, method)
    assert plain == RESPONSE  # the original works...
    assert server.stats.probes == 0
    noise = random.Random(method)
    probes: dict[str, Sequence[bytes]] = {
        f"random: {n} bytes": [noise.randbytes(n)] for n in random_lengths(salt)
    }
    probes |= {name: [data] for name, data in truncations(method).items()}
    probes |= {name: [data] for name, data in tampered(method).items()}
    probes["replay of a real client's first packet"] = [packet]  # ...the replay must not
    probes["the server's reply reflected back"] = [reply]
    return probes


def misbehaving(reactions: dict[str, Reaction], rule: Any) -> dict[str, Reaction]:
    return {name: r for name, r in reactions.items() if not rule(r)}


@methods
async def test_every_probe_gets_silence_and_is_closed_one_idle_timeout_after_its_last_byte(
    method: str, site: Site
) -> None:
    async with Engine(from_mapping(server_config(method))) as server:
        probes = await all_probes(method, server, site)
        names = list(probes)
        # a valid client that sends its request header and then nothing: the yardstick
        header_only = StreamEncryptor(Cipher.from_password(method, PASSWORD)).encrypt(
            encode_address(Destination("127.0.0.1", site.port))
        )
        results = await asyncio.gather(
            probe(port_of(server), header_only),
            *(probe(port_of(server), *probes[n]) for n in names),
        )
        yardstick, reactions = results[0], dict(zip(names, results[1:], strict=True))
    assert silent_and_closed_on_idle(yardstick), yardstick
    assert misbehaving(reactions, silent_and_closed_on_idle) == {}
    assert len(reactions) >= 55
    assert site.connections == 2  # the original delivery and the yardstick; no probe got through


@methods
async def test_every_probe_that_half_closes_is_closed_at_once(method: str, site: Site) -> None:
    async with Engine(from_mapping(server_config(method))) as server:
        probes = await all_probes(method, server, site)
        names = list(probes)
        results = await asyncio.gather(
            *(probe(port_of(server), *probes[n], eof=True) for n in names)
        )
        reactions = dict(zip(names, results, strict=True))
    assert misbehaving(reactions, silent_and_closed_at_once) == {}
    assert site.connections == 1


async def test_the_idle_timeout_runs_from_the_probes_last_byte_not_its_first(site: Site) -> None:
    method = "aes-256-gcm"
    async with Engine(from_mapping(server_config(method))) as server:
        port = port_of(server)
        noise = random.Random(7)
        truncated = first_packet(method)[:60]
        trickles = {
            # the key search happens after the third piece
            "random bytes": [noise.randbytes(20), noise.randbytes(20), noise.randbytes(200)],
            # found out by the first piece, then keeps talking
            "random bytes, then more": [noise.randbytes(300) for _ in range(3)],
            "truncated header": [truncated[:30], truncated[30:45], truncated[45:]],
        }
        names = list(trickles)
        pause = 0.6 * IDLE  # each gap alone is shorter than the timeout; all of them are not
        results = await asyncio.gather(*(probe(port, *trickles[n], pause=pause) for n in names))
        reactions = dict(zip(names, results, strict=True))
    assert misbehaving(reactions, silent_and_closed_on_idle) == {}


@methods
async def test_every_probe_is_counted(method: str, site: Site) -> None:
    async with Engine(from_mapping(server_config(method))) as server:
        probes = await all_probes(method, server, site)
        await asyncio.gather(*(probe(port_of(server), *p, eof=True) for p in probes.values()))
        deadline = asyncio.get_running_loop().time() + 1.0
        while server.stats.probes < len(probes) and asyncio.get_running_loop().time() < deadline:
            await asyncio.sleep(0.01)  # bounded poll: the count may land as the sockets close
        assert server.stats.probes == len(probes)


@methods
async def test_random_datagrams_get_no_answer_and_are_counted(method: str) -> None:
    loop = asyncio.get_running_loop()
    cipher = Cipher.from_password(method, PASSWORD)
    echo = await loop.create_datagram_endpoint(Echo, local_addr=("127.0.0.1", 0))
    echo_port = echo[0].get_extra_info("sockname")[1]
    noise = random.Random(method)
    lengths = random_lengths(cipher.salt_size)
    try:
        async with Engine(from_mapping(server_config(method))) as server:
            transport, client = await loop.create_datagram_endpoint(
                Collector, remote_addr=("127.0.0.1", port_of(server))
            )
            for n in lengths:
                transport.sendto(noise.randbytes(n))
            # a real datagram last: the server reads its socket in order, so once the echo's
            # answer is back every probe before it has been dealt with
            target = encode_address(Destination("127.0.0.1", echo_port))
            transport.sendto(encrypt_packet(cipher, target + b"marco"))
            answer = await asyncio.wait_for(client.answers.get(), 5)
            transport.close()
        assert decrypt_packet(cipher, answer) == target + b"marco"
        assert client.answers.empty()
        assert server.stats.probes == len(lengths)
    finally:
        echo[0].close()


class Echo(asyncio.DatagramProtocol):
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        self.transport.sendto(data, addr)


class Collector(asyncio.DatagramProtocol):
    def __init__(self) -> None:
        self.answers: asyncio.Queue[bytes] = asyncio.Queue()

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        self.answers.put_nowait(data)
