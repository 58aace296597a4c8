"""The XHTTP server on the TLS port, driven by requests written here by hand in the shapes of
Xray-core's client (splithttp dialer.go/client.go/config.go): HTTP/1.1 bytes as Go's net/http
writes them, HTTP/2 through the h2 library's frames. VLESS inside, a TCP echo behind. Hostile
input (wrong seq, gaps, replays, oversize bodies, downloads that never come, thousands of
half-open sessions) and strangers (h2 browsers, other paths and hosts: the decoy)."""

from __future__ import annotations

import asyncio
import gc
import os
import ssl
import weakref
from pathlib import Path
from typing import Any

import h2.config
import h2.connection
import h2.events
import pytest
from test_tls_inbound import UUID, echo_server
from tls_helpers import make_cert

from elsewhere.codecs import vless
from elsewhere.config import from_mapping
from elsewhere.engine import Engine
from elsewhere.session import Destination
from elsewhere.web.decoy import DecoySite
from elsewhere.web.decoy_content import default_content

PATH = "/xh-secret/"
PAD = "X" * 300
SID = "6d1f8a2e-7d55-4a4e-9c59-1b7a6c1f0e21"


def config(tmp: Path, **xhttp: Any) -> dict[str, Any]:
    cert, key = make_cert(tmp)
    return {
        "inbounds": [
            {
                "type": "tls",
                "listen": "127.0.0.1",
                "port": 0,
                "cert": str(cert),
                "key": str(key),
                "vless": [{"id": "vera", "uuid": UUID}],
                "websocket": {"path": "/ws-secret"},
                "xhttp": {"path": PATH, **xhttp},
            }
        ],
        "outbounds": [{"type": "direct", "private": "allow"}],
        "timeouts": {"idle": 10},
    }


def tls(alpn: str) -> ssl.SSLContext:
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    ctx.set_alpn_protocols([alpn])
    return ctx


