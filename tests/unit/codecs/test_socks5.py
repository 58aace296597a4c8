"""SOCKS5 (RFC 1928, RFC 1929): byte-exact exchanges, fragmentation, UDP headers, and real curl."""

from __future__ import annotations

import asyncio
import os

import pytest
from hypothesis import given
from hypothesis import strategies as st

from elsewhere.codecs.address import NeedMoreData
from elsewhere.codecs.socks5 import (
    CMD_BIND,
    CMD_CONNECT,
    CMD_UDP_ASSOCIATE,
    METHOD_NONE_ACCEPTABLE,
    METHOD_USERPASS,
    REP_ADDRESS_TYPE_NOT_SUPPORTED,
    REP_COMMAND_NOT_SUPPORTED,
    REP_CONNECTION_REFUSED,
    REP_GENERAL_FAILURE,
    REP_HOST_UNREACHABLE,
    REP_SUCCEEDED,
    Authenticated,
    Connected,
    Failed,
    MethodChosen,
    Refused,
    Request,
    ServerEvent,
    Socks5Client,
    Socks5Server,
    client_greeting,
    decode_udp,
    detect_protocol,
    encode_udp,
)
from elsewhere.errors import AuthenticationError, ProtocolError
from elsewhere.session import Destination

USERS = {"alice": "secret", "bob": "hunter2"}
NO_AUTH_GREETING = b"\x05\x01\x00"
USERPASS_GREETING = b"\x05\x02\x00\x02"  # what curl sends with credentials: no-auth or user/pass
ALICE = b"\x01\x05alice\x06secret"
CONNECT_IPV4 = b"\x05\x01\x00\x01\x7f\x00\x00\x01\x00\x50"  # 127.0.0.1:80
CONNECT_IPV6 = b"\x05\x01\x00\x04" + bytes(15) + b"\x01\x01\xbb"  # [::1]:443
CONNECT_DOMAIN = b"\x05\x01\x00\x03\x0dinstagram.com\x01\xbb"  # instagram.com:443


def events(server: Socks5Server) -> list[ServerEvent]:
    found = []
    while (event := server.next_event()) is not None:
        found.append(event)
    return found


# Mixed port


@pytest.mark.parametrize(
    ("first", "protocol"),
    [
        (b"\x05\x01\x00", "socks5"),
        (b"CONNECT example.com:443 HTTP/1.1\r\n", "http"),
        (b"G", "http"),
        (b"\x04\x01\x00\x50", None),  # SOCKS4
        (b"\x16\x03\x01", None),  # a TLS ClientHello
        (b"", None),
    ],
)
def test_first_byte_tells_socks5_from_http(first: bytes, protocol: str | None) -> None:
    assert detect_protocol(first) == protocol


# Method selection (RFC 1928 §3) and username/password (RFC 1929)


def test_no_auth_greeting_is_answered_with_method_zero() -> None:
    server = Socks5Server()
    server.feed(NO_AUTH_GREETING)
    assert server.data_to_send() == b"\x05\x00"
    assert events(server) == [Authenticated(None)]


def test_server_with_users_selects_username_password_then_accepts_right_credentials() -> None:
    server = Socks5Server(USERS)
    server.feed(USERPASS_GREETING)
    assert server.data_to_send() == b"\x05\x02"
    assert events(server) == []
    server.feed(ALICE)
    assert server.data_to_send() == b"\x01\x00"
    assert events(server) == [Authenticated("alice")]


@pytest.mark.parametrize(
    "credentials",
    [
        b"\x01\x05alice\x05wrong",
        b"\x01\x03eve\x06secret",
        b"\x01\x00\x00",
        b"\x01\x02\xff\xfe\x01x",
    ],
)
def test_wrong_credentials_get_failure_status_and_the_connection_ends(credentials: bytes) -> None:
    server = Socks5Server(USERS)
    server.feed(USERPASS_GREETING + credentials + CONNECT_IPV4)
    assert server.data_to_send() == b"\x05\x02\x01\x01"
    assert [type(e) for e in events(server)] == [Failed]
    server.feed(CONNECT_IPV4)
    assert server.data_to_send() == b""
    assert events(server) == []


