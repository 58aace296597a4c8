"""XHTTP's rules against the shapes of Xray-core's splithttp (hub.go, config.go, xpadding.go,
upload_queue.go, infra/conf/transport_method.go): requests a server classifies, its answers,
the padding, the reorder queue, the client's requests and the `extra` JSON."""

from __future__ import annotations

import ipaddress
import json
import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from elsewhere.codecs import xhttp
from elsewhere.codecs.xhttp import Classified, Reject, UploadQueue, XhttpSettings
from elsewhere.errors import ConfigError, ProtocolError

S = XhttpSettings(path="/xh")
REFERER = [("referer", "https://cdn.example/xh/?x_padding=" + "X" * 500)]


def test_path_is_normalised_to_end_with_a_slash() -> None:
    assert XhttpSettings(path="xh").path == "/xh/"
    assert XhttpSettings(path="/xh/?ed=1").path == "/xh/"


@pytest.mark.parametrize(
    ("method", "target", "expected"),
    [
        ("GET", "/xh/abc", Classified("download", "abc")),
        ("POST", "/xh/abc/0", Classified("packet", "abc", 0)),
        ("POST", "/xh/abc/17", Classified("packet", "abc", 17)),
        ("POST", "/xh/abc", Classified("stream-up", "abc")),
        ("PUT", "/xh/abc", Classified("stream-up", "abc")),  # any method but GET uploads
        ("GET", "/xh/abc/3", Classified("packet", "abc", 3)),  # uplinkHTTPMethod GET
        ("POST", "/xh/", Classified("download", "")),  # stream-one
        ("OPTIONS", "/xh/abc", Classified("options")),
    ],
)
def test_requests_are_classified_as_xray_does(
    method: str, target: str, expected: Classified
) -> None:
    assert xhttp.classify(S, method, target, REFERER) == expected


@pytest.mark.parametrize("size", [0, 99, 1001, 5000])
def test_padding_outside_100_to_1000_is_a_400(size: int) -> None:
    headers = [("referer", "https://h/xh/?x_padding=" + "X" * size)]
    with pytest.raises(Reject) as caught:
        xhttp.classify(S, "GET", "/xh/abc", headers)
    assert caught.value.status == 400


def test_without_a_referer_the_padding_is_read_from_the_query() -> None:
    target = "/xh/abc?x_padding=" + "X" * 200
    assert xhttp.classify(S, "GET", target, []) == Classified("download", "abc")
    with pytest.raises(Reject):
        xhttp.classify(S, "GET", "/xh/abc", [])


def test_a_referer_without_padding_is_not_excused_by_the_query() -> None:
    target = "/xh/abc?x_padding=" + "X" * 200
    with pytest.raises(Reject):
        xhttp.classify(S, "GET", target, [("referer", "https://h/xh/")])


@pytest.mark.parametrize(
    ("mode", "method", "target"),
    [
        ("packet-up", "POST", "/xh/"),  # stream-one not allowed
        ("packet-up", "POST", "/xh/abc"),  # stream-up not allowed
        ("stream-up", "POST", "/xh/abc/0"),  # packet-up not allowed
        ("stream-one", "POST", "/xh/abc/0"),
    ],
)
def test_a_mode_the_server_does_not_serve_is_a_400(mode: str, method: str, target: str) -> None:
    with pytest.raises(Reject) as caught:
        xhttp.classify(S.with_mode(mode), method, target, REFERER)
    assert caught.value.status == 400


@pytest.mark.parametrize("seq", ["x", "-1", "1e3", "18446744073709551616"])
def test_a_seq_that_is_no_uint64_is_a_500(seq: str) -> None:
    with pytest.raises(Reject) as caught:
        xhttp.classify(S, "POST", f"/xh/abc/{seq}", REFERER)
    assert caught.value.status == 500


def test_on_path_and_host() -> None:
    assert xhttp.on_path(S, "/xh/abc/1")
    assert xhttp.on_path(S, "/xh")
    assert not xhttp.on_path(S, "/xhx/abc")
    assert not xhttp.on_path(S, "/")
    hosted = XhttpSettings(path="/xh", host="cdn.example")
    assert xhttp.host_matches(hosted, "cdn.example:443")
    assert xhttp.host_matches(hosted, "CDN.example")
    assert not xhttp.host_matches(hosted, "other.example")
    assert not xhttp.host_matches(hosted, None)
    assert xhttp.host_matches(S, "anything")


def test_download_answer_headers_are_hub_go_s() -> None:
    headers = dict(xhttp.response_headers(S, "download", []))
    assert headers["content-type"] == "text/event-stream"
    assert headers["x-accel-buffering"] == "no"
    assert headers["cache-control"] == "no-store"
    assert headers["access-control-allow-origin"] == "*"
    assert re.fullmatch("X{100,1000}", headers["x-padding"])
    quiet = dict(xhttp.response_headers(XhttpSettings(no_sse_header=True), "download", []))
    assert "content-type" not in quiet


def test_cors_answers_echo_the_origin_and_what_was_asked() -> None:
    asked = [
        ("origin", "https://a.example"),
        ("access-control-request-method", "POST"),
        ("access-control-request-headers", "content-type"),
    ]
    headers = dict(xhttp.response_headers(S, "options", asked))
    assert headers["access-control-allow-origin"] == "https://a.example"
    assert headers["access-control-allow-methods"] == "POST"
    assert headers["access-control-allow-headers"] == "content-type"


