"""XHTTP (Xray-core's SplitHTTP, transport/internet/splithttp): a stream carried in ordinary HTTP
requests, so that a CDN which forwards only requests and responses can carry it. Pure rules, no
I/O: the settings and their `extra` JSON as Xray's infra/conf reads it, how a server classifies a
request (its 400/404/405/409/413 answers), the padding Xray puts in `Referer` and `X-Padding`,
the packet-up reorder queue, and the requests a client sends.

Wire shapes (Xray's defaults: session and seq in the path, data in the body):
  download    GET  <path><session>          -> 200 text/event-stream, the stream's bytes
  packet-up   POST <path><session>/<seq>    body = the next bytes of the stream (<= 1 MB)
  stream-up   POST <path><session>          body = the whole upload, response drips padding
  stream-one  POST <path>                   body up, response down, one request
Every request carries `Referer: <scheme>://<host><path>?x_padding=XXX…` (100-1000 X's); every
response `X-Padding: XXX…`."""

from __future__ import annotations

import heapq
import json
import random
import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any
from urllib.parse import parse_qs, urlsplit

from elsewhere.errors import ConfigError, ProtocolError

MODES = ("auto", "packet-up", "stream-up", "stream-one")
# Xray's defaults (splithttp/config.go GetNormalized*, infra/conf/transport_method.go)
PADDING_BYTES = (100, 1000)
MAX_EACH_POST_BYTES = 1_000_000
MIN_POSTS_INTERVAL_MS = (30, 30)
MAX_BUFFERED_POSTS = 30
STREAM_UP_SERVER_SECS = (20, 80)
SESSION_REAP_SECONDS = 30.0  # a session whose GET has not come by then is dropped (hub.go)
MAX_HEADER_BYTES = 8192
PADDING_KEY = "x_padding"
# xmux defaults when a config gives none: 3 connections, each for 600-900 requests and
# 1800-3000 s (infra/conf SplitHTTPConfig.Build)
XMUX_MAX_CONNECTIONS = (3, 3)
XMUX_MAX_REQUEST_TIMES = (600, 900)
XMUX_MAX_REUSABLE_SECS = (1800, 3000)

Range = tuple[int, int]
Headers = Sequence[tuple[str, str]]

_random = random.SystemRandom()


def pick(r: Range) -> int:
    """A value of an Xray range, uniformly (crypto.RandBetween)."""
    low, high = r
    return low if high <= low else _random.randint(low, high)


def padding(r: Range = PADDING_BYTES) -> str:
    """Xray's default padding: 'X' repeated (HPACK's Huffman code for X is 8 bits, so its
    length on the wire is its length in h2 too)."""
    return "X" * pick(r)


def normalize_path(path: str) -> str:
    """The path part, starting and (session and seq being in the path) ending with '/'."""
    path = path.split("?", 1)[0] or "/"
    if not path.startswith("/"):
        path = "/" + path
    return path if path.endswith("/") else path + "/"


@dataclass(frozen=True)
class Xmux:
    """Client connection reuse (Xray's xmux): at most `max_connections` at once (0: no limit,
    then `max_concurrency` requests each), each used for `max_request_times` requests and
    `max_reusable_secs` seconds, `max_reuse_times` sessions (0: no limit)."""

    max_connections: Range = XMUX_MAX_CONNECTIONS
    max_concurrency: Range = (0, 0)
    max_reuse_times: Range = (0, 0)
    max_request_times: Range = XMUX_MAX_REQUEST_TIMES
    max_reusable_secs: Range = XMUX_MAX_REUSABLE_SECS
    keepalive_period: int = 0


