"""HTTP proxy heads (RFC 9110, RFC 9112): CONNECT, absolute-form rewriting, Basic proxy auth,
limits, fragmentation, and real curl."""

from __future__ import annotations

import asyncio
import base64
import os

import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from elsewhere.codecs.http_proxy import (
    CONNECT_ESTABLISHED,
    MAX_HEAD,
    Connect,
    Event,
    Failed,
    Forward,
    HttpProxyServer,
    error_response,
)
from elsewhere.session import Destination

USERS = {"alice": "secret", "bob": "hunter2"}


def basic(credentials: str) -> bytes:
    return b"Proxy-Authorization: Basic " + base64.b64encode(credentials.encode()) + b"\r\n"


def parse(head: bytes, users: dict[str, str] | None = None) -> Event:
    server = HttpProxyServer(users)
    server.feed(head)
    event = server.next_event()
    assert event is not None
    assert server.next_event() is None
    return event


def status_of(event: Event) -> int:
    assert isinstance(event, Failed), event
    return int(event.response.split(b" ", 2)[1])


def forwarded(head: bytes) -> bytes:
    event = parse(head)
    assert isinstance(event, Forward), event
    return event.head


# CONNECT (RFC 9110 §9.3.6)


@pytest.mark.parametrize(
    ("target", "destination"),
    [
        (b"example.com:443", Destination("example.com", 443)),
        (b"93.184.216.34:8443", Destination("93.184.216.34", 8443)),
        (b"[2001:db8::1]:443", Destination("2001:db8::1", 443)),
        (b"[2001:DB8:0:0::1]:443", Destination("2001:db8::1", 443)),
    ],
)
def test_connect_names_host_and_port(target: bytes, destination: Destination) -> None:
    event = parse(b"CONNECT " + target + b" HTTP/1.1\r\nHost: " + target + b"\r\n\r\n")
    assert event == Connect(destination)


def test_tunnel_data_sent_with_the_connect_is_kept() -> None:
    server = HttpProxyServer()
    server.feed(b"CONNECT example.com:443 HTTP/1.1\r\n\r\n\x16\x03\x01clienthello")
    assert server.next_event() == Connect(Destination("example.com", 443))
    server.feed(b" and more")
    assert server.trailing() == b"\x16\x03\x01clienthello and more"
    assert server.trailing() == b""


@pytest.mark.parametrize(
    "target",
    [
        b"example.com",  # no port
        b"example.com:",
        b"example.com:0",
        b"example.com:65536",
        b"example.com:0000443",
        b"[::1]",
        b"[not-ipv6]:443",
        b"::1:443",  # IPv6 without brackets
        b"user:pass@example.com:443",
        b"exa%6dple.com:443",
        b"/path",
        b"http://example.com:443/",
    ],
)
def test_connect_to_an_invalid_authority_is_400(target: bytes) -> None:
    assert status_of(parse(b"CONNECT " + target + b" HTTP/1.1\r\n\r\n")) == 400


# Absolute-form requests, rewritten for the origin (RFC 9112 §3.2, RFC 9110 §7.6.1)


def test_absolute_form_becomes_origin_form_without_hop_by_hop_fields() -> None:
    head = (
        b"GET http://example.com:8080/a/b?c=d HTTP/1.1\r\n"
        b"Host: wrong.example\r\n"
        b"User-Agent: test\r\n"
        b"Proxy-Connection: keep-alive\r\n"
        b"Proxy-Authorization: Basic YTpi\r\n"
        b"Connection: keep-alive, X-Hop\r\n"
        b"X-Hop: 1\r\n"
        b"Keep-Alive: timeout=5\r\n"
        b"TE: trailers\r\n"
        b"Upgrade: h2c\r\n"
        b"Accept: */*\r\n"
        b"\r\n"
    )
    event = parse(head)
    assert event == Forward(
        Destination("example.com", 8080),
        b"GET /a/b?c=d HTTP/1.1\r\n"
        b"Host: example.com:8080\r\n"
        b"User-Agent: test\r\n"
        b"Accept: */*\r\n"
        b"Connection: close\r\n"
        b"\r\n",
    )


def test_missing_host_is_added_first() -> None:
    assert forwarded(b"GET http://example.com/ HTTP/1.0\r\nAccept: */*\r\n\r\n") == (
        b"GET / HTTP/1.0\r\nHost: example.com\r\nAccept: */*\r\nConnection: close\r\n\r\n"
    )