class H1:
    """An HTTP/1.1 connection as Go's net/http uses one: requests written out whole,
    responses read in turn."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    @classmethod
    async def open(cls, port: int) -> H1:
        r, w = await asyncio.open_connection(
            "127.0.0.1", port, ssl=tls("http/1.1"), server_hostname="localhost"
        )
        return cls(r, w)

    def send(self, head: str, body: bytes = b"") -> None:
        self.writer.write(head.encode() + body)

    async def response(self) -> tuple[int, dict[str, str], bytes]:
        head = await asyncio.wait_for(self.reader.readuntil(b"\r\n\r\n"), 5)
        lines = head.decode().split("\r\n")
        status = int(lines[0].split()[1])
        headers = {}
        for line in lines[1:]:
            if line:
                k, v = line.split(":", 1)
                headers[k.strip().lower()] = v.strip()
        body = b""
        if "content-length" in headers:
            body = await self.reader.readexactly(int(headers["content-length"]))
        return status, headers, body

    async def chunks(self, size: int) -> bytes:
        """At least `size` bytes of a chunked body."""
        out = b""
        while len(out) < size:
            line = await asyncio.wait_for(self.reader.readuntil(b"\r\n"), 5)
            n = int(line.strip(), 16)
            if n == 0:
                break
            out += await self.reader.readexactly(n)
            await self.reader.readexactly(2)
        return out

    def close(self) -> None:
        self.writer.close()


def get(sid: str = SID, host: str = "localhost") -> str:
    return (
        f"GET {PATH}{sid} HTTP/1.1\r\nHost: {host}\r\nUser-Agent: Mozilla/5.0\r\n"
        f"Referer: https://{host}{PATH}?x_padding={PAD}\r\nAccept-Encoding: gzip\r\n\r\n"
    )


def post(seq: int, body: bytes, sid: str = SID, length: int | None = None) -> str:
    n = len(body) if length is None else length
    return (
        f"POST {PATH}{sid}/{seq} HTTP/1.1\r\nHost: localhost\r\nUser-Agent: Mozilla/5.0\r\n"
        f"Content-Length: {n}\r\nReferer: https://localhost{PATH}?x_padding={PAD}\r\n\r\n"
    )


def vless_head(port: int) -> bytes:
    return vless.encode_request(
        vless.parse_uuid(UUID), vless.CMD_TCP, Destination("127.0.0.1", port)
    )


async def test_packet_up_over_http1_with_posts_out_of_order(tmp_path: Path) -> None:
    echo, echo_port = await echo_server()
    async with echo, Engine(from_mapping(config(tmp_path))) as srv:
        port = srv.inbounds[0].port  # type: ignore[attr-defined]
        down, up = await H1.open(port), await H1.open(port)
        down.send(get())
        status, headers, _ = await down.response()
        assert status == 200
        assert headers["content-type"] == "text/event-stream"
        assert headers["x-accel-buffering"] == "no"
        assert headers["cache-control"] == "no-store"
        assert headers["transfer-encoding"] == "chunked"
        assert 100 <= len(headers["x-padding"]) <= 1000
        payload = os.urandom(300_000)
        parts = [
            vless_head(echo_port) + payload[:100_000],
            payload[100_000:200_000],
            payload[200_000:],
        ]
        for seq in (2, 0, 1):  # the server reorders by seq
            up.send(post(seq, parts[seq]), parts[seq])
            status, headers, _ = await up.response()
            assert status == 200
            assert 100 <= len(headers["x-padding"]) <= 1000
        answer = await down.chunks(2 + len(payload))
        assert answer[:2] == b"\x00\x00"  # VLESS response header
        assert answer[2:] == payload
        down.close()
        up.close()


async def test_a_replayed_post_is_not_delivered_twice(tmp_path: Path) -> None:
    echo, echo_port = await echo_server()
    async with echo, Engine(from_mapping(config(tmp_path))) as srv:
        port = srv.inbounds[0].port  # type: ignore[attr-defined]
        down, up = await H1.open(port), await H1.open(port)
        down.send(get())
        assert (await down.response())[0] == 200
        first = vless_head(echo_port) + b"one"
        for seq, body in ((0, first), (0, first), (1, b"two"), (0, b"replay")):
            up.send(post(seq, body), body)
            assert (await up.response())[0] == 200
        assert await down.chunks(8) == b"\x00\x00onetwo"
        up.send(post(2, b"three"), b"three")
        assert (await up.response())[0] == 200
        assert await down.chunks(5) == b"three"  # nothing of the replays came between


async def test_a_gap_wider_than_the_buffer_tears_the_session_down(tmp_path: Path) -> None:
    echo, _echo_port = await echo_server()
    async with echo, Engine(from_mapping(config(tmp_path))) as srv:
        port = srv.inbounds[0].port  # type: ignore[attr-defined]
        down, up = await H1.open(port), await H1.open(port)
        down.send(get())
        assert (await down.response())[0] == 200
        statuses = []
        for seq in range(1, 32):  # seq 0 never comes; Xray buffers 30
            up.send(post(seq, b"x"), b"x")
            statuses.append((await up.response())[0])
        assert statuses[:30] == [200] * 30
        assert statuses[30] == 500
        # the download ends: the last chunk, then nothing
        assert await down.chunks(1) == b""
        assert srv.inbounds[0].web.server.sessions == {}  # type: ignore[attr-defined]


async def test_an_oversize_post_is_a_413(tmp_path: Path) -> None:
    async with Engine(from_mapping(config(tmp_path))) as srv:
        port = srv.inbounds[0].port  # type: ignore[attr-defined]
        up = await H1.open(port)
        up.send(post(0, b"", length=1_000_001))
        status, headers, _ = await up.response()
        assert status == 413
        assert 100 <= len(headers["x-padding"]) <= 1000
        # and one that lies about its length (chunked, no length) is cut at the cap
        up2 = await H1.open(port)
        up2.send(
            f"POST {PATH}{SID}/0 HTTP/1.1\r\nHost: localhost\r\nTransfer-Encoding: chunked\r\n"
            f"Referer: https://localhost{PATH}?x_padding={PAD}\r\n\r\n"
        )
        chunk = b"X" * 200_000
        for _ in range(6):
            up2.writer.write(b"30d40\r\n" + chunk + b"\r\n")
        assert (await up2.response())[0] == 413


@pytest.mark.parametrize(
    ("head", "status"),
    [
        (f"GET {PATH}{SID} HTTP/1.1\r\nHost: localhost\r\n\r\n", 400),  # no padding
        (
            f"GET {PATH}{SID} HTTP/1.1\r\nHost: localhost\r\n"
            f"Referer: https://localhost{PATH}?x_padding=XX\r\n\r\n",
            400,
        ),
        (
            f"POST {PATH}{SID}/nope HTTP/1.1\r\nHost: localhost\r\nContent-Length: 0\r\n"
            f"Referer: https://localhost{PATH}?x_padding={PAD}\r\n\r\n",
            500,
        ),
    ],
)
async def test_broken_requests_on_the_path_get_xray_s_answers(
    tmp_path: Path, head: str, status: int
) -> None:
    async with Engine(from_mapping(config(tmp_path))) as srv:
        conn = await H1.open(srv.inbounds[0].port)  # type: ignore[attr-defined]
        conn.send(head)
        assert (await conn.response())[0] == status


async def test_a_mode_the_server_does_not_allow_is_a_400(tmp_path: Path) -> None:
    async with Engine(from_mapping(config(tmp_path, mode="stream-one"))) as srv:
        conn = await H1.open(srv.inbounds[0].port)  # type: ignore[attr-defined]
        conn.send(post(0, b"x"), b"x")
        assert (await conn.response())[0] == 400


async def test_a_session_whose_download_never_comes_is_reaped(tmp_path: Path) -> None:
    async with Engine(from_mapping(config(tmp_path, session_timeout=0.5))) as srv:
        web = srv.inbounds[0].web  # type: ignore[attr-defined]
        conn = await H1.open(srv.inbounds[0].port)  # type: ignore[attr-defined]
        conn.send(post(0, b"x"), b"x")
        assert (await conn.response())[0] == 200
        assert list(web.server.sessions) == [SID]
        gone = asyncio.Event()
        web.server.on_reaped = gone.set
        await asyncio.wait_for(gone.wait(), 5)
        assert web.server.sessions == {}


async def test_thousands_of_half_open_sessions_leave_nothing_behind(tmp_path: Path) -> None:
    count = 2000
    async with Engine(from_mapping(config(tmp_path, session_timeout=1.0))) as srv:
        web = srv.inbounds[0].web  # type: ignore[attr-defined]
        port = srv.inbounds[0].port  # type: ignore[attr-defined]
        conns = [await H1.open(port) for _ in range(4)]
        for i in range(count):  # pipelined, as Xray's HTTP/1.1 uploads are
            conns[i % 4].send(post(0, b"abc", sid=f"s{i}"), b"abc")
        for i in range(count):
            assert (await conns[i % 4].response())[0] == 200
        alive = [weakref.ref(stream) for stream in web.server.sessions.values()]
        assert len(alive) + web.server.reaped == count
        reaped = asyncio.Event()
        web.server.on_reaped = lambda: reaped.set() if not web.server.sessions else None
        if web.server.sessions:  # a loaded machine may have reaped them all by now
            await asyncio.wait_for(reaped.wait(), 30)
        assert web.server.reaped == count
        gc.collect()
        assert [ref for ref in alive if ref() is not None] == []  # nothing holds a session
        assert srv.stats.active == 0
        for c in conns:
            c.close()


async def test_strangers_off_the_path_get_the_decoy_over_http1(tmp_path: Path) -> None:
    async with Engine(from_mapping(config(tmp_path))) as srv:
        conn = await H1.open(srv.inbounds[0].port)  # type: ignore[attr-defined]
        conn.send("GET / HTTP/1.1\r\nHost: localhost\r\n\r\n")
        status, headers, body = await conn.response()
        assert status == 200 and headers["server"].startswith("nginx")
        assert body == default_content().files["/index.html"].body


class H2:
    """An HTTP/2 client as Go's http2.Transport: one connection, a stream per request."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer
        self.conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
        self.conn.initiate_connection()
        self.flush()
        self.events: dict[int, list[Any]] = {}

    @classmethod
    async def open(cls, port: int) -> H2:
        r, w = await asyncio.open_connection(
            "127.0.0.1", port, ssl=tls("h2"), server_hostname="localhost"
        )
        assert w.get_extra_info("ssl_object").selected_alpn_protocol() == "h2"
        return cls(r, w)

    def flush(self) -> None:
        self.writer.write(self.conn.data_to_send())

    def request(self, method: str, path: str, body: bytes | None = None, **extra: str) -> int:
        sid = self.conn.get_next_available_stream_id()
        headers = [
            (":method", method),
            (":authority", extra.pop("authority", "localhost")),
            (":scheme", "https"),
            (":path", path),
            ("referer", f"https://localhost{PATH}?x_padding={PAD}"),
            *extra.items(),
        ]
        self.conn.send_headers(sid, headers, end_stream=body is None)
        if body is not None:
            self.conn.send_data(sid, body, end_stream=True)
        self.flush()
        self.events[sid] = []
        return sid

    async def until(self, sid: int, done: Any) -> list[Any]:
        while not done(self.events[sid]):
            data = await asyncio.wait_for(self.reader.read(65536), 5)
            assert data, "connection closed"
            for event in self.conn.receive_data(data):
                if isinstance(event, h2.events.DataReceived):
                    self.conn.acknowledge_received_data(
                        event.flow_controlled_length, event.stream_id
                    )
                sid_of = getattr(event, "stream_id", None)
                if sid_of in self.events:
                    self.events[sid_of].append(event)
            self.flush()
        return self.events[sid]

    async def response(self, sid: int) -> tuple[int, dict[str, str], bytes]:
        events = await self.until(
            sid, lambda e: any(isinstance(x, h2.events.StreamEnded) for x in e)
        )
        head = next(e for e in events if isinstance(e, h2.events.ResponseReceived))
        headers = {k.decode(): v.decode() for k, v in head.headers}
        body = b"".join(e.data for e in events if isinstance(e, h2.events.DataReceived))
        return int(headers[":status"]), headers, body

    async def data(self, sid: int, size: int) -> bytes:
        def enough(events: list[Any]) -> bool:
            got = sum(len(e.data) for e in events if isinstance(e, h2.events.DataReceived))
            return got >= size or any(isinstance(e, h2.events.StreamReset) for e in events)

        events = await self.until(sid, enough)
        return b"".join(e.data for e in events if isinstance(e, h2.events.DataReceived))


