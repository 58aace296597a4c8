"""Transports as registered layers (transports/registry.py): a stack named in a config is
dialed layer by layer, a layer registered from outside src/ takes part like the built-in ones,
and a layer that fails takes the connection below it down with it."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import pytest

from elsewhere.errors import ConfigError
from elsewhere.transports.dial import dial
from elsewhere.transports.layer import Layer
from elsewhere.transports.registry import TRANSPORTS, Transport, compose, load_all
from elsewhere.transports.settings import StreamSettings

PREAMBLE = b"HELLO\n"


async def dial_hello(lower: Layer | None, settings: StreamSettings, host: str, port: int) -> Layer:
    assert lower is not None
    lower.write(settings.options.get("preamble", PREAMBLE))
    return lower


async def dial_broken(lower: Layer | None, settings: StreamSettings, host: str, port: int) -> Layer:
    raise ConnectionError("the layer's handshake failed")


@pytest.fixture(autouse=True)
def test_layers(monkeypatch: pytest.MonkeyPatch) -> None:
    load_all()
    monkeypatch.setitem(TRANSPORTS, "hello-test", Transport("hello-test", dial_hello))
    monkeypatch.setitem(TRANSPORTS, "broken-test", Transport("broken-test", dial_broken))


@contextlib.asynccontextmanager
async def recorder() -> AsyncIterator[tuple[int, asyncio.Queue[bytes]]]:
    """A loopback server that puts everything one connection sent, up to its EOF, in a queue."""
    received: asyncio.Queue[bytes] = asyncio.Queue()

    async def record(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(ConnectionError):
            received.put_nowait(await reader.read(-1))
        writer.close()

    server = await asyncio.start_server(record, "127.0.0.1", 0)
    async with server:
        yield server.sockets[0].getsockname()[1], received


def test_the_stack_follows_the_link_parameters_or_the_config() -> None:
    def stack(**options: object) -> tuple[str, ...]:
        return StreamSettings.from_options("proxy", options).stack

    assert stack() == ("tcp", "tls")
    assert stack(security="tls", type="ws") == ("tcp", "tls", "ws")
    assert stack(security="none", network="httpupgrade") == ("tcp", "httpupgrade")
    assert stack(stack="tcp > hello-test > tls") == ("tcp", "hello-test", "tls")
    assert stack(stack=["tcp", "ws"]) == ("tcp", "ws")


@pytest.mark.parametrize(
    ("value", "words"),
    [
        ("tcp > nonsense", ["no transport 'nonsense'", "known:", "tls"]),
        ("tls > tcp", ["must start with tcp"]),
        ("tcp > browser-ws", ["no transport 'browser-ws'"]),  # a stand-in, not a layer
        (3, ['like "tcp > tls > ws"']),
    ],
)
def test_a_wrong_stack_is_one_clear_line(value: object, words: list[str]) -> None:
    with pytest.raises(ConfigError) as exc:
        StreamSettings.from_options("proxy", {"stack": value})
    message = str(exc.value)
    assert "\n" not in message and message.startswith('outbound "proxy": ')
    for word in words:
        assert word in message


def test_a_network_nobody_registered_is_refused_with_the_known_ones() -> None:
    with pytest.raises(ConfigError, match=r"network must be tcp, .*ws"):
        StreamSettings.from_options("proxy", {"network": "quic"})


async def test_a_layer_registered_outside_src_is_dialed_in_its_place() -> None:
    settings = StreamSettings.from_options(
        "proxy", {"stack": "tcp > hello-test", "preamble": b"HI THERE\n"}
    )
    assert [t.name for t in compose(settings)] == ["tcp", "hello-test"]
    async with recorder() as (port, received):
        stream = await dial(settings, "127.0.0.1", port)
        stream.write(b"payload")
        stream.write_eof()
        assert await asyncio.wait_for(received.get(), 10) == b"HI THERE\npayload"
        stream.close()


async def test_a_failing_layer_closes_the_connection_below_it() -> None:
    settings = StreamSettings.from_options("proxy", {"stack": "tcp > hello-test > broken-test"})
    async with recorder() as (port, received):
        with pytest.raises(ConnectionError, match="handshake failed"):
            await dial(settings, "127.0.0.1", port)
        # the server saw the layers below the broken one, then the connection end
        assert await asyncio.wait_for(received.get(), 10) == PREAMBLE
