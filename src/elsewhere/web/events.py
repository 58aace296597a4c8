"""The events of one HTTP connection, the same for HTTP/1.1 (h11) and HTTP/2 (h2), server and
client side: a request or response head, body data, the end of a body, a stream cut off, the
connection over. A stream is h2's stream id, or the number of the request on an HTTP/1.1
connection."""

from __future__ import annotations

from dataclasses import dataclass

Headers = list[tuple[str, str]]  # names lowercase, in the order received


@dataclass(frozen=True, slots=True)
class Request:
    """A request head (server side). `authority` is Host or :authority."""

    stream: int
    method: str
    target: str
    authority: str | None
    headers: Headers


@dataclass(frozen=True, slots=True)
class Response:
    """A final response head (client side)."""

    stream: int
    status: int
    headers: Headers


@dataclass(frozen=True, slots=True)
class Data:
    stream: int
    data: bytes


@dataclass(frozen=True, slots=True)
class End:
    """The peer's body on `stream` is complete."""

    stream: int


@dataclass(frozen=True, slots=True)
class Reset:
    """The stream ended before its bodies did (h2 RST_STREAM, or the connection went)."""

    stream: int


@dataclass(frozen=True, slots=True)
class Writable:
    """The peer's flow-control window opened: buffered data may go out now (h2)."""


@dataclass(frozen=True, slots=True)
class Closed:
    """The connection is over (the peer closed it, broke the protocol, or said GOAWAY)."""

    error: bool = False


Event = Request | Response | Data | End | Reset | Writable | Closed