def test_sub_negotiation_version_other_than_one_fails() -> None:
    server = Socks5Server(USERS)
    server.feed(USERPASS_GREETING + b"\x05\x05alice\x06secret")
    assert server.data_to_send() == b"\x05\x02\x01\x01"
    assert [type(e) for e in events(server)] == [Failed]


@pytest.mark.parametrize(
    ("users", "greeting"),
    [
        (USERS, NO_AUTH_GREETING),  # a client without credentials, a server that needs them
        (None, b"\x05\x01\x02"),  # a client offering only user/pass, a server without users
        (None, b"\x05\x01\x01"),  # GSSAPI only
        (None, b"\x05\x00"),  # no methods at all
    ],
)
def test_no_acceptable_method_is_answered_with_ff(
    users: dict[str, str] | None, greeting: bytes
) -> None:
    server = Socks5Server(users)
    server.feed(greeting)
    assert server.data_to_send() == b"\x05\xff"
    assert [type(e) for e in events(server)] == [Failed]


@pytest.mark.parametrize("first", [b"\x04\x01\x00\x50\x7f\x00\x00\x01\x00", b"GET / HTTP/1.1\r\n"])
def test_wrong_version_fails_silently(first: bytes) -> None:
    server = Socks5Server()
    server.feed(first)
    assert server.data_to_send() == b""
    [failed] = events(server)
    assert isinstance(failed, Failed)
    assert "not SOCKS5" in failed.reason


# Requests and replies (RFC 1928 §4, §6)


@pytest.mark.parametrize(
    ("request_bytes", "destination"),
    [
        (CONNECT_IPV4, Destination("127.0.0.1", 80)),
        (CONNECT_IPV6, Destination("::1", 443)),
        (CONNECT_DOMAIN, Destination("instagram.com", 443)),
    ],
)
def test_connect_request_names_its_destination(
    request_bytes: bytes, destination: Destination
) -> None:
    server = Socks5Server()
    server.feed(NO_AUTH_GREETING + request_bytes)
    assert events(server) == [Authenticated(None), Request(CMD_CONNECT, destination)]
    server.data_to_send()
    server.reply(REP_SUCCEEDED, Destination("10.0.0.1", 1080))
    assert server.data_to_send() == b"\x05\x00\x00\x01\x0a\x00\x00\x01\x04\x38"


def test_udp_associate_is_a_request_answered_with_the_relay_address() -> None:
    server = Socks5Server()
    server.feed(NO_AUTH_GREETING + b"\x05\x03\x00\x01\x00\x00\x00\x00\x00\x00")
    assert events(server) == [
        Authenticated(None),
        Request(CMD_UDP_ASSOCIATE, Destination("0.0.0.0", 0)),
    ]
    server.data_to_send()
    server.reply(REP_SUCCEEDED, Destination("127.0.0.1", 0x1F90))
    assert server.data_to_send() == b"\x05\x00\x00\x01\x7f\x00\x00\x01\x1f\x90"


@pytest.mark.parametrize(
    ("request_bytes", "rep"),
    [
        (b"\x05\x02\x00\x01\x7f\x00\x00\x01\x00\x50", REP_COMMAND_NOT_SUPPORTED),  # BIND
        (b"\x05\x09\x00\x01\x7f\x00\x00\x01\x00\x50", REP_COMMAND_NOT_SUPPORTED),
        (b"\x05\x01\x00\x02\x7f\x00\x00\x01\x00\x50", REP_ADDRESS_TYPE_NOT_SUPPORTED),
        (b"\x05\x01\x00\x03\x00\x00\x50", REP_GENERAL_FAILURE),  # empty domain
        (b"\x04\x01\x00\x01\x7f\x00\x00\x01\x00\x50", REP_GENERAL_FAILURE),  # wrong version
    ],
)
def test_refused_requests_get_the_rfc_reply_code(request_bytes: bytes, rep: int) -> None:
    server = Socks5Server()
    server.feed(NO_AUTH_GREETING + request_bytes)
    assert server.data_to_send() == b"\x05\x00" + bytes((5, rep, 0, 1, 0, 0, 0, 0, 0, 0))
    assert [type(e) for e in events(server)] == [Authenticated, Failed]