def test_a_bodiless_packet_answer_says_no_store() -> None:
    assert ("cache-control", "no-store") in xhttp.response_headers(S, "packet", [], body=False)
    assert all(k != "cache-control" for k, _ in xhttp.response_headers(S, "packet", []))


def test_upload_queue_reorders_by_seq() -> None:
    q = UploadQueue()
    assert q.push(1, b"b") == []
    assert q.push(2, b"c") == []
    assert q.push(0, b"a") == [b"a", b"b", b"c"]
    assert q.push(3, b"d") == [b"d"]
    assert len(q) == 0


def test_a_replayed_post_is_dropped() -> None:
    q = UploadQueue()
    assert q.push(0, b"a") == [b"a"]
    assert q.push(0, b"a") == []
    assert q.push(2, b"c") == []
    assert q.push(2, b"c") == []  # a duplicate while waiting
    assert q.push(1, b"b") == [b"b", b"c"]


def test_more_posts_out_of_order_than_the_cap_tear_the_session_down() -> None:
    q = UploadQueue(max_buffered=30)
    for seq in range(1, 31):
        assert q.push(seq, b"x") == []
    with pytest.raises(ProtocolError):
        q.push(31, b"x")


@given(st.permutations(list(range(20))))
def test_any_order_gives_the_stream_in_order(order: list[int]) -> None:
    q = UploadQueue(max_buffered=30)
    out: list[bytes] = []
    for seq in order:
        out += q.push(seq, bytes([seq]))
    assert b"".join(out) == bytes(range(20))


def test_client_requests_have_xray_s_shape() -> None:
    method, target, headers = xhttp.request(
        S, "packet", scheme="https", authority="cdn.example", session="abc", seq=4, length=10
    )
    fields = dict(headers)
    assert (method, target) == ("POST", "/xh/abc/4")
    assert re.fullmatch(r"https://cdn\.example/xh/\?x_padding=X{100,1000}", fields["referer"])
    assert fields["content-length"] == "10"
    assert "content-type" not in fields
    assert fields["sec-fetch-mode"] == "cors"
    method, target, headers = xhttp.request(
        S, "download", scheme="https", authority="cdn.example", session="abc"
    )
    assert (method, target) == ("GET", "/xh/abc")
    _, target, headers = xhttp.request(S, "stream-one", scheme="http", authority="h")
    assert target == "/xh/"
    assert dict(headers)["content-type"] == "application/grpc"
    # and the server takes every one of them
    for kind, session, seq in (
        ("packet", "s", 0),
        ("download", "s", None),
        ("stream-up", "s", None),
    ):
        method, target, headers = xhttp.request(
            S, kind, scheme="https", authority="h", session=session, seq=seq
        )
        assert xhttp.classify(S, method, target, headers).kind == kind


def test_session_ids_are_uuids() -> None:
    assert re.fullmatch(
        r"[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}",
        xhttp.new_session_id(),
    )


def test_extra_json_as_xray_reads_it() -> None:
    extra = json.dumps(
        {
            "xPaddingBytes": "200-300",
            "scMaxEachPostBytes": {"from": 500000, "to": 500000},
            "scMinPostsIntervalMs": 10,
            "noSSEHeader": True,
            "headers": {"X-Test": "1"},
            "xmux": {"maxConcurrency": "16-32", "hMaxRequestTimes": "100-200"},
            "unknown": 1,
        }
    )
    s = XhttpSettings.parse("/p", "h.example", "packet-up", extra)
    assert s.padding_bytes == (200, 300)
    assert s.max_each_post_bytes == 500000
    assert s.min_posts_interval_ms == (10, 10)
    assert s.no_sse_header
    assert s.headers == {"X-Test": "1"}
    assert s.xmux.max_concurrency == (16, 32)
    assert s.xmux.max_connections == (0, 0)
    assert s.xmux.max_request_times == (100, 200)
    again = XhttpSettings.parse("/p", "h.example", "packet-up", json.dumps(s.extra()))
    assert again == s


def test_xmux_defaults_are_three_long_lived_connections() -> None:
    x = XhttpSettings.parse("/p", None, None, "").xmux
    assert x.max_connections == (3, 3)
    assert x.max_request_times == (600, 900)
    assert x.max_reusable_secs == (1800, 3000)


@pytest.mark.parametrize(
    ("mode", "extra"),
    [
        ("fast", ""),
        ("auto", '{"headers": {"Host": "x"}}'),
        ("auto", "{not json"),
        ("auto", '{"xPaddingBytes": "9-3"}'),
        ("auto", '{"xmux": {"maxConnections": 2, "maxConcurrency": 4}}'),
    ],
)
def test_bad_settings_say_what_is_wrong(mode: str, extra: str) -> None:
    with pytest.raises(ConfigError):
        XhttpSettings.parse("/p", None, mode, extra)


def test_x_forwarded_for_is_believed_only_from_trusted_proxies() -> None:
    cdn = [ipaddress.ip_network("10.9.0.0/24")]
    headers = [("x-forwarded-for", "203.0.113.7, 10.9.0.1")]
    assert xhttp.forwarded_for(headers, "10.9.0.5", cdn) == "203.0.113.7"
    assert xhttp.forwarded_for(headers, "198.51.100.1", cdn) == "198.51.100.1"
    assert xhttp.forwarded_for([("x-forwarded-for", "junk")], "10.9.0.5", cdn) == "10.9.0.5"
    assert xhttp.forwarded_for([], "10.9.0.5", cdn) == "10.9.0.5"