def test_header_names_are_matched_case_insensitively_and_kept_as_sent() -> None:
    head = forwarded(
        b"GET http://a.test/ HTTP/1.1\r\nhOsT: a.test\r\nPROXY-CONNECTION: close\r\n"
        b"x-Custom:  spaced value \r\n\r\n"
    )
    assert head == (
        b"GET / HTTP/1.1\r\nHost: a.test\r\nx-Custom:  spaced value \r\nConnection: close\r\n\r\n"
    )


@pytest.mark.parametrize(
    ("method", "target", "origin"),
    [
        (b"GET", b"http://a.test", b"/"),
        (b"GET", b"http://a.test?q=1", b"/?q=1"),
        (b"OPTIONS", b"http://a.test", b"*"),
        (b"OPTIONS", b"http://a.test/x", b"/x"),
        (b"DELETE", b"HTTP://a.test/%7Euser;p=1?x=a/b:c@d", b"/%7Euser;p=1?x=a/b:c@d"),
    ],
)
def test_request_target_in_origin_form(method: bytes, target: bytes, origin: bytes) -> None:
    head = forwarded(method + b" " + target + b" HTTP/1.1\r\nHost: a.test\r\n\r\n")
    assert head.startswith(method + b" " + origin + b" HTTP/1.1\r\nHost: a.test\r\n")


def test_ipv6_absolute_uri_keeps_brackets_in_host() -> None:
    event = parse(b"GET http://[::1]:8080/ HTTP/1.1\r\n\r\n")
    assert isinstance(event, Forward)
    assert event.destination == Destination("::1", 8080)
    assert b"\r\nHost: [::1]:8080\r\n" in event.head


def test_websocket_upgrade_survives_the_rewrite() -> None:
    head = forwarded(
        b"GET http://ws.test/chat HTTP/1.1\r\nHost: ws.test\r\nUpgrade: websocket\r\n"
        b"Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
        b"Sec-WebSocket-Version: 13\r\n\r\n"
    )
    assert head == (
        b"GET /chat HTTP/1.1\r\nHost: ws.test\r\nUpgrade: websocket\r\n"
        b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n"
        b"Connection: Upgrade\r\n\r\n"
    )


def test_connection_option_cannot_strip_the_body_framing() -> None:
    head = forwarded(
        b"POST http://a.test/ HTTP/1.1\r\nHost: a.test\r\nConnection: Content-Length, Host\r\n"
        b"Content-Length: 5\r\n\r\n"
    )
    assert head == (
        b"POST / HTTP/1.1\r\nHost: a.test\r\nContent-Length: 5\r\nConnection: close\r\n\r\n"
    )


def test_minor_versions_above_one_are_handled_as_http_1_1() -> None:
    assert forwarded(b"GET http://a.test/ HTTP/1.7\r\n\r\n").startswith(b"GET / HTTP/1.1\r\n")


def test_request_body_follows_the_head_in_trailing() -> None:
    server = HttpProxyServer()
    server.feed(b"POST http://a.test/ HTTP/1.1\r\nContent-Length: 11\r\n\r\nhello")
    event = server.next_event()
    assert isinstance(event, Forward)
    server.feed(b" world")
    assert server.trailing() == b"hello world"


@pytest.mark.parametrize(
    "target",
    [
        b"/index.html",  # origin-form: this is a proxy, not the origin
        b"*",
        b"https://a.test/",  # must be tunnelled with CONNECT
        b"ftp://a.test/file",
        b"http://user:pass@a.test/",
        b"http://a.test/#fragment",
        b"http:///path",
        b"http://a.test:99999/",
        b"a.test:80",
    ],
)
def test_targets_a_proxy_cannot_forward_are_400(target: bytes) -> None:
    assert status_of(parse(b"GET " + target + b" HTTP/1.1\r\n\r\n")) == 400


# Malformed heads (RFC 9112 §2, §3, §5)