def test_bind_is_named_in_the_failure_reason() -> None:
    server = Socks5Server()
    server.feed(NO_AUTH_GREETING + bytes((5, CMD_BIND, 0)))
    assert events(server)[-1] == Failed("BIND is not supported")


def test_failure_reply_ends_the_session() -> None:
    server = Socks5Server()
    server.feed(NO_AUTH_GREETING + CONNECT_DOMAIN + b"early")
    server.data_to_send()
    server.reply(REP_HOST_UNREACHABLE)
    assert server.data_to_send() == b"\x05\x04\x00\x01\x00\x00\x00\x00\x00\x00"
    assert server.trailing() == b""
    with pytest.raises(ProtocolError):
        server.reply(REP_SUCCEEDED)


def test_reply_before_a_request_is_a_bug() -> None:
    server = Socks5Server()
    server.feed(NO_AUTH_GREETING)
    with pytest.raises(ProtocolError):
        server.reply(REP_SUCCEEDED)


def test_optimistic_data_after_the_request_belongs_to_the_tunnel() -> None:
    server = Socks5Server(USERS)
    server.feed(USERPASS_GREETING + ALICE + CONNECT_DOMAIN + b"\x16\x03\x01hello")
    assert server.data_to_send() == b"\x05\x02\x01\x00"
    assert events(server) == [
        Authenticated("alice"),
        Request(CMD_CONNECT, Destination("instagram.com", 443)),
    ]
    server.feed(b" more")
    server.reply(REP_SUCCEEDED)
    assert server.trailing() == b"\x16\x03\x01hello more"
    server.feed(b"after reply")
    assert server.trailing() == b"after reply"
    assert server.trailing() == b""


CONVERSATIONS = [
    (None, NO_AUTH_GREETING + CONNECT_IPV4),
    (None, NO_AUTH_GREETING + CONNECT_IPV6 + b"optimistic"),
    (USERS, USERPASS_GREETING + ALICE + CONNECT_DOMAIN + b"\x00\x05\x01\x00"),
    (USERS, USERPASS_GREETING + b"\x01\x05alice\x05wrong" + CONNECT_IPV4),
    (None, NO_AUTH_GREETING + b"\x05\x02\x00\x01\x7f\x00\x00\x01\x00\x50"),
    (None, b"\x05\x03\x00\x01\x02\x7f"),
]


def run(
    users: dict[str, str] | None, chunks: list[bytes]
) -> tuple[list[ServerEvent], bytes, bytes]:
    server = Socks5Server(users)
    found: list[ServerEvent] = []
    sent = b""
    for chunk in chunks:
        server.feed(chunk)
        sent += server.data_to_send()
        found += events(server)
    return found, sent, server.trailing()


@pytest.mark.parametrize(("users", "data"), CONVERSATIONS)
def test_one_byte_at_a_time_gives_the_same_result(
    users: dict[str, str] | None, data: bytes
) -> None:
    assert run(users, [data[i : i + 1] for i in range(len(data))]) == run(users, [data])


@given(st.sampled_from(CONVERSATIONS), st.data())
def test_any_fragmentation_gives_the_same_result(
    conversation: tuple[dict[str, str] | None, bytes], data: st.DataObject
) -> None:
    users, raw = conversation
    cuts = sorted(data.draw(st.lists(st.integers(0, len(raw)), max_size=12)))
    chunks = [raw[a:b] for a, b in zip([0, *cuts], [*cuts, len(raw)], strict=True)]
    assert run(users, chunks) == run(users, [raw])