@dataclass(frozen=True)
class XhttpSettings:
    """One XHTTP endpoint as both sides configure it: a share link's path, host and mode plus
    its `extra` JSON."""

    path: str = "/"
    host: str | None = None
    mode: str = "auto"
    padding_bytes: Range = PADDING_BYTES
    max_each_post_bytes: int = MAX_EACH_POST_BYTES
    min_posts_interval_ms: Range = MIN_POSTS_INTERVAL_MS
    max_buffered_posts: int = MAX_BUFFERED_POSTS
    stream_up_server_secs: Range = STREAM_UP_SERVER_SECS
    no_sse_header: bool = False
    no_grpc_header: bool = False
    headers: Mapping[str, str] = field(default_factory=dict, hash=False)
    xmux: Xmux = field(default_factory=Xmux)

    def __post_init__(self) -> None:
        object.__setattr__(self, "path", normalize_path(self.path))
        if self.mode not in MODES:
            raise ConfigError(f"xhttp mode {self.mode!r} is not one of {', '.join(MODES)}")
        if any(k.lower() == "host" for k in self.headers):
            raise ConfigError('xhttp "headers" cannot contain "host"; give host instead')
        if min(self.padding_bytes) <= 0:
            raise ConfigError("xhttp xPaddingBytes cannot be disabled (give a range above 0)")
        if self.max_each_post_bytes <= 0:
            raise ConfigError("xhttp scMaxEachPostBytes must be above 0")

    @classmethod
    def parse(
        cls, path: str, host: str | None = None, mode: str | None = None, extra: Any = None
    ) -> XhttpSettings:
        """From a share link's (or a config's) path, host, mode and `extra` (a JSON text or
        a mapping with Xray's camelCase names). Unknown names are ignored, as Xray does."""
        if isinstance(extra, str | bytes):
            try:
                extra = json.loads(extra) if extra else {}
            except ValueError:
                raise ConfigError("xhttp extra is not JSON") from None
        extra = dict(extra or {})
        if not isinstance(extra, dict):
            raise ConfigError("xhttp extra must be a JSON object")
        x = extra.get("xmux") or {}
        if not isinstance(x, dict):
            raise ConfigError("xhttp extra.xmux must be a JSON object")
        if (
            x
            and _range(x.get("maxConnections"), (0, 0))[1]
            and _range(x.get("maxConcurrency"), (0, 0))[1]
        ):
            raise ConfigError("xhttp xmux: maxConnections cannot be given with maxConcurrency")
        xmux = (
            Xmux()
            if not x
            else Xmux(
                max_connections=_range(x.get("maxConnections"), (0, 0)),
                max_concurrency=_range(x.get("maxConcurrency"), (0, 0)),
                max_reuse_times=_range(x.get("cMaxReuseTimes"), (0, 0)),
                max_request_times=_range(x.get("hMaxRequestTimes"), (0, 0)),
                max_reusable_secs=_range(x.get("hMaxReusableSecs"), (0, 0)),
                keepalive_period=int(x.get("hKeepAlivePeriod") or 0),
            )
        )
        headers = extra.get("headers") or {}
        if not isinstance(headers, dict):
            raise ConfigError("xhttp extra.headers must be a JSON object")
        return cls(
            path=path or "/",
            host=host or None,
            mode=mode or "auto",
            padding_bytes=_range(extra.get("xPaddingBytes"), PADDING_BYTES),
            max_each_post_bytes=_range(extra.get("scMaxEachPostBytes"), (MAX_EACH_POST_BYTES,) * 2)[
                1
            ],
            min_posts_interval_ms=_range(extra.get("scMinPostsIntervalMs"), MIN_POSTS_INTERVAL_MS),
            max_buffered_posts=int(extra.get("scMaxBufferedPosts") or MAX_BUFFERED_POSTS),
            stream_up_server_secs=_range(extra.get("scStreamUpServerSecs"), STREAM_UP_SERVER_SECS),
            no_sse_header=bool(extra.get("noSSEHeader", False)),
            no_grpc_header=bool(extra.get("noGRPCHeader", False)),
            headers={str(k): str(v) for k, v in headers.items()},
            xmux=xmux,
        )

    def extra(self) -> dict[str, Any]:
        """Xray's `extra` JSON for what differs from its defaults (empty when nothing does)."""
        out: dict[str, Any] = {}
        if self.padding_bytes != PADDING_BYTES:
            out["xPaddingBytes"] = _format_range(self.padding_bytes)
        if self.max_each_post_bytes != MAX_EACH_POST_BYTES:
            out["scMaxEachPostBytes"] = self.max_each_post_bytes
        if self.min_posts_interval_ms != MIN_POSTS_INTERVAL_MS:
            out["scMinPostsIntervalMs"] = _format_range(self.min_posts_interval_ms)
        if self.max_buffered_posts != MAX_BUFFERED_POSTS:
            out["scMaxBufferedPosts"] = self.max_buffered_posts
        if self.no_sse_header:
            out["noSSEHeader"] = True
        if self.no_grpc_header:
            out["noGRPCHeader"] = True
        if self.headers:
            out["headers"] = dict(self.headers)
        if self.xmux != Xmux():
            x = self.xmux
            out["xmux"] = {
                name: _format_range(value)
                for name, value in (
                    ("maxConnections", x.max_connections),
                    ("maxConcurrency", x.max_concurrency),
                    ("cMaxReuseTimes", x.max_reuse_times),
                    ("hMaxRequestTimes", x.max_request_times),
                    ("hMaxReusableSecs", x.max_reusable_secs),
                )
                if value != (0, 0)
            }
        return out

    def with_mode(self, mode: str) -> XhttpSettings:
        return replace(self, mode=mode)

    def client_mode(self, reality: bool = False) -> str:
        """What a client does in `auto`: packet-up (stream-one under REALITY), as Xray's."""
        if self.mode != "auto":
            return self.mode
        return "stream-one" if reality else "packet-up"