@pytest.mark.parametrize(
    "head",
    [
        b"GET http://a.test/ HTTP/1.1\r\nX-A: 1\r\n folded\r\n\r\n",  # obs-fold
        b"GET http://a.test/ HTTP/1.1\r\nX-A : 1\r\n\r\n",  # space before colon
        b"GET http://a.test/ HTTP/1.1\r\nX-A: a\nb\r\n\r\n",  # bare LF
        b"GET http://a.test/ HTTP/1.1\r\nX-A: a\rb\r\n\r\n",  # bare CR
        b"GET http://a.test/ HTTP/1.1\r\nX-A: a\x00b\r\n\r\n",  # NUL
        b"GET http://a.test/ HTTP/1.1\r\nX(A): 1\r\n\r\n",  # not a token
        b"GET http://a.test/ HTTP/1.1\r\n: empty name\r\n\r\n",
        b"GET  http://a.test/ HTTP/1.1\r\n\r\n",  # two spaces
        b"GET http://a.test/ http/1.1\r\n\r\n",
        b"GET http://a.test/\r\n\r\n",  # HTTP/0.9
        b"G\xc3\x89T http://a.test/ HTTP/1.1\r\n\r\n",
        b"GET http://a.test/\xc3\xa9 HTTP/1.1\r\n\r\n",
        b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03\r\n\r\n",
        b"GET http://a.test/ HTTP/1.1\r\nHost: a.test\r\nHost: b.test\r\n\r\n",
        b"POST http://a.test/ HTTP/1.1\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n",
        b"POST http://a.test/ HTTP/1.1\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n",
        b"POST http://a.test/ HTTP/1.1\r\nContent-Length: -5\r\n\r\n",
        b"POST http://a.test/ HTTP/1.1\r\nTransfer-Encoding: chunked, gzip\r\n\r\n",
        b"POST http://a.test/ HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n",
    ],
)
def test_malformed_heads_are_400(head: bytes) -> None:
    assert status_of(parse(head)) == 400


def test_identical_content_lengths_are_one_length() -> None:
    head = b"POST http://a.test/ HTTP/1.1\r\nContent-Length: 5\r\nContent-Length: 5, 5\r\n\r\n"
    assert isinstance(parse(head), Forward)


def test_chunked_as_the_final_coding_is_forwarded() -> None:
    head = b"POST http://a.test/ HTTP/1.1\r\nTransfer-Encoding: gzip, Chunked\r\n\r\n"
    assert b"\r\nTransfer-Encoding: gzip, Chunked\r\n" in forwarded(head)


@pytest.mark.parametrize("version", [b"HTTP/2.0", b"HTTP/0.9", b"HTTP/3.0"])
def test_other_major_versions_are_505(version: bytes) -> None:
    assert status_of(parse(b"GET http://a.test/ " + version + b"\r\n\r\n")) == 505


def test_empty_lines_before_the_request_line_are_ignored() -> None:
    assert parse(b"\r\n\r\nCONNECT a.test:443 HTTP/1.1\r\n\r\n") == Connect(
        Destination("a.test", 443)
    )


def test_failure_responses_do_not_echo_the_request() -> None:
    event = parse(b"GET https://<script>alert(1)</script>/ HTTP/1.1\r\n\r\n")
    assert isinstance(event, Failed)
    assert b"script" not in event.response


def test_nothing_more_happens_after_a_failure() -> None:
    server = HttpProxyServer()
    server.feed(b"BAD\r\n\r\nCONNECT a.test:443 HTTP/1.1\r\n\r\n")
    assert isinstance(server.next_event(), Failed)
    server.feed(b"CONNECT a.test:443 HTTP/1.1\r\n\r\n")
    assert server.next_event() is None
    assert server.trailing() == b""


# Size limit (RFC 6585 §5)


def head_of_size(size: int) -> bytes:
    start, end = b"GET http://a.test/ HTTP/1.1\r\nX-Fill: ", b"\r\n\r\n"
    return start + b"a" * (size - len(start) - len(end)) + end


@pytest.mark.parametrize("chunk", [MAX_HEAD + 1, 1000, 7])
def test_head_of_64_kib_passes_and_one_byte_more_is_431(chunk: int) -> None:
    for size, fits in ((MAX_HEAD, True), (MAX_HEAD + 1, False)):
        data = head_of_size(size)
        server = HttpProxyServer()
        for i in range(0, len(data), chunk):
            server.feed(data[i : i + chunk])
        event = server.next_event()
        assert event is not None
        assert isinstance(event, Forward) if fits else status_of(event) == 431


