"""`elsewhere demo`: the whole chain on this machine with the embedded defaults — a server with
a fresh key store, a client with that key, a small web site — then a page fetched through the
client's SOCKS5 port, so a person sees it work before touching a real server."""

from __future__ import annotations

import asyncio
import sys
import tempfile
from pathlib import Path
from typing import Any

from elsewhere.codecs import socks5
from elsewhere.control import roles
from elsewhere.control.qr import qr_text
from elsewhere.engine import Engine
from elsewhere.session import Destination

PAGE = b"<!doctype html><title>elsewhere</title><p>Hello from elsewhere.</p>\n"


async def _site() -> asyncio.Server:
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            await reader.readuntil(b"\r\n\r\n")
            writer.write(
                b"HTTP/1.1 200 OK\r\nContent-Type: text/html\r\nContent-Length: %d\r\n"
                b"Connection: close\r\n\r\n" % len(PAGE) + PAGE
            )
            await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    return await asyncio.start_server(handle, "127.0.0.1", 0)


async def fetch_via_socks5(proxy_port: int, host: str, port: int, path: str = "/") -> bytes:
    """GET a page through a SOCKS5 proxy, the way a browser set to that proxy would."""
    reader, writer = await asyncio.open_connection("127.0.0.1", proxy_port)
    try:
        client = socks5.Socks5Client(Destination(host, port))
        writer.write(client.data_to_send())
        connected = False
        while not connected:
            data = await reader.read(512)
            if not data:
                raise ConnectionError("proxy closed the connection")
            client.feed(data)
            while (event := client.next_event()) is not None:
                if out := client.data_to_send():
                    writer.write(out)
                if isinstance(event, socks5.Refused):
                    raise ConnectionError(f"proxy refused: reply {event.reply}")
                connected = connected or isinstance(event, socks5.Connected)
        writer.write(f"GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n".encode())
        return client.trailing() + await reader.read(-1)
    finally:
        writer.close()


async def demo(exit_after: bool = False) -> int:
    out = sys.stdout
    with tempfile.TemporaryDirectory(prefix="elsewhere-demo-") as tmp:
        store = roles.open_store(Path(tmp))
        site = await _site()
        stop = asyncio.Event()
        server_ready: asyncio.Future[Engine] = asyncio.get_running_loop().create_future()
        try:
            settings, (record,) = roles.prepare_server(
                store, 0, "127.0.0.1", "127.0.0.1", ports=dict.fromkeys(roles.port_settings(), 0)
            )
            settings.allow_private = True  # the demo's web site lives on loopback
            server_task = asyncio.create_task(
                roles.run_server(store, settings, server_ready.set_result, stop)
            )
            waiting: set[asyncio.Future[Any]] = {server_ready, server_task}
            await asyncio.wait(waiting, return_when=asyncio.FIRST_COMPLETED)
            if not server_ready.done():
                await server_task  # it failed to start: its error is the demo's
            server = server_ready.result()
            port = server.inbounds[0].port  # type: ignore[attr-defined]
            store.set_setting("port", str(port))
            key = roles.access_key(store, record)
            link = roles.share_link(store, record)
            print(f"server: {server.inbounds[0].describe()}", file=out)
            print(f"access key: {link}", file=out)
            print(qr_text(link), file=out)
            client = Engine(roles.client_config(key, "127.0.0.1", 0, []))
            async with client:
                proxy = client.inbounds[0].port  # type: ignore[attr-defined]
                site_port = site.sockets[0].getsockname()[1]
                print(f"client: local proxy {client.inbounds[0].describe()}", file=out)
                url = f"http://localhost:{site_port}/"
                print(f"fetching {url} through socks5://127.0.0.1:{proxy} ...", file=out)
                response = await asyncio.wait_for(
                    fetch_via_socks5(proxy, "localhost", site_port), 10
                )
                status = response.split(b"\r\n", 1)[0].decode(errors="replace")
                ok = status.startswith("HTTP/1.1 200") and response.endswith(PAGE)
                print(
                    f"got {status}: {PAGE.decode().strip()}" if ok else f"failed: {status}",
                    file=out,
                )
                up, down = client.traffic()
                print(
                    f"bytes through the tunnel: up {up}, down {down}",
                    file=out,
                )
                if not ok:
                    return 1
                if not exit_after:
                    print(
                        f"try it: curl --socks5-hostname 127.0.0.1:{proxy} {url}"
                        "   (Ctrl-C to stop)",
                        file=out,
                        flush=True,
                    )
                    await asyncio.Event().wait()
            return 0
        finally:
            stop.set()
            if server_ready.done():
                await server_task
            site.close()
            store.close()