def _range(value: Any, default: Range) -> Range:
    """Xray's Int32Range: a number, "from-to", or {"from": a, "to": b}; 0 or absent: default."""
    if value is None or value == 0 or value == "":
        return default
    try:
        if isinstance(value, dict):
            low, high = int(value.get("from", 0)), int(value.get("to", 0))
        elif isinstance(value, str) and "-" in value.strip("-"):
            a, b = value.split("-", 1)
            low, high = int(a), int(b)
        else:
            low = high = int(value)
    except (TypeError, ValueError):
        raise ConfigError(f"xhttp: {value!r} is not a number or a range like 100-1000") from None
    if high == 0:
        return default
    if low > high or low < 0:
        raise ConfigError(f"xhttp: range {value!r} must go from a low number to a higher one")
    return (low, high)


def _format_range(r: Range) -> str | int:
    return r[0] if r[0] == r[1] else f"{r[0]}-{r[1]}"


def new_session_id() -> str:
    """Xray's default session id: a random UUID in its text form."""
    return str(uuid.uuid4())


# --- server side ----------------------------------------------------------------------------


class Reject(Exception):
    """A request on our path that Xray's server answers with `status` and nothing else."""

    def __init__(self, status: int, why: str) -> None:
        super().__init__(why)
        self.status = status


@dataclass(frozen=True)
class Classified:
    """What one request on the path is: `kind` is "options", "download" (the GET of a
    session, or a stream-one POST when `session` is ""), "stream-up" or "packet"."""

    kind: str
    session: str = ""
    seq: int | None = None


def header(headers: Headers, name: str) -> str | None:
    """The first value of a header (names compared lowercase)."""
    for key, value in headers:
        if key == name:
            return value
    return None


def on_path(settings: XhttpSettings, target: str) -> bool:
    """Does a request target fall under the endpoint's path (where XHTTP, not the site,
    answers)?"""
    path = target.split("?", 1)[0]
    return path.startswith(settings.path) or path == settings.path[:-1]


def host_matches(settings: XhttpSettings, host: str | None) -> bool:
    """Xray's IsValidHTTPHost: the Host (or :authority) without its port equals `host`."""
    if not settings.host:
        return True
    if host is None:
        return False
    name = host.rsplit(":", 1)[0] if not host.endswith("]") else host
    return name.strip("[]").lower() == settings.host.lower()