def test_endless_head_is_431_before_it_ends() -> None:
    server = HttpProxyServer()
    server.feed(b"GET http://a.test/ HTTP/1.1\r\nX-Fill: " + b"a" * MAX_HEAD)
    event = server.next_event()
    assert event is not None and status_of(event) == 431


# Proxy authentication (RFC 9110 §11.7, RFC 7617)


@pytest.mark.parametrize(
    "authorization",
    [
        b"",
        basic("alice:wrong"),
        basic("eve:secret"),
        basic("alice"),
        basic("alice:secret") + basic("alice:secret"),
        b"Proxy-Authorization: Bearer abc\r\n",
        b"Proxy-Authorization: Basic !!!notbase64\r\n",
        b"Authorization: Basic " + base64.b64encode(b"alice:secret") + b"\r\n",
    ],
)
def test_missing_or_wrong_credentials_are_407_with_a_basic_challenge(authorization: bytes) -> None:
    for request_line in (b"CONNECT a.test:443 HTTP/1.1", b"GET http://a.test/ HTTP/1.1"):
        event = parse(request_line + b"\r\n" + authorization + b"\r\n", USERS)
        assert status_of(event) == 407
        assert isinstance(event, Failed)
        assert b'\r\nProxy-Authenticate: Basic realm="elsewhere"\r\n' in event.response


def test_right_credentials_name_the_user_and_stay_with_the_proxy() -> None:
    event = parse(b"CONNECT a.test:443 HTTP/1.1\r\n" + basic("bob:hunter2") + b"\r\n", USERS)
    assert event == Connect(Destination("a.test", 443), "bob")
    auth = b"Proxy-Authorization: basic " + base64.b64encode(b"alice:secret") + b"\r\n"
    event = parse(b"GET http://a.test/ HTTP/1.1\r\n" + auth + b"\r\n", USERS)
    assert event == Forward(
        Destination("a.test", 80),
        b"GET / HTTP/1.1\r\nHost: a.test\r\nConnection: close\r\n\r\n",
        "alice",
    )


def test_passwords_may_contain_colons() -> None:
    event = parse(
        b"CONNECT a.test:443 HTTP/1.1\r\n" + basic("carol:a:b") + b"\r\n", {"carol": "a:b"}
    )
    assert event == Connect(Destination("a.test", 443), "carol")


# Responses


def test_error_response_is_complete_and_closes() -> None:
    assert error_response(400) == (
        b"HTTP/1.1 400 Bad Request\r\nContent-Type: text/plain; charset=utf-8\r\n"
        b"Content-Length: 16\r\nConnection: close\r\n\r\n400 Bad Request\n"
    )
    assert error_response(502, "Upstream Unreachable").startswith(
        b"HTTP/1.1 502 Upstream Unreachable\r\n"
    )


# Fragmentation


HEADS = [
    b"CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n\r\n\x16\x03\x01tls",
    b"\r\nGET http://a.test/x HTTP/1.1\r\nHost: a.test\r\nConnection: x\r\nX: 1\r\n\r\nbody",
    b"GET http://a.test/ HTTP/1.1\r\n folded\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: a.test\r\n\r\n",
    b"\x05\x01\x00",
]


def run(chunks: list[bytes]) -> tuple[list[Event], bytes]:
    server = HttpProxyServer()
    found: list[Event] = []
    for chunk in chunks:
        server.feed(chunk)
        while (event := server.next_event()) is not None:
            found.append(event)
    return found, server.trailing()


@pytest.mark.parametrize("data", HEADS)
def test_one_byte_at_a_time_gives_the_same_result(data: bytes) -> None:
    assert run([data[i : i + 1] for i in range(len(data))]) == run([data])


@given(st.sampled_from(HEADS), st.data())
def test_any_fragmentation_gives_the_same_result(raw: bytes, data: st.DataObject) -> None:
    cuts = sorted(data.draw(st.lists(st.integers(0, len(raw)), max_size=12)))
    chunks = [raw[a:b] for a, b in zip([0, *cuts], [*cuts, len(raw)], strict=True)]
    assert run(chunks) == run([raw])


@given(st.binary(max_size=200))
def test_garbage_never_raises(raw: bytes) -> None:
    assume(raw.replace(b"\r\n", b""))  # only empty lines: still waiting for a request line
    found, _ = run([raw + b"\r\n\r\n"])
    assert len(found) == 1


