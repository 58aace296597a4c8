"""HeaderLayer and SealedHeaderLayer: a client protocol's request header leaves with the first
data in one write (no telling first-packet length), or alone once the client has said nothing
for `wait` seconds (a server-speaks-first protocol)."""

from __future__ import annotations

import asyncio

import pytest

from elsewhere.transports.layer import HeaderLayer, Pending, SealedHeaderLayer

HEADER = b"\x01\x7f\x00\x00\x01\x00\x50"  # ATYP IPv4 127.0.0.1:80


class Recorder(asyncio.Transport):
    """The stream below: keeps every write, and says when one arrives."""

    def __init__(self) -> None:
        super().__init__()
        self.writes: list[bytes] = []
        self.eof = False
        self.wrote = asyncio.Event()

    def write(self, data: bytes | bytearray | memoryview) -> None:
        self.writes.append(bytes(data))
        self.wrote.set()

    def write_eof(self) -> None:
        self.eof = True

    def can_write_eof(self) -> bool:
        return True

    def is_closing(self) -> bool:
        return False


def seal(data: bytes) -> bytes:
    return b"<" + data + b">"


def unseal(data: bytes) -> bytes:
    return data[1:-1]


def layers(loop: asyncio.AbstractEventLoop) -> list[HeaderLayer]:
    return [
        HeaderLayer(HEADER, wait=0.05, loop=loop),
        SealedHeaderLayer(HEADER, seal, unseal, wait=0.05, loop=loop),
    ]


def sealed(layer: HeaderLayer, data: bytes) -> bytes:
    return seal(data) if isinstance(layer, SealedHeaderLayer) else data


@pytest.mark.parametrize("kind", [0, 1], ids=["plain", "sealed"])
async def test_the_header_leaves_with_the_first_data_in_one_write(kind: int) -> None:
    layer = layers(asyncio.get_running_loop())[kind]
    below = Recorder()
    layer.connection_made(below)
    layer.write(b"GET /")
    layer.write(b" HTTP/1.1")
    assert below.writes == [sealed(layer, HEADER + b"GET /"), sealed(layer, b" HTTP/1.1")]


@pytest.mark.parametrize("kind", [0, 1], ids=["plain", "sealed"])
async def test_the_header_goes_alone_when_the_client_says_nothing(kind: int) -> None:
    layer = layers(asyncio.get_running_loop())[kind]
    below = Recorder()
    layer.connection_made(below)
    await asyncio.wait_for(below.wrote.wait(), 5)
    layer.write(b"later")
    assert below.writes == [sealed(layer, HEADER), sealed(layer, b"later")]


@pytest.mark.parametrize("kind", [0, 1], ids=["plain", "sealed"])
async def test_a_half_close_before_any_data_sends_the_header_first(kind: int) -> None:
    layer = layers(asyncio.get_running_loop())[kind]
    below = Recorder()
    layer.connection_made(below)
    layer.write_eof()
    assert below.writes == [sealed(layer, HEADER)] and below.eof


async def test_the_sealed_layer_opens_what_arrives() -> None:
    layer = SealedHeaderLayer(HEADER, seal, unseal, loop=asyncio.get_running_loop())
    layer.connection_made(Recorder())
    layer.data_received(b"<answer>")
    held = layer.get_protocol()
    assert isinstance(held, Pending) and held.chunks == [b"answer"]
    layer.connection_lost(None)