def padding_of(target: str, headers: Headers) -> str:
    """The padding a request carries: `x_padding` in the Referer's query, or in the request's
    own query when there is no Referer (hub.go ExtractXPaddingFromRequest)."""
    referer = header(headers, "referer")
    source = referer if referer is not None else target
    try:
        query = urlsplit(source).query
    except ValueError:
        return ""
    values = parse_qs(query, keep_blank_values=True).get(PADDING_KEY)
    return values[0] if values else ""


def classify(settings: XhttpSettings, method: str, target: str, headers: Headers) -> Classified:
    """Xray's ServeHTTP decisions for a request already known to be on the path and host.
    Raises Reject with the status Xray answers."""
    if method == "OPTIONS":
        return Classified("options")
    pad = padding_of(target, headers)
    low, high = settings.padding_bytes
    if not low <= len(pad) <= high:
        raise Reject(400, f"padding of {len(pad)} bytes")
    rest = target.split("?", 1)[0][len(settings.path) :]
    parts = rest.split("/") if rest else []
    session = parts[0] if parts else ""
    seq_text = parts[1] if len(parts) > 1 else ""
    mode = settings.mode
    if not session and mode not in ("auto", "stream-one", "stream-up"):
        raise Reject(400, "stream-one is not allowed")
    uplink = seq_text != "" if method == "GET" else True
    if uplink and session:
        if not seq_text:
            if mode not in ("auto", "stream-up"):
                raise Reject(400, "stream-up is not allowed")
            return Classified("stream-up", session)
        if mode not in ("auto", "packet-up"):
            raise Reject(400, "packet-up is not allowed")
        if not seq_text.isdigit() or len(seq_text) > 20:
            raise Reject(500, "seq is not a number")
        seq = int(seq_text)
        if seq >= 1 << 64:
            raise Reject(500, "seq is not a uint64")
        return Classified("packet", session, seq)
    if method == "GET" or not session:
        return Classified("download", session)
    raise Reject(405, f"method {method}")


def response_headers(
    settings: XhttpSettings, kind: str, request_headers: Headers, *, body: bool = True
) -> list[tuple[str, str]]:
    """The headers of a 200 answer (CORS as for Xray's browser dialer, then the padding and
    the stream headers of hub.go)."""
    origin = header(request_headers, "origin")
    out = [("access-control-allow-origin", origin or "*")]
    if kind == "options":
        wanted = header(request_headers, "access-control-request-method")
        out.append(("access-control-allow-methods", wanted or "*"))
        asked = header(request_headers, "access-control-request-headers")
        out.append(("access-control-allow-headers", asked or "*"))
    out.append(("x-padding", padding(settings.padding_bytes)))
    if kind in ("download", "stream-up"):
        out += [("x-accel-buffering", "no"), ("cache-control", "no-store")]
        if kind == "download" and not settings.no_sse_header:
            out.append(("content-type", "text/event-stream"))
    elif kind == "packet" and not body:
        out.append(("cache-control", "no-store"))  # bodiless requests are cached by default
    return out


def error_headers(settings: XhttpSettings, request_headers: Headers) -> list[tuple[str, str]]:
    """Xray writes CORS and padding before it checks anything but the path and host."""
    origin = header(request_headers, "origin")
    return [
        ("access-control-allow-origin", origin or "*"),
        ("x-padding", padding(settings.padding_bytes)),
    ]