# Real client bytes: curl against a loopback server that uses the codec


async def serve_http_proxy(
    reader: asyncio.StreamReader,
    writer: asyncio.StreamWriter,
    users: dict[str, str] | None,
    seen: list[object],
) -> None:
    """Parse the head with the codec, then play the destination: answer one request."""
    server = HttpProxyServer(users)
    try:
        event = None
        while event is None and (data := await reader.read(65536)):
            server.feed(data)
            event = server.next_event()
        seen.append(event)
        if isinstance(event, Failed):
            writer.write(event.response)
            return
        request = server.trailing()
        if isinstance(event, Connect):
            writer.write(CONNECT_ESTABLISHED)
            while b"\r\n\r\n" not in request:
                request += await reader.read(65536)
        elif isinstance(event, Forward) and b"Content-Length: 5" in event.head:
            while len(request) < 5:
                request += await reader.read(65536)
        seen.append(request)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello")
        await writer.drain()
    finally:
        writer.close()


def curl_through(users: dict[str, str] | None, *args: str) -> tuple[bytes, list[object]]:
    seen: list[object] = []

    async def main() -> bytes:
        listener = await asyncio.start_server(
            lambda r, w: serve_http_proxy(r, w, users, seen), "127.0.0.1", 0
        )
        port = listener.sockets[0].getsockname()[1]
        async with listener:
            proc = await asyncio.create_subprocess_exec(
                "curl", "-sS", "--max-time", "5", "-o", "/dev/null", "-w", "%{http_code}",
                "-x", f"http://127.0.0.1:{port}", *args,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
                env={"PATH": os.environ.get("PATH", "/usr/bin:/bin")},
            )  # fmt: skip
            out, err = await asyncio.wait_for(proc.communicate(), 10)
            assert proc.returncode == 0, err
            return out

    return asyncio.run(main()), seen


def test_curl_absolute_uri_is_forwarded_in_origin_form() -> None:
    status, seen = curl_through(None, "http://example.test/path?q=1")
    assert status == b"200"
    event = seen[0]
    assert isinstance(event, Forward)
    assert event.destination == Destination("example.test", 80)
    assert event.head.startswith(b"GET /path?q=1 HTTP/1.1\r\nHost: example.test\r\n")
    assert event.head.endswith(b"\r\nConnection: close\r\n\r\n")
    assert b"Proxy-Connection" not in event.head


def test_curl_post_body_arrives_after_the_head() -> None:
    status, seen = curl_through(None, "-d", "hello", "http://example.test:8080/form")
    assert status == b"200"
    assert isinstance(seen[0], Forward)
    assert seen[0].head.startswith(b"POST /form HTTP/1.1\r\nHost: example.test:8080\r\n")
    assert seen[1] == b"hello"


def test_curl_proxy_user_is_authenticated_and_not_forwarded() -> None:
    status, seen = curl_through(USERS, "--proxy-user", "alice:secret", "http://example.test/")
    assert status == b"200"
    event = seen[0]
    assert isinstance(event, Forward) and event.username == "alice"
    assert b"Proxy-Authorization" not in event.head


def test_curl_without_credentials_gets_407() -> None:
    status, seen = curl_through(USERS, "http://example.test/")
    assert status == b"407"
    assert isinstance(seen[0], Failed)


@pytest.mark.parametrize(
    ("users", "args", "username"),
    [(None, (), None), (USERS, ("--proxy-user", "bob:hunter2"), "bob")],
)
def test_curl_proxytunnel_uses_connect(
    users: dict[str, str] | None, args: tuple[str, ...], username: str | None
) -> None:
    status, seen = curl_through(users, "-p", *args, "http://example.test:8080/inside")
    assert status == b"200"
    assert seen[0] == Connect(Destination("example.test", 8080), username)
    assert isinstance(seen[1], bytes)
    assert seen[1].startswith(b"GET /inside HTTP/1.1\r\nHost: example.test:8080\r\n")


def test_curl_connect_to_ipv6_literal() -> None:
    status, seen = curl_through(None, "-p", "http://[::1]:8080/")
    assert status == b"200"
    assert seen[0] == Connect(Destination("::1", 8080))
