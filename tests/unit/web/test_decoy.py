import gzip
import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from elsewhere.web.decoy import DecoySite
from elsewhere.web.decoy_content import DecoyContent, default_content, packaged_mtime
from elsewhere.web.nginx import CLIENT_HEADER_TIMEOUT, KEEPALIVE_TIMEOUT, LINGERING_TIMEOUT, SERVER

NOW = 1_700_000_000.0  # Tue, 14 Nov 2023 22:13:20 GMT
SITE = default_content()
INDEX = SITE.files["/index.html"]


def exchange(*chunks: bytes, now: float = NOW) -> tuple[bytes, DecoySite]:
    site = DecoySite(DecoyContent(SITE.files), now=now)
    for chunk in chunks:
        site.feed(chunk, now)
    return site.data_to_send(), site


def split(response: bytes) -> tuple[str, dict[str, str], bytes]:
    head, _, body = response.partition(b"\r\n\r\n")
    status, *lines = head.decode("latin-1").split("\r\n")
    return status, dict(line.split(": ", 1) for line in lines), body


def get(path: str, *headers: str) -> bytes:
    lines = "".join(f"{h}\r\n" for h in headers)
    return f"GET {path} HTTP/1.1\r\nHost: example.com\r\n{lines}\r\n".encode()


# the site itself


def test_the_shipped_site_is_a_small_business_with_the_pages_a_visitor_expects() -> None:
    assert {
        "/index.html",
        "/about.html",
        "/404.html",
        "/robots.txt",
        "/favicon.ico",
        "/style.css",
    } <= set(SITE.files)
    assert SITE.files["/favicon.ico"].body[:4] == b"\x00\x00\x01\x00"  # an ICO header
    assert SITE.files["/style.css"].content_type == "text/css"


def test_nothing_in_the_site_mentions_what_the_server_really_is() -> None:
    words = re.compile(
        rb"proxy|vpn|tunnel|trojan|vless|shadowsocks|v2ray|xray|elsewhere|censor", re.I
    )
    for name, file in SITE.files.items():
        assert not words.search(file.body), name


def test_packaged_files_carry_fixed_dates_not_their_install_time() -> None:
    assert INDEX.mtime == packaged_mtime("index.html")
    assert INDEX.etag == f'"{INDEX.mtime:x}-{len(INDEX.body):x}"'  # nginx's mtime-size in hex
    assert len({f.mtime for f in SITE.files.values()}) > 1


# answers


def test_get_of_the_home_page_is_answered_like_nginx_with_date_from_now() -> None:
    out, site = exchange(get("/"))
    status, headers, body = split(out)
    assert status == "HTTP/1.1 200 OK"
    assert list(headers) == [
        "Server",
        "Date",
        "Content-Type",
        "Content-Length",
        "Last-Modified",
        "Connection",
        "ETag",
        "Accept-Ranges",
    ]
    assert headers["Server"] == SERVER == "nginx/1.22.1"
    assert headers["Date"] == "Tue, 14 Nov 2023 22:13:20 GMT"
    assert headers["Content-Type"] == "text/html"
    assert headers["Connection"] == "keep-alive"
    assert body == INDEX.body
    assert not site.closed and not site.half_closed


def test_head_gets_the_headers_without_the_body() -> None:
    out, _ = exchange(b"HEAD /style.css HTTP/1.1\r\nHost: h\r\n\r\n")
    status, headers, body = split(out)
    assert status == "HTTP/1.1 200 OK" and body == b""
    assert headers["Content-Length"] == str(len(SITE.files["/style.css"].body))


def test_unknown_path_gets_the_sites_own_404_page() -> None:
    status, headers, body = split(exchange(get("/wp-login.php"))[0])
    assert status == "HTTP/1.1 404 Not Found"
    assert body == SITE.files["/404.html"].body
    assert "Last-Modified" not in headers


@pytest.mark.parametrize("method", ["POST", "PUT", "DELETE", "OPTIONS", "FOO"])
def test_other_methods_on_a_page_get_405_and_the_connection_stays(method: str) -> None:
    out, site = exchange(f"{method} /about.html HTTP/1.1\r\nHost: h\r\n\r\n".encode())
    status, headers, body = split(out)
    assert status == "HTTP/1.1 405 Not Allowed"
    assert b"<center>nginx/1.22.1</center>" in body
    assert headers["Connection"] == "keep-alive" and not site.closed


@pytest.mark.parametrize(
    "garbage",
    [b"\x16\x03\x01\x02\x00", b"d63dc919e201d7bc\r\n", b"get / HTTP/1.1\r\n", b"\x00\x11"],
)
def test_garbage_gets_400_at_once_and_a_lingering_close(garbage: bytes) -> None:
    out, site = exchange(garbage)
    status, headers, body = split(out)
    assert status == "HTTP/1.1 400 Bad Request"
    assert headers["Connection"] == "close"
    assert body.startswith(b"<html>\r\n<head><title>400 Bad Request</title></head>")
    assert site.half_closed and not site.closed
    assert site.deadline == NOW + LINGERING_TIMEOUT


