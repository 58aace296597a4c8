"""`elsewhere keys add NAME --protocol vless --method reality`: the link the apps import, and the
server `elsewhere server` runs from the store serving that very link (dest: Debian's nginx on
loopback), reached with the link's pbk, sid and sni alone."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest
from test_decoy_nginx import certificate_files, running_tls_nginx
from test_reality_nginx import vless_echo_for
from tls_peers import tcp_echo

from elsewhere.codecs import reality
from elsewhere.config import from_mapping
from elsewhere.control import roles
from elsewhere.control.links import outbound_options, parse_access_key
from elsewhere.engine import Engine
from elsewhere.errors import ConfigError
from elsewhere.inbounds.reality import RealityInbound
from elsewhere.protocols.reality import set_dest
from reality_client import NotAuthenticated, RealityParams, connect

pytestmark = pytest.mark.interop


@pytest.fixture
def nginx(tmp_path: Path) -> Iterator[int]:
    files = certificate_files(tmp_path)
    root = tmp_path / "nginx"
    root.mkdir()
    with running_tls_nginx(root, files, "") as port:
        yield port


def test_a_reality_key_needs_a_dest_and_its_link_has_what_the_apps_read(tmp_path: Path) -> None:
    store = roles.open_store(tmp_path)
    try:
        with pytest.raises(ConfigError, match="--dest"):
            roles.add_key(store, "carol", "reality", protocol="vless")
        set_dest(store, "www.example.com", None)
        record = roles.add_key(store, "carol", "reality", protocol="vless")
        link = roles.share_link(store, record)
        parts = urlsplit(link)
        query = {k: v[0] for k, v in parse_qs(parts.query).items()}
        assert parts.scheme == "vless" and parts.username == record.secret
        assert parts.port == int(store.get_setting("port_reality") or 0)
        assert query == {
            "encryption": "none", "flow": "xtls-rprx-vision", "security": "reality",
            "sni": "www.example.com", "fp": "chrome", "type": "tcp",
            "pbk": reality.encode_key(reality.public_key(reality.decode_key(
                store.get_setting("reality_private_key") or ""))),
            "sid": store.get_setting("reality_short_id"),
        }
        assert len(query["sid"]) == 16
        assert link.index("flow=") < link.index("security=") < link.index("pbk=")
        key = parse_access_key(link)
        options = outbound_options(key)
        assert options["security"] == "reality" and options["flow"] == "xtls-rprx-vision"
        assert (options["pbk"], options["sid"], options["sni"]) == (
            query["pbk"], query["sid"], "www.example.com")
        # a second key shares the server's key pair and short id; --sni adds names
        set_dest(store, None, "www.example.com,example.com")
        other = roles.access_key(store, roles.add_key(store, "dave", "reality", protocol="vless"))
        assert other.extra["pbk"] == query["pbk"] and other.extra["sid"] == query["sid"]
        with pytest.raises(ConfigError, match="host or host:port"):
            set_dest(store, "www.example.com:https", None)
    finally:
        store.close()


async def test_the_server_from_the_store_serves_the_link_and_sends_others_to_dest(
    tmp_path: Path, nginx: int
) -> None:
    store = roles.open_store(tmp_path)
    stop = asyncio.Event()
    ready: asyncio.Future[Engine] = asyncio.get_running_loop().create_future()
    task: asyncio.Task[None] | None = None
    try:
        set_dest(store, f"127.0.0.1:{nginx}", "localhost")
        record = roles.add_key(store, "carol", "reality", protocol="vless")
        ports = dict.fromkeys(roles.port_settings(), 0)
        settings, _ = roles.prepare_server(store, 0, "127.0.0.1", "127.0.0.1", ports=ports)
        settings.allow_private = True  # the echo server is on loopback
        task = asyncio.create_task(roles.run_server(store, settings, ready.set_result, stop))
        server = await asyncio.wait_for(asyncio.shield(ready), 10)
        inbound = next(i for i in server.inbounds if isinstance(i, RealityInbound))
        assert set(inbound.users.values()) == {record.id}  # the store's key reached it
        store.set_setting("port_reality", str(inbound.port))  # it listened on port 0
        link = urlsplit(roles.share_link(store, record))
        query = {k: v[0] for k, v in parse_qs(link.query).items()}
        assert link.port == inbound.port
        params = RealityParams(reality.decode_key(query["pbk"]), query["sid"],
                               server_name=query["sni"])
        async with tcp_echo() as echo:
            connection = await asyncio.wait_for(connect(inbound.port, params), 10)
            payload = os.urandom(50_000)
            assert await vless_echo_for(connection, link.username or "", echo, payload) == payload
            connection.close()
            wrong = RealityParams(params.public_key, "00", server_name=query["sni"])
            with pytest.raises(NotAuthenticated):
                await asyncio.wait_for(connect(inbound.port, wrong), 10)
            # and elsewhere's own client, configured from the link alone
            tunnel = {"type": "tunnel", "tag": "in", "destination": f"127.0.0.1:{echo}",
                      "network": ["tcp"]}
            outbound = {**outbound_options(parse_access_key(roles.share_link(store, record))),
                        "tag": "proxy"}
            client = Engine(from_mapping({"inbounds": [tunnel], "outbounds": [outbound]}))
            async with client:
                port = client.inbounds[0].port  # type: ignore[attr-defined]
                reader, writer = await asyncio.open_connection("127.0.0.1", port)
                writer.write(payload)
                assert await asyncio.wait_for(reader.readexactly(len(payload)), 10) == payload
                writer.close()
        assert inbound.refusals == {"short_id": 1}
    finally:
        stop.set()
        if task is not None:
            await asyncio.wait_for(task, 10)
        store.close()