async def test_packet_up_over_h2(tmp_path: Path) -> None:
    echo, echo_port = await echo_server()
    async with echo, Engine(from_mapping(config(tmp_path))) as srv:
        client = await H2.open(srv.inbounds[0].port)  # type: ignore[attr-defined]
        down = client.request("GET", PATH + SID)
        payload = os.urandom(50_000)
        for seq, body in enumerate((vless_head(echo_port) + payload[:10], payload[10:])):
            status, _headers, _ = await client.response(
                client.request("POST", f"{PATH}{SID}/{seq}", body)
            )
            assert status == 200
        events = await client.until(down, lambda e: e)
        head = next(e for e in events if isinstance(e, h2.events.ResponseReceived))
        fields = dict(head.headers)
        assert fields[b":status"] == b"200"
        assert fields[b"content-type"] == b"text/event-stream"
        answer = await client.data(down, 2 + len(payload))
        assert answer == b"\x00\x00" + payload


async def test_stream_one_over_h2(tmp_path: Path) -> None:
    echo, echo_port = await echo_server()
    async with echo, Engine(from_mapping(config(tmp_path))) as srv:
        client = await H2.open(srv.inbounds[0].port)  # type: ignore[attr-defined]
        sid = client.conn.get_next_available_stream_id()
        client.conn.send_headers(
            sid,
            [
                (":method", "POST"),
                (":authority", "localhost"),
                (":scheme", "https"),
                (":path", PATH),
                ("referer", f"https://localhost{PATH}?x_padding={PAD}"),
                ("content-type", "application/grpc"),
            ],
        )
        client.conn.send_data(sid, vless_head(echo_port) + b"hello")
        client.flush()
        client.events[sid] = []
        assert await client.data(sid, 7) == b"\x00\x00hello"