def test_a_request_that_may_still_be_valid_gets_no_answer_until_it_ends() -> None:
    request = get("/about.html")
    site = DecoySite(now=NOW)
    for i in range(len(request) - 1):
        site.feed(request[i : i + 1], NOW)
        assert site.data_to_send() == b""
    site.feed(request[-1:], NOW)
    assert split(site.data_to_send())[0] == "HTTP/1.1 200 OK"


def test_pipelined_requests_are_answered_in_order_on_one_connection() -> None:
    out, site = exchange(get("/robots.txt") + get("/nope") + b"HEAD / HTTP/1.1\r\nHost: h\r\n\r\n")
    assert re.findall(rb"HTTP/1.1 (\d+)", out) == [b"200", b"404", b"200"]
    assert not site.closed


def test_connection_close_and_http_1_0_close_after_the_answer() -> None:
    assert exchange(get("/", "Connection: close"))[1].closed
    out, site = exchange(b"GET / HTTP/1.0\r\n\r\n")
    assert split(out)[1]["Connection"] == "close" and site.closed
    out, site = exchange(b"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
    assert split(out)[1]["Connection"] == "keep-alive" and not site.closed


def test_http_0_9_gets_the_bare_body_and_a_close() -> None:
    out, site = exchange(b"GET /robots.txt\r\n")
    assert out == SITE.files["/robots.txt"].body and site.closed


def test_a_browser_asking_for_gzip_gets_what_nginx_gzip_writes() -> None:
    out, _ = exchange(get("/about.html", "Accept-Encoding: gzip, deflate, br"))
    _, headers, body = split(out)
    assert headers["Transfer-Encoding"] == "chunked" and headers["Content-Encoding"] == "gzip"
    assert headers["ETag"].startswith('W/"')
    size, _, rest = body.partition(b"\r\n")
    chunk = rest[: int(size, 16)]
    assert rest[int(size, 16) :] == b"\r\n0\r\n\r\n"
    assert chunk[:10] == b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x04\x03"
    assert gzip.decompress(chunk) == SITE.files["/about.html"].body


def test_revalidation_with_the_etag_gets_304() -> None:
    status, headers, body = split(exchange(get("/", f"If-None-Match: {INDEX.etag}"))[0])
    assert status == "HTTP/1.1 304 Not Modified" and body == b""
    assert "Content-Length" not in headers and headers["ETag"] == INDEX.etag


def test_a_range_gets_206_with_that_slice() -> None:
    status, headers, body = split(exchange(get("/", "Range: bytes=0-9"))[0])
    assert status == "HTTP/1.1 206 Partial Content"
    assert headers["Content-Range"] == f"bytes 0-9/{len(INDEX.body)}"
    assert body == INDEX.body[:10]


def test_an_unsatisfiable_range_gets_416() -> None:
    status, headers, _ = split(exchange(get("/", "Range: bytes=999999-"))[0])
    assert status == "HTTP/1.1 416 Requested Range Not Satisfiable"
    assert headers["Content-Range"] == f"bytes */{len(INDEX.body)}"


def test_a_request_body_is_read_and_dropped_before_the_next_request() -> None:
    out, _ = exchange(
        b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\n\r\nhel", b"lo" + get("/robots.txt")
    )
    assert re.findall(rb"HTTP/1.1 (\d+)", out) == [b"405", b"200"]


def test_missing_host_on_http_1_1_is_400() -> None:
    assert split(exchange(b"GET / HTTP/1.1\r\n\r\n")[0])[0] == "HTTP/1.1 400 Bad Request"


def test_http_2_preface_is_refused_as_nginx_refuses_it() -> None:
    out, _ = exchange(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")
    assert split(out)[0] == "HTTP/1.1 400 Bad Request"


def test_a_request_line_filling_nginxs_8k_buffer_gets_414() -> None:
    line = b"GET /" + b"a" * (8192 - 5)
    assert exchange(line[:-1])[0] == b""
    out, site = exchange(line)
    assert split(out)[0] == "HTTP/1.1 414 Request-URI Too Large"
    # nginx's last read filled the buffer: it does not know nothing more waits, and lingers
    assert site.half_closed and not site.closed
    assert exchange(line + b"more")[1].half_closed  # bytes left unread: lingering close
    out, site = exchange(line[:8000], line[8000:])
    assert split(out)[0] == "HTTP/1.1 414 Request-URI Too Large" and site.half_closed


def test_a_chrome_user_agent_gets_nginx_padding_on_error_pages() -> None:
    ua = "User-Agent: Mozilla/5.0 (X11) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0"
    _, _, body = split(exchange(b"POST / HTTP/1.1\r\nHost: h\r\n" + ua.encode() + b"\r\n\r\n")[0])
    assert body.count(b"a padding to disable MSIE and Chrome friendly error page") == 6


def test_a_close_lingers_when_nginx_cannot_know_that_nothing_more_waits() -> None:
    """nginx lingers on closing when bytes are left, when its last read filled what it asked
    for (a head of exactly its 1 KiB buffer; a body read from the socket), or once a request
    came pipelined; it closes outright otherwise (measured against nginx 1.22.1)."""
    head = b"GET / HTTP/1.1\r\nHost: h\r\nConnection: close\r\nX: "
    for size, lingers in ((1023, False), (1024, True), (1025, False)):
        out, site = exchange(head + b"a" * (size - len(head) - 4) + b"\r\n\r\n")
        assert split(out)[0] == "HTTP/1.1 200 OK"
        assert (site.half_closed, site.closed) == (lingers, not lingers), size
    bad = b"GET / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: gzip\r\nContent-Length: 3\r\n\r\n"
    assert exchange(bad + b"abc")[1].closed  # the body came with the head
    out, site = exchange(bad, b"abc")  # the body read from the socket
    assert split(out)[0] == "HTTP/1.1 501 Not Implemented" and site.half_closed
    pipelined = get("/") + get("/", "Connection: close")
    assert exchange(pipelined)[1].half_closed
    assert exchange(get("/"), get("/", "Connection: close"))[1].closed


# plain HTTP on nginx's TLS port (its internal 497)

PAGE_497 = (
    b"<html>\r\n<head><title>400 The plain HTTP request was sent to HTTPS port</title></head>\r\n"
    b"<body>\r\n<center><h1>400 Bad Request</h1></center>\r\n"
    b"<center>The plain HTTP request was sent to HTTPS port</center>\r\n"
    b"<hr><center>nginx/1.22.1</center>\r\n</body>\r\n</html>\r\n"
)


def plain_on_https(*chunks: bytes, now: float = NOW) -> tuple[bytes, DecoySite]:
    site = DecoySite(DecoyContent(SITE.files), now=now, plain_on_https_port=True)
    for chunk in chunks:
        site.feed(chunk, now)
    return site.data_to_send(), site


def test_plain_http_on_the_https_port_gets_nginxs_400_page_for_it_and_a_close() -> None:
    out, site = plain_on_https(get("/"))
    assert out == (
        b"HTTP/1.1 400 Bad Request\r\nServer: nginx/1.22.1\r\n"
        b"Date: Tue, 14 Nov 2023 22:13:20 GMT\r\nContent-Type: text/html\r\n"
        b"Content-Length: 255\r\nConnection: close\r\n\r\n" + PAGE_497
    )
    assert site.closed and not site.half_closed  # nothing was left unread


@pytest.mark.parametrize(
    "request_",
    [
        get("/about.html"),
        get("/nope"),
        b"GET / HTTP/1.0\r\n\r\n",
        b"DELETE /about.html HTTP/1.1\r\nHost: h\r\nContent-Length: 0\r\n\r\n",
    ],
)
def test_every_request_that_passes_the_heads_checks_gets_that_page(request_: bytes) -> None:
    assert split(plain_on_https(request_)[0])[2] == PAGE_497


def test_an_http_0_9_request_gets_the_bare_page() -> None:
    assert plain_on_https(b"GET /\r\n")[0] == PAGE_497
    assert b"<title>400 Bad Request</title>" in plain_on_https(b"HEAD /\r\n")[0]


@pytest.mark.parametrize(
    ("request_", "status"),
    [
        (b"GET / HTTP/1.1\r\n\r\n", "400 Bad Request"),
        (b"TRACE / HTTP/1.1\r\nHost: h\r\n\r\n", "405 Not Allowed"),
        (b"GET / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: gzip\r\n\r\n", "501 Not Implemented"),
        (b"GET / HTTP/2.0\r\nHost: h\r\n\r\n", "505 HTTP Version Not Supported"),
        (b"SSH-2.0-OpenSSH_9.2\r\n", "400 Bad Request"),
    ],
)
def test_errors_nginx_finds_in_the_head_come_first(request_: bytes, status: str) -> None:
    out, site = plain_on_https(request_)
    assert split(out)[0] == f"HTTP/1.1 {status}"
    assert b"plain HTTP" not in out
    assert site.closed or site.half_closed


def test_a_body_too_large_still_gets_the_page_and_is_read_before_the_close() -> None:
    head = b"PUT / HTTP/1.1\r\nHost: h\r\nContent-Length: 9999999\r\n\r\n"
    out, site = plain_on_https(head)
    assert split(out)[2] == PAGE_497  # not the 413, which nginx decides later
    assert not (site.closed or site.half_closed)
    assert site.deadline == NOW + LINGERING_TIMEOUT
    short = b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 3\r\n\r\n"
    out, site = plain_on_https(short, b"abc")
    assert split(out)[2] == PAGE_497 and site.half_closed


def test_a_chrome_user_agent_gets_the_padding_on_that_page_too() -> None:
    ua = "User-Agent: Mozilla/5.0 (X11) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0"
    _, headers, body = split(plain_on_https(get("/", ua))[0])
    assert body.startswith(PAGE_497) and body.count(b"a padding to disable MSIE") == 6
    assert headers["Content-Length"] == str(len(body))


def test_the_head_timeout_runs_from_the_accept_and_can_be_set() -> None:
    site = DecoySite(now=NOW, header_timeout=1.5, plain_on_https_port=True)
    assert site.deadline == NOW + 1.5
    site.feed(b"GET / HTTP/1.1\r\n", NOW + 1)
    assert site.deadline == NOW + 1.5 and site.data_to_send() == b""
    assert DecoySite(now=NOW).deadline == NOW + CLIENT_HEADER_TIMEOUT == NOW + 60


# time


def test_timeouts_are_nginx_defaults_and_answer_nothing() -> None:
    site = DecoySite(now=NOW)
    assert site.deadline == NOW + CLIENT_HEADER_TIMEOUT  # from the accept, not from each byte
    site.feed(b"GET / HT", NOW + 10)
    assert site.deadline == NOW + CLIENT_HEADER_TIMEOUT
    site.feed(b"TP/1.1\r\nHost: h\r\n\r\n", NOW + 20)
    assert site.data_to_send() and site.deadline == NOW + 20 + KEEPALIVE_TIMEOUT
    site.feed(b"G", NOW + 30)
    assert site.deadline == NOW + 30 + CLIENT_HEADER_TIMEOUT


def test_a_request_cut_short_times_out_quietly_an_idle_connection_does_not() -> None:
    """nginx shuts TLS down without close_notify when a request timed out (measured)."""
    site = DecoySite(now=NOW)
    assert not site.times_out_quietly  # waiting for a first byte
    site.feed(b"\r\n", NOW)
    assert site.times_out_quietly  # a head begun (blank lines are read as one)
    site.feed(b"GET / HTTP/1.1\r\nHost: h\r\n\r\n", NOW)
    assert site.data_to_send() and not site.times_out_quietly  # idle between requests
    site.feed(b"GET / HTTP/1.1\r\nHost: h\r\nContent-Length: 3\r\n\r\n", NOW)
    assert site.data_to_send() and site.times_out_quietly  # a body not all sent
    site.feed(b"abc\x00", NOW)
    assert site.half_closed and not site.times_out_quietly  # lingering close


def test_the_client_closing_ends_the_connection_silently() -> None:
    site = DecoySite(now=NOW)
    site.feed(b"GET / HTTP/1.1\r\n", NOW)
    site.eof()
    assert site.closed and site.data_to_send() == b""


# robustness


@settings(max_examples=300)
@given(data=st.binary(max_size=300), cuts=st.lists(st.integers(0, 300), max_size=5))
def test_any_bytes_cut_anywhere_get_the_same_answer_as_in_one_piece(
    data: bytes, cuts: list[int]
) -> None:
    whole, whole_site = exchange(data)
    points = sorted({c for c in cuts if c <= len(data)})
    pieces = [data[a:b] for a, b in zip([0, *points], [*points, len(data)], strict=True)]
    parts, site = exchange(*pieces)
    assert parts == whole
    assert (site.closed, site.half_closed) == (whole_site.closed, whole_site.half_closed)


@settings(max_examples=200)
@given(
    line=st.sampled_from(
        [b"GET / HTTP/1.1\r\n", b"HEAD /about.html HTTP/1.0\r\n", b"POST /x HTTP/1.1\r\n"]
    ),
    headers=st.lists(
        st.tuples(
            st.from_regex(rb"[A-Za-z_@ -]{0,12}", fullmatch=True),
            st.from_regex(rb"[\t\x20-\x7e\x80-\xff]{0,20}", fullmatch=True),
        ),
        max_size=5,
    ),
)
def test_header_soup_never_raises_and_a_whole_head_always_gets_an_answer(
    line: bytes, headers: list[tuple[bytes, bytes]]
) -> None:
    raw = line + b"Host: h\r\n" + b"".join(k + b": " + v + b"\r\n" for k, v in headers) + b"\r\n"
    out, _ = exchange(raw)
    assert re.match(rb"HTTP/1.1 (200|400|404|405) ", out)
