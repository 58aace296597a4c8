"""A new protocol is new files only (issue 17): a tiny protocol registered from this test file,
touching nothing in src/, shows up in share links, the server's and the client's config and the
CLI, and carries real traffic through a real server and client engine."""

from __future__ import annotations

import asyncio
import contextlib
import io
import secrets
from collections.abc import AsyncIterator, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, cast
from urllib.parse import quote, unquote

import pytest

from elsewhere.config import from_mapping
from elsewhere.control import cli, roles
from elsewhere.control.links import (
    SCHEMES,
    AccessKey,
    Scheme,
    outbound_options,
    parse_access_key,
    split_hostport,
)
from elsewhere.engine import Engine
from elsewhere.errors import ConfigError
from elsewhere.inbounds.base import INBOUND_TYPES, EngineAPI, Inbound
from elsewhere.outbounds.base import OUTBOUND_TYPES, DatagramFlow, DatagramReceiver
from elsewhere.outbounds.streamed import open_stream
from elsewhere.protocols.base import (
    PROTOCOLS,
    SERVER_INBOUNDS,
    KeyProtocol,
    ServerInbound,
    ServerSettings,
    load_all,
)
from elsewhere.session import Destination, Session
from elsewhere.store.base import KeyRecord, Store
from elsewhere.transports.layer import Pending
from elsewhere.transports.settings import StreamSettings
from elsewhere.transports.tcp import listen, listening_port

SHAPE = "plain://SECRET@host:port#name"

# -- the protocol: one header line `SECRET HOST PORT\n`, then the bytes -----------------------


class PlainServerSide(asyncio.Protocol):
    def __init__(self, inbound: PlainInbound) -> None:
        self.inbound = inbound
        self.buffer = b""
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        assert self.transport is not None and self.inbound.engine is not None
        self.buffer += data
        line, newline, rest = self.buffer.partition(b"\n")
        if not newline:
            return
        secret, host, port = line.decode().split(" ")
        user = self.inbound.users.get(secret)
        if user is None:
            self.transport.close()
            return
        self.transport.pause_reading()
        self.transport.set_protocol(Pending())
        engine = self.inbound.engine
        session = Session(self.inbound.tag, Destination(host, int(port)), "tcp", user=user)
        engine.spawn(engine.serve_tcp(session, self.transport, rest))


class PlainInbound:
    def __init__(self, tag: str, options: Mapping[str, Any]) -> None:
        self.tag = tag
        self.host = str(options.get("listen", "127.0.0.1"))
        self.port = int(options.get("port", 0))
        self.users: dict[str, str] = {}
        self.engine: EngineAPI | None = None
        self.server: asyncio.Server | None = None

    def set_users(self, users: dict[str, str]) -> None:
        self.users = users

    async def start(self, engine: EngineAPI) -> None:
        self.engine = engine
        self.server = await listen(lambda: PlainServerSide(self), self.host, self.port, "plain")
        self.port = listening_port(self.server)

    async def stop(self) -> None:
        if self.server is not None:
            self.server.close()

    def describe(self) -> str:
        return f"plain {self.host}:{self.port}"


class PlainOutbound:
    def __init__(self, tag: str, options: Mapping[str, Any]) -> None:
        self.tag = tag
        self.host, self.port = str(options["server"]), int(options["port"])
        self.secret = str(options["secret"])
        self.settings = StreamSettings.from_options(tag, {"security": "none", **options})

    async def open_tcp(self, session: Session) -> asyncio.Transport:
        dest = session.destination
        header = f"{self.secret} {dest.host} {dest.port}\n".encode()
        return await open_stream(self.settings, self.host, self.port, header)

    async def open_udp(self, session: Session, receive: DatagramReceiver) -> DatagramFlow:
        raise OSError("plain carries no UDP")

    async def close(self) -> None:
        return None


# -- its registrations: a link scheme, a server inbound and a kind of key ----------------------


def parse_plain(text: str) -> AccessKey:
    body, _, name = text.partition("://")[2].partition("#")
    secret, _, hostport = body.rpartition("@")
    host, port = split_hostport(hostport, legacy=False, shape=SHAPE)
    return AccessKey("plain", "", unquote(secret), host, port, unquote(name))


def format_plain(key: AccessKey) -> str:
    return f"plain://{quote(key.password, safe='')}@{key.host}:{key.port}#{quote(key.name)}"


def plain_outbound(key: AccessKey) -> Mapping[str, Any]:
    return {"type": "plain-test", "server": key.host, "port": key.port, "secret": key.password}


def plain_key(store: Store, method: str | None) -> tuple[str, str]:
    if method:
        raise ConfigError("plain keys have no method")
    return "", secrets.token_hex(8)


def plain_access_key(store: Store, record: KeyRecord) -> AccessKey:
    host = store.get_setting("host") or "127.0.0.1"
    port = int(store.get_setting("port_plain") or 0)
    return AccessKey("plain", "", record.secret, host, port, record.name)


def plain_inbound_config(settings: ServerSettings, store: Store) -> dict[str, Any]:
    port = settings.ports["port_plain"]
    return {"type": "plain-test", "tag": "plain", "listen": settings.listen, "port": port}


def plain_give_keys(inbound: Inbound, keys: Mapping[str, Sequence[KeyRecord]]) -> None:
    cast(PlainInbound, inbound).set_users({r.secret: r.id for r in keys.get("plain", ())})