async def test_vless_over_tls_whose_hello_offered_h2_is_served_not_taken_for_http2(
    tmp_path: Path,
) -> None:
    """v2ray's and Xray's TLS clients offer h2 and http/1.1 whatever they carry; with XHTTP on
    the port the server picks h2, and the VLESS request that follows must still be served."""
    echo, echo_port = await echo_server()
    async with echo, Engine(from_mapping(config(tmp_path))) as srv:
        ctx = tls("h2")
        ctx.set_alpn_protocols(["h2", "http/1.1"])
        reader, writer = await asyncio.open_connection(
            "127.0.0.1", srv.inbounds[0].port, ssl=ctx  # type: ignore[attr-defined]
        )
        try:
            assert writer.get_extra_info("ssl_object").selected_alpn_protocol() == "h2"
            payload = os.urandom(100_000)
            writer.write(vless_head(echo_port) + payload)
            answer = await asyncio.wait_for(reader.readexactly(2 + len(payload)), 10)
            assert answer == b"\x00\x00" + payload
        finally:
            writer.close()
        assert srv.stats.probes == 0


async def test_h2_strangers_get_the_decoy_as_nginx_serves_it(tmp_path: Path) -> None:
    async with Engine(from_mapping(config(tmp_path))) as srv:
        client = await H2.open(srv.inbounds[0].port)  # type: ignore[attr-defined]
        for path, expected in (("/", 200), ("/nothing-here", 404)):
            status, headers, body = await client.response(client.request("GET", path))
            site = DecoySite(default_content(), now=0.0)
            site.feed(f"GET {path} HTTP/1.1\r\nHost: localhost\r\n\r\n".encode(), 0.0)
            h1 = site.data_to_send()
            assert status == expected
            assert headers["server"].startswith("nginx")
            assert "connection" not in headers
            assert h1.endswith(body)
        # a POST to the site: nginx's 405, also over h2
        status, _, _ = await client.response(client.request("POST", "/", b"x=1"))
        assert status == 405
        assert srv.stats.probes >= 3


async def test_another_host_on_the_path_gets_the_decoy(tmp_path: Path) -> None:
    async with Engine(from_mapping(config(tmp_path, host="cdn.example"))) as srv:
        client = await H2.open(srv.inbounds[0].port)  # type: ignore[attr-defined]
        status, headers, _ = await client.response(
            client.request("GET", PATH + SID, authority="other.example")
        )
        assert status == 404 and headers["server"].startswith("nginx")
        assert srv.inbounds[0].web.server.sessions == {}  # type: ignore[attr-defined]
