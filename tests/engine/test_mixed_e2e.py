"""A person's browser view: curl through the client's mixed port -> Shadowsocks -> server ->
a local web server; and SOCKS5 UDP ASSOCIATE to a local UDP echo."""

from __future__ import annotations

import asyncio
import socket

import pytest
from test_shadowsocks_engine import server_config

from elsewhere.codecs import socks5
from elsewhere.config import from_mapping
from elsewhere.engine import Engine
from elsewhere.session import Destination

PAGE = b"<html><body>instagram, elsewhere</body></html>"


async def web_server() -> tuple[asyncio.Server, int, list[bytes]]:
    heads: list[bytes] = []

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        heads.append(head)
        writer.write(
            b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\nConnection: close\r\n\r\n" % len(PAGE) + PAGE
        )
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    return server, server.sockets[0].getsockname()[1], heads


def client_config(ss_port: int, users: dict[str, str] | None = None) -> dict:
    inbound: dict = {"type": "mixed", "port": 0}
    if users:
        inbound["users"] = users
    return {
        "inbounds": [inbound],
        "outbounds": [
            {
                "type": "shadowsocks",
                "tag": "proxy",
                "server": "127.0.0.1",
                "port": ss_port,
                "method": "aes-256-gcm",
                "password": "s3cret",
            },
            {"type": "block", "tag": "block"},
        ],
        "rules": [{"domain_suffix": ["blocked.test"], "outbound": "block"}],
    }


async def curl(*args: str) -> tuple[int, bytes]:
    proc = await asyncio.create_subprocess_exec(
        "curl",
        "-sS",
        "--max-time",
        "10",
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, _ = await proc.communicate()
    assert proc.returncode is not None
    return proc.returncode, out


@pytest.mark.parametrize(
    "proxy_args",
    [
        ["--socks5-hostname", "127.0.0.1:{port}"],
        ["--proxy", "http://127.0.0.1:{port}"],
        ["--proxy", "http://127.0.0.1:{port}", "--proxytunnel"],
        ["--proxy", "socks5h://bob:pw@127.0.0.1:{port}"],
        ["--proxy", "http://bob:pw@127.0.0.1:{port}"],
    ],
    ids=["socks5", "http-absolute-uri", "http-connect", "socks5-auth", "http-auth"],
)
async def test_curl_fetches_a_page_through_the_mixed_port(proxy_args: list[str]) -> None:
    web, web_port, heads = await web_server()
    users = {"bob": "pw"} if any("bob" in a for a in proxy_args) else None
    async with web, Engine(from_mapping(server_config("aes-256-gcm"))) as server:
        ss_port = server.inbounds[0].port  # type: ignore[attr-defined]
        async with Engine(from_mapping(client_config(ss_port, users))) as client:
            port = client.inbounds[0].port  # type: ignore[attr-defined]
            args = [a.format(port=port) for a in proxy_args]
            code, body = await curl(*args, f"http://localhost:{web_port}/page")
    assert code == 0
    assert body == PAGE
    assert heads[0].startswith(b"GET /page HTTP/1.1\r\n")
    assert b"proxy-" not in heads[0].lower()


async def test_wrong_proxy_password_is_refused() -> None:
    async with Engine(from_mapping(server_config("aes-256-gcm"))) as server:
        ss_port = server.inbounds[0].port  # type: ignore[attr-defined]
        async with Engine(from_mapping(client_config(ss_port, {"bob": "pw"}))) as client:
            port = client.inbounds[0].port  # type: ignore[attr-defined]
            code, _ = await curl(
                "--proxy", f"socks5h://bob:nope@127.0.0.1:{port}", "http://x.test/"
            )
            assert code != 0
            code, _ = await curl("-f", "--proxy", f"http://127.0.0.1:{port}", "http://x.test/")
            assert code == 22  # HTTP 407


async def test_blocked_domain_is_refused_by_the_router() -> None:
    async with Engine(from_mapping(client_config(1))) as client:
        port = client.inbounds[0].port  # type: ignore[attr-defined]
        code, _ = await curl("--socks5-hostname", f"127.0.0.1:{port}", "http://a.blocked.test/")
        assert code == 97  # curl: SOCKS proxy refused the connection
        code, _ = await curl(
            "-f", "-p", "--proxy", f"http://127.0.0.1:{port}", "http://www.blocked.test/"
        )
        assert code in (56, 22)  # CONNECT answered 403


async def test_socks5_udp_associate_reaches_a_udp_echo_through_shadowsocks() -> None:
    loop = asyncio.get_running_loop()

    class Echo(asyncio.DatagramProtocol):
        def connection_made(self, transport: asyncio.BaseTransport) -> None:
            self.transport = transport

        def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
            self.transport.sendto(data.upper(), addr)  # type: ignore[attr-defined]

    echo, _ = await loop.create_datagram_endpoint(Echo, local_addr=("127.0.0.1", 0))
    echo_port = echo.get_extra_info("sockname")[1]
    try:
        async with Engine(from_mapping(server_config("aes-256-gcm"))) as server:
            ss_port = server.inbounds[0].port  # type: ignore[attr-defined]
            async with Engine(from_mapping(client_config(ss_port))) as client:
                port = client.inbounds[0].port  # type: ignore[attr-defined]
                reader, writer = await asyncio.open_connection("127.0.0.1", port)
                hello = socks5.Socks5Client(
                    Destination("0.0.0.0", 0), command=socks5.CMD_UDP_ASSOCIATE
                )
                writer.write(hello.data_to_send())
                bound = None
                while bound is None:
                    hello.feed(await asyncio.wait_for(reader.read(512), 5))
                    while (event := hello.next_event()) is not None:
                        out = hello.data_to_send()
                        if out:
                            writer.write(out)
                        if isinstance(event, socks5.Connected):
                            bound = event.bound
                sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
                sock.setblocking(False)
                sock.connect((bound.host, bound.port))
                dest = Destination("localhost", echo_port)
                for word in (b"one", b"two", b"three"):
                    sock.send(socks5.encode_udp(dest, word))
                    data = await asyncio.wait_for(loop.sock_recv(sock, 2048), 5)
                    source, payload = socks5.decode_udp(data)
                    assert payload == word.upper()
                    assert source.port == echo_port
                sock.close()
                writer.close()
    finally:
        echo.close()