# UDP (RFC 1928 §7)


def test_udp_header_is_rsv_frag_address_then_data() -> None:
    datagram = encode_udp(Destination("8.8.8.8", 53), b"query")
    assert datagram == b"\x00\x00\x00\x01\x08\x08\x08\x08\x00\x35query"
    assert decode_udp(datagram) == (Destination("8.8.8.8", 53), b"query")


hosts = st.one_of(
    st.ip_addresses().map(str),
    st.from_regex(r"[a-z0-9]([a-z0-9-]{0,20}\.){0,3}[a-z]{2,6}", fullmatch=True),
)


@given(hosts, st.integers(0, 65535), st.binary(max_size=300))
def test_udp_datagrams_round_trip(host: str, port: int, payload: bytes) -> None:
    destination = Destination(host, port)
    assert decode_udp(encode_udp(destination, payload)) == (destination, payload)


@pytest.mark.parametrize("frag", [1, 0x7F, 0x81])
def test_fragments_are_dropped(frag: int) -> None:
    datagram = bytearray(encode_udp(Destination("1.1.1.1", 53), b"part"))
    datagram[2] = frag
    with pytest.raises(ProtocolError, match="fragment"):
        decode_udp(bytes(datagram))


@pytest.mark.parametrize(
    "datagram", [b"", b"\x00\x00\x00", b"\x00\x00\x00\x01\x08\x08", b"\x00\x00\x00\x09abcdef"]
)
def test_malformed_datagrams_are_protocol_errors_not_need_more_data(datagram: bytes) -> None:
    with pytest.raises(ProtocolError) as caught:
        decode_udp(datagram)
    assert not isinstance(caught.value, NeedMoreData)


# The client side against the server side


def pump(client: Socks5Client, server: Socks5Server) -> None:
    """Carry bytes both ways until neither side has anything to say."""
    while True:
        to_server, to_client = client.data_to_send(), server.data_to_send()
        if not to_server and not to_client:
            return
        server.feed(to_server)
        client.feed(to_client)


def client_events(client: Socks5Client) -> list[object]:
    found: list[object] = []
    while (event := client.next_event()) is not None:
        found.append(event)
    return found


@pytest.mark.parametrize(
    ("users", "username", "password"), [(None, None, None), (USERS, "bob", "hunter2")]
)
def test_client_and_server_agree_on_a_connect(
    users: dict[str, str] | None, username: str | None, password: str | None
) -> None:
    destination = Destination("example.com", 443)
    client = Socks5Client(destination, username=username, password=password)
    server = Socks5Server(users)
    pump(client, server)
    assert events(server) == [Authenticated(username), Request(CMD_CONNECT, destination)]
    server.reply(REP_SUCCEEDED, Destination("192.0.2.1", 4242))
    pump(client, server)
    client.feed(b"tunnel")
    method = METHOD_USERPASS if users else 0
    assert client_events(client) == [
        MethodChosen(method),
        Connected(Destination("192.0.2.1", 4242)),
    ]
    assert client.trailing() == b"tunnel"


def test_client_sees_refusal() -> None:
    client = Socks5Client(Destination("::1", 22))
    server = Socks5Server()
    pump(client, server)
    server.reply(REP_CONNECTION_REFUSED)
    pump(client, server)
    assert client_events(client) == [MethodChosen(0), Refused(REP_CONNECTION_REFUSED)]


def test_client_sees_no_acceptable_method() -> None:
    client = Socks5Client(Destination("::1", 22))
    pump(client, Socks5Server(USERS))
    assert client_events(client) == [MethodChosen(METHOD_NONE_ACCEPTABLE)]


def test_client_raises_on_rejected_credentials() -> None:
    client = Socks5Client(Destination("::1", 22), username="alice", password="nope")
    with pytest.raises(AuthenticationError):
        pump(client, Socks5Server(USERS))