@pytest.fixture
def plain(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """The plain protocol, registered for one test (the registries are process-wide)."""
    load_all()
    monkeypatch.setitem(INBOUND_TYPES, "plain-test", PlainInbound)
    monkeypatch.setitem(OUTBOUND_TYPES, "plain-test", PlainOutbound)
    monkeypatch.setitem(SCHEMES, "plain", Scheme(parse_plain, format_plain, plain_outbound, SHAPE))
    inbound = ServerInbound(
        "plain",
        port_setting="port_plain",
        flag="--port-plain",
        help="plain test port",
        config=plain_inbound_config,
        give_keys=plain_give_keys,
    )
    monkeypatch.setitem(SERVER_INBOUNDS, "plain", inbound)
    kind = KeyProtocol(
        "plain",
        help="the plain test protocol",
        method_help="none",
        new_key=plain_key,
        access_key=plain_access_key,
        inbound="plain",
    )
    monkeypatch.setitem(PROTOCOLS, "plain", kind)
    yield


# -- the tests ---------------------------------------------------------------------------------


def run_cli(capsys: pytest.CaptureFixture[str], *argv: str) -> str:
    assert cli.main(list(argv)) == 0
    return capsys.readouterr().out


def help_of(*argv: str) -> str:
    out = io.StringIO()
    with contextlib.redirect_stdout(out), pytest.raises(SystemExit):
        cli.build_parser().parse_args([*argv, "--help"])
    return " ".join(out.getvalue().split())  # argparse wraps lines


@pytest.mark.usefixtures("plain")
def test_a_protocol_registered_from_the_tests_is_in_links_config_and_cli(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert "plain: the plain test protocol" in help_of("keys", "add")
    assert "--port-plain" in help_of("server")
    assert "plain://" in help_of("client")

    out = run_cli(
        capsys, "keys", "add", "bob", "--protocol", "plain", "--no-qr", "--data-dir", str(tmp_path)
    )
    link = next(word for word in out.split() if word.startswith("plain://"))
    key = parse_access_key(link)
    assert (key.protocol, key.name) == ("plain", "bob")
    assert outbound_options(key)["type"] == "plain-test"
    client = roles.client_config(key, "127.0.0.1", 0, [])
    assert client.outbounds[0]["type"] == "plain-test"

    store = roles.open_store(tmp_path)
    try:
        settings, _ = roles.prepare_server(store, 0, "127.0.0.1", "127.0.0.1")
        server = roles.server_config(settings, store)
        assert "plain-test" in [inbound["type"] for inbound in server.inbounds]
        assert store.get_setting("port_plain") is not None  # chosen once, like every port
    finally:
        store.close()
    argv = ["keys", "add", "carol", "--protocol", "plain", "--method", "x"]
    assert cli.main([*argv, "--data-dir", str(tmp_path)]) == 2  # its own error, one line
    assert capsys.readouterr().err == "elsewhere: plain keys have no method\n"


def test_an_unregistered_protocol_is_one_clear_line(tmp_path: Path) -> None:
    store = roles.open_store(tmp_path)
    try:
        with pytest.raises(ConfigError, match="unknown protocol 'wireguard'; choose one of ss"):
            roles.add_key(store, "alice", protocol="wireguard")
    finally:
        store.close()
    with pytest.raises(SystemExit):
        cli.build_parser().parse_args(["keys", "add", "x", "--protocol", "plain"])


@contextlib.asynccontextmanager
async def echo_server() -> AsyncIterator[int]:
    async def echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(ConnectionError):
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        writer.close()

    server = await asyncio.start_server(echo, "127.0.0.1", 0)
    async with server:
        yield server.sockets[0].getsockname()[1]


async def exchange(port: int, payload: bytes) -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(payload)
        writer.write_eof()
        return await asyncio.wait_for(reader.read(-1), 10)
    finally:
        writer.close()


@pytest.mark.usefixtures("plain")
async def test_the_registered_protocol_carries_traffic_through_server_and_client(
    tmp_path: Path,
) -> None:
    store = roles.open_store(tmp_path)
    stop = asyncio.Event()
    ready: asyncio.Future[Engine] = asyncio.get_running_loop().create_future()
    task: asyncio.Task[None] | None = None
    try:
        record = roles.add_key(store, "bob", protocol="plain")
        ports = dict.fromkeys(roles.port_settings(), 0)
        settings, _ = roles.prepare_server(store, 0, "127.0.0.1", "127.0.0.1", ports=ports)
        settings.allow_private = True  # the echo server is on loopback
        task = asyncio.create_task(roles.run_server(store, settings, ready.set_result, stop))
        server = await asyncio.wait_for(asyncio.shield(ready), 10)
        plain = next(i for i in server.inbounds if isinstance(i, PlainInbound))
        assert plain.users == {record.secret: record.id}  # the store's key reached it
        store.set_setting("port_plain", str(plain.port))
        key = roles.access_key(store, record)
        async with echo_server() as echo_port:
            tunnel = {
                "type": "tunnel",
                "tag": "in",
                "destination": f"127.0.0.1:{echo_port}",
                "network": ["tcp"],
            }
            client = Engine(
                from_mapping(
                    {"inbounds": [tunnel], "outbounds": [{**outbound_options(key), "tag": "p"}]}
                )
            )
            async with client:
                port = client.inbounds[0].port  # type: ignore[attr-defined]
                payload = secrets.token_bytes(200_000)
                assert await exchange(port, payload) == payload
            assert server.stats.up >= len(payload) and server.stats.down >= len(payload)

            wrong = {**outbound_options(key), "secret": "not-a-key", "tag": "p"}
            client = Engine(from_mapping({"inbounds": [tunnel], "outbounds": [wrong]}))
            async with client:
                port = client.inbounds[0].port  # type: ignore[attr-defined]
                assert await exchange(port, b"hello") == b""
    finally:
        stop.set()
        if task is not None:
            await asyncio.wait_for(task, 10)
        store.close()