class UploadQueue:
    """packet-up's reorder buffer (upload_queue.go): POST bodies come in any order, the
    stream gets them by seq. A seq already passed (a replayed POST) is dropped; more than
    `max_buffered` waiting out of order is an error, as Xray tears such a session down."""

    def __init__(self, max_buffered: int = MAX_BUFFERED_POSTS) -> None:
        self.max_buffered = max_buffered
        self.next_seq = 0
        self._heap: list[tuple[int, bytes]] = []
        self._seqs: set[int] = set()
        self.waiting_bytes = 0

    def push(self, seq: int, payload: bytes) -> list[bytes]:
        """Take one POST's payload; returns what is now in order, to deliver."""
        if seq < self.next_seq or seq in self._seqs:
            return []  # a replay, or a duplicate still waiting
        if seq != self.next_seq:
            if len(self._heap) >= self.max_buffered:
                raise ProtocolError(f"more than {self.max_buffered} posts out of order")
            heapq.heappush(self._heap, (seq, payload))
            self._seqs.add(seq)
            self.waiting_bytes += len(payload)
            return []
        ready = [payload] if payload else []
        self.next_seq += 1
        heap = self._heap
        while heap and heap[0][0] == self.next_seq:
            s, data = heapq.heappop(heap)
            self._seqs.discard(s)
            self.waiting_bytes -= len(data)
            if data:
                ready.append(data)
            self.next_seq += 1
        return ready

    def __len__(self) -> int:
        return len(self._heap)


def forwarded_for(headers: Headers, peer: str | None, trusted: Iterable[Any]) -> str | None:
    """The client's address: the first X-Forwarded-For entry when the peer (a CDN or proxy)
    is one of the `trusted` networks (ipaddress networks), else the peer's own address."""
    import ipaddress

    value = header(headers, "x-forwarded-for")
    if value is None or peer is None:
        return peer
    try:
        address = ipaddress.ip_address(peer)
    except ValueError:
        return peer
    if not any(address in net for net in trusted):
        return peer
    first = value.split(",", 1)[0].strip()
    try:
        return str(ipaddress.ip_address(first))
    except ValueError:
        return peer


# --- client side ----------------------------------------------------------------------------

# Chrome's fetch() headers as Xray's clients send them (utils.TryDefaultHeadersWith "fetch").
CHROME_UA = (
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/144.0.0.0 Safari/537.36"
)
CHROME_UA_CH = '"Not(A:Brand";v="8", "Chromium";v="144", "Google Chrome";v="144"'


def fetch_headers(settings: XhttpSettings) -> list[tuple[str, str]]:
    out = [(k.lower(), v) for k, v in settings.headers.items()]
    if any(k == "user-agent" for k, _ in out):
        return out
    return [
        *out,
        ("sec-ch-ua", CHROME_UA_CH),
        ("sec-ch-ua-mobile", "?0"),
        ("sec-ch-ua-platform", '"Windows"'),
        ("dnt", "1"),
        ("user-agent", CHROME_UA),
        ("accept-language", "en-US,en;q=0.9"),
        ("sec-fetch-mode", "cors"),
        ("sec-fetch-dest", "empty"),
        ("sec-fetch-site", "same-origin"),
        ("priority", "u=1, i"),
        ("cache-control", "no-cache"),
        ("pragma", "no-cache"),
        ("accept", "*/*"),
    ]


def request(
    settings: XhttpSettings,
    kind: str,
    *,
    scheme: str,
    authority: str,
    session: str = "",
    seq: int | None = None,
    length: int | None = None,
) -> tuple[str, str, list[tuple[str, str]]]:
    """(method, target, headers) of a client request: kind "download" (GET), "stream-up",
    "stream-one" or "packet" (POST). Headers as Xray's FillStreamRequest/FillPacketRequest:
    the Referer is the endpoint's URL with only the padding as its query."""
    target = settings.path + session if session else settings.path
    if seq is not None:
        target += f"/{seq}"
    headers = fetch_headers(settings)
    headers.append(
        (
            "referer",
            f"{scheme}://{authority}{settings.path}?{PADDING_KEY}={padding(settings.padding_bytes)}",
        )
    )
    method = "GET" if kind == "download" else "POST"
    if kind in ("stream-up", "stream-one") and not settings.no_grpc_header:
        headers.append(("content-type", "application/grpc"))
    if length is not None:
        headers.append(("content-length", str(length)))
    return method, target, headers