def test_client_greeting_offers_one_method() -> None:
    assert client_greeting() == b"\x05\x01\x00"
    assert client_greeting("u", "p") == b"\x05\x01\x02"


# Real client bytes: curl against a loopback server that uses the codec


async def serve_socks5(
    reader: asyncio.StreamReader,
    writer: asyncio.StreamWriter,
    users: dict[str, str] | None,
    seen: list[object],
) -> None:
    """Negotiate with the codec, then play the destination: read one request, answer it."""
    server = Socks5Server(users)
    try:
        while data := await reader.read(65536):
            server.feed(data)
            writer.write(server.data_to_send())
            while (event := server.next_event()) is not None:
                seen.append(event)
                if isinstance(event, Failed):
                    await writer.drain()
                    return
                if isinstance(event, Request):
                    server.reply(REP_SUCCEEDED, Destination("127.0.0.1", 1))
                    writer.write(server.data_to_send())
                    request = server.trailing()
                    while b"\r\n\r\n" not in request:
                        request += await reader.read(65536)
                    seen.append(request)
                    writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello")
                    await writer.drain()
                    return
    finally:
        writer.close()


def curl_through(users: dict[str, str] | None, *args: str) -> tuple[int, bytes, list[object]]:
    seen: list[object] = []

    async def main() -> tuple[int, bytes]:
        listener = await asyncio.start_server(
            lambda r, w: serve_socks5(r, w, users, seen), "127.0.0.1", 0
        )
        port = listener.sockets[0].getsockname()[1]
        async with listener:
            argv = [a.replace("PORT", str(port)) for a in args]
            proc = await asyncio.create_subprocess_exec(
                "curl", "-sS", "--max-time", "5", *argv,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
                env={"PATH": os.environ.get("PATH", "/usr/bin:/bin")},
            )  # fmt: skip
            out, _ = await asyncio.wait_for(proc.communicate(), 10)
            assert proc.returncode is not None
            return proc.returncode, out

    code, out = asyncio.run(main())
    return code, out, seen


def test_curl_socks5_hostname_sends_the_name_unresolved() -> None:
    code, out, seen = curl_through(
        None, "--socks5-hostname", "127.0.0.1:PORT", "http://example.test/path"
    )
    assert (code, out) == (0, b"hello")
    assert seen[:2] == [Authenticated(None), Request(CMD_CONNECT, Destination("example.test", 80))]
    assert isinstance(seen[2], bytes)
    assert seen[2].startswith(b"GET /path HTTP/1.1\r\nHost: example.test\r\n")


def test_curl_with_credentials_authenticates() -> None:
    code, out, seen = curl_through(
        USERS, "-x", "socks5h://bob:hunter2@127.0.0.1:PORT", "http://example.test:8080/"
    )
    assert (code, out) == (0, b"hello")
    assert seen[:2] == [
        Authenticated("bob"),
        Request(CMD_CONNECT, Destination("example.test", 8080)),
    ]


def test_curl_with_a_wrong_password_is_refused() -> None:
    code, out, seen = curl_through(
        USERS, "-x", "socks5h://bob:wrong@127.0.0.1:PORT", "http://example.test/"
    )
    assert code != 0 and out == b""
    assert seen == [Failed("wrong username or password")]


@pytest.mark.parametrize(
    ("url", "destination"),
    [
        ("http://127.0.0.1:9/", Destination("127.0.0.1", 9)),
        ("http://[::1]:8080/", Destination("::1", 8080)),
    ],
)
def test_curl_sends_ip_literals_as_addresses(url: str, destination: Destination) -> None:
    code, out, seen = curl_through(None, "--socks5-hostname", "127.0.0.1:PORT", url)
    assert (code, out) == (0, b"hello")
    assert seen[1] == Request(CMD_CONNECT, destination)
