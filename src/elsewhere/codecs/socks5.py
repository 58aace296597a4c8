"""SOCKS5 as a sans-I/O codec: the server side of RFC 1928 (CONNECT, UDP ASSOCIATE; BIND refused)
with RFC 1929 username/password, the UDP request header of RFC 1928 §7, and a small client side
for tests. Bytes in, events and bytes out; no sockets, no clock."""

from __future__ import annotations

import hmac
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass
from enum import Enum, auto
from typing import Literal

from elsewhere.codecs.address import (
    ATYP_DOMAIN,
    ATYP_IPV4,
    ATYP_IPV6,
    NeedMoreData,
    decode_address,
    encode_address,
)
from elsewhere.errors import AuthenticationError, ProtocolError
from elsewhere.session import Destination

# RFC 1928 §3: version identifier/method selection.
VERSION = 0x05
METHOD_NO_AUTH = 0x00
METHOD_GSSAPI = 0x01
METHOD_USERPASS = 0x02
METHOD_NONE_ACCEPTABLE = 0xFF

# RFC 1928 §4: requests.
CMD_CONNECT = 0x01
CMD_BIND = 0x02
CMD_UDP_ASSOCIATE = 0x03
RSV = 0x00

# RFC 1928 §6: replies.
REP_SUCCEEDED = 0x00
REP_GENERAL_FAILURE = 0x01
REP_CONNECTION_NOT_ALLOWED = 0x02
REP_NETWORK_UNREACHABLE = 0x03
REP_HOST_UNREACHABLE = 0x04
REP_CONNECTION_REFUSED = 0x05
REP_TTL_EXPIRED = 0x06
REP_COMMAND_NOT_SUPPORTED = 0x07
REP_ADDRESS_TYPE_NOT_SUPPORTED = 0x08

# RFC 1929 §2: username/password sub-negotiation.
USERPASS_VERSION = 0x01
USERPASS_SUCCESS = 0x00
USERPASS_FAILURE = 0x01

# RFC 1928 §7: a standalone datagram; 1..127 are fragment positions, which we drop.
FRAG_STANDALONE = 0x00

UNSPECIFIED = Destination("0.0.0.0", 0)

# RFC 9110 §5.6.2 tchar: the first byte of any HTTP method.
_HTTP_TOKEN = frozenset(
    b"!#$%&'*+-.^_`|~0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
)


def detect_protocol(first_bytes: bytes) -> Literal["socks5", "http"] | None:
    """Which protocol a client speaks on the mixed port, from its first byte: SOCKS5 starts with
    VER 5, HTTP with a method token. None means neither (the caller closes)."""
    if not first_bytes:
        return None
    if first_bytes[0] == VERSION:
        return "socks5"
    if first_bytes[0] in _HTTP_TOKEN:
        return "http"
    return None


# Server events.


@dataclass(frozen=True, slots=True)
class Authenticated:
    """Method negotiation is over; `username` is the RFC 1929 user, or None for no-auth."""

    username: str | None


@dataclass(frozen=True, slots=True)
class Request:
    """The client's request. For CONNECT the destination to reach; for UDP ASSOCIATE the address
    the client expects to send datagrams from (often 0.0.0.0:0). Answer with `reply()`."""

    command: int
    destination: Destination


@dataclass(frozen=True, slots=True)
class Failed:
    """The client broke the protocol or was refused. The RFC's answer is already queued in
    `data_to_send()`; send it, then close."""

    reason: str


ServerEvent = Authenticated | Request | Failed


class _ServerState(Enum):
    GREETING = auto()
    AUTH = auto()
    REQUEST = auto()
    WAIT_REPLY = auto()
    ESTABLISHED = auto()
    CLOSED = auto()


def _reply(rep: int, bound: Destination = UNSPECIFIED) -> bytes:
    """VER | REP | RSV | ATYP | BND.ADDR | BND.PORT (RFC 1928 §6)."""
    return bytes((VERSION, rep, RSV)) + encode_address(bound)


class Socks5Server:
    """The server side of one SOCKS5 connection.

    With `users`, RFC 1929 username/password is required; without, only no-auth is accepted.
    `feed()` the client's bytes, send `data_to_send()`, read `next_event()` until None. After a
    `Request`, open the outbound, then `reply()`; bytes that arrived after the request (optimistic
    data) are in `trailing()` and belong to the tunnel."""

    def __init__(self, users: Mapping[str, str] | None = None) -> None:
        self._users = dict(users) if users is not None else None
        self._state = _ServerState.GREETING
        self._buffer = bytearray()
        self._outgoing = bytearray()
        self._events: deque[ServerEvent] = deque()

    # public API

    def feed(self, data: bytes) -> None:
        """Take bytes from the client; parse as far as they go."""
        if self._state is _ServerState.CLOSED:
            return
        self._buffer += data
        while self._step():
            pass

    def next_event(self) -> ServerEvent | None:
        return self._events.popleft() if self._events else None

    def data_to_send(self) -> bytes:
        """Bytes the server must send now (method selection, auth status, replies)."""
        out = bytes(self._outgoing)
        self._outgoing.clear()
        return out

    def reply(self, rep: int, bound: Destination = UNSPECIFIED) -> None:
        """Queue the answer to the `Request`: REP_SUCCEEDED with the bound address (for UDP
        ASSOCIATE, where the client must send its datagrams), or a failure code."""
        if self._state is not _ServerState.WAIT_REPLY:
            raise ProtocolError("reply() is only valid once, after a Request event")
        self._outgoing += _reply(rep, bound)
        if rep == REP_SUCCEEDED:
            self._state = _ServerState.ESTABLISHED
        else:
            # RFC 1928 §6: on failure the server terminates the connection.
            self._state = _ServerState.CLOSED
            self._buffer.clear()

    def trailing(self) -> bytes:
        """Bytes the client sent after its request, to relay into the tunnel; taken once."""
        if self._state not in (_ServerState.WAIT_REPLY, _ServerState.ESTABLISHED):
            return b""
        data = bytes(self._buffer)
        self._buffer.clear()
        return data

    # private

    def _step(self) -> bool:
        """Parse one message if the buffer holds it; True when the state moved on."""
        if self._state is _ServerState.GREETING:
            return self._greeting()
        if self._state is _ServerState.AUTH:
            return self._auth()
        if self._state is _ServerState.REQUEST:
            return self._request()
        return False

    def _fail(self, reason: str, answer: bytes) -> bool:
        self._outgoing += answer
        self._events.append(Failed(reason))
        self._state = _ServerState.CLOSED
        self._buffer.clear()
        return False

    def _greeting(self) -> bool:
        buf = self._buffer
        if not buf:
            return False
        if buf[0] != VERSION:
            # Not SOCKS5 at all: there is no reply a SOCKS4 or HTTP client would understand.
            return self._fail(f"version {buf[0]:#x} is not SOCKS5", b"")
        if len(buf) < 2:
            return False
        count = buf[1]
        if count == 0:
            return self._fail(
                "greeting offers no methods", bytes((VERSION, METHOD_NONE_ACCEPTABLE))
            )
        if len(buf) < 2 + count:
            return False
        methods = bytes(buf[2 : 2 + count])
        del buf[: 2 + count]
        wanted = METHOD_USERPASS if self._users is not None else METHOD_NO_AUTH
        if wanted not in methods:
            return self._fail(
                f"client offers methods {methods.hex()}, needs {wanted:#x}",
                bytes((VERSION, METHOD_NONE_ACCEPTABLE)),
            )
        self._outgoing += bytes((VERSION, wanted))
        if wanted == METHOD_USERPASS:
            self._state = _ServerState.AUTH
        else:
            self._events.append(Authenticated(None))
            self._state = _ServerState.REQUEST
        return True

    def _auth(self) -> bool:
        buf = self._buffer
        refusal = bytes((USERPASS_VERSION, USERPASS_FAILURE))
        if not buf:
            return False
        if buf[0] != USERPASS_VERSION:
            return self._fail(f"username/password version {buf[0]:#x} is not 1", refusal)
        if len(buf) < 2:
            return False
        ulen = buf[1]
        if len(buf) < 3 + ulen:
            return False
        plen = buf[2 + ulen]
        end = 3 + ulen + plen
        if len(buf) < end:
            return False
        raw_user = bytes(buf[2 : 2 + ulen])
        password = bytes(buf[3 + ulen : end])
        del buf[:end]
        username = self._check(raw_user, password)
        if username is None:
            return self._fail("wrong username or password", refusal)
        self._outgoing += bytes((USERPASS_VERSION, USERPASS_SUCCESS))
        self._events.append(Authenticated(username))
        self._state = _ServerState.REQUEST
        return True

    def _check(self, raw_user: bytes, password: bytes) -> str | None:
        """The username when the password matches, else None; compared in constant time."""
        assert self._users is not None
        try:
            username = raw_user.decode()
        except UnicodeDecodeError:
            return None
        expected = self._users.get(username)
        # Compare even for unknown users so timing does not reveal which names exist.
        same = hmac.compare_digest((expected or "\0").encode(), password)
        return username if expected is not None and same else None

    def _request(self) -> bool:
        buf = self._buffer
        if not buf:
            return False
        if buf[0] != VERSION:
            return self._fail(
                f"request version {buf[0]:#x} is not SOCKS5", _reply(REP_GENERAL_FAILURE)
            )
        if len(buf) < 2:
            return False
        command = buf[1]
        if command not in (CMD_CONNECT, CMD_UDP_ASSOCIATE):
            name = "BIND" if command == CMD_BIND else f"command {command:#x}"
            return self._fail(f"{name} is not supported", _reply(REP_COMMAND_NOT_SUPPORTED))
        if len(buf) < 4:
            return False
        if buf[3] not in (ATYP_IPV4, ATYP_DOMAIN, ATYP_IPV6):
            return self._fail(
                f"address type {buf[3]:#x} is not supported", _reply(REP_ADDRESS_TYPE_NOT_SUPPORTED)
            )
        try:
            destination, end = decode_address(buf, 3)
        except NeedMoreData:
            return False
        except ProtocolError as exc:
            return self._fail(f"bad destination: {exc}", _reply(REP_GENERAL_FAILURE))
        del buf[:end]
        self._events.append(Request(command, destination))
        self._state = _ServerState.WAIT_REPLY
        return True


# UDP (RFC 1928 §7).


def encode_udp(destination: Destination, payload: bytes) -> bytes:
    """RSV(2) | FRAG | ATYP | DST.ADDR | DST.PORT | DATA for a standalone datagram."""
    return b"\x00\x00" + bytes((FRAG_STANDALONE,)) + encode_address(destination) + payload


def decode_udp(datagram: bytes) -> tuple[Destination, bytes]:
    """The destination and payload of a client datagram. Raises ProtocolError for fragments
    (FRAG != 0: we do not reassemble, as most implementations) and malformed headers."""
    if len(datagram) < 4:
        raise ProtocolError("UDP request header truncated")
    if datagram[2] != FRAG_STANDALONE:
        raise ProtocolError(f"fragment {datagram[2]} dropped: reassembly is not implemented")
    try:
        destination, end = decode_address(datagram, 3)
    except NeedMoreData as exc:
        # A datagram is whole: a short one is malformed, not incomplete.
        raise ProtocolError(f"UDP request header truncated: {exc}") from None
    return destination, datagram[end:]


# Client side, enough to drive a server byte-exactly in tests.


def client_greeting(username: str | None = None, password: str | None = None) -> bytes:
    """VER | NMETHODS | METHODS: username/password when credentials are given, else no-auth."""
    method = METHOD_USERPASS if username is not None or password is not None else METHOD_NO_AUTH
    return bytes((VERSION, 1, method))


def _userpass_request(username: str, password: str) -> bytes:
    user, secret = username.encode(), password.encode()
    if len(user) > 255 or len(secret) > 255:
        raise ProtocolError("RFC 1929 usernames and passwords are at most 255 bytes")
    return bytes((USERPASS_VERSION, len(user))) + user + bytes((len(secret),)) + secret


@dataclass(frozen=True, slots=True)
class MethodChosen:
    """The server picked an authentication method (METHOD_NONE_ACCEPTABLE: it refused us)."""

    method: int


@dataclass(frozen=True, slots=True)
class Connected:
    """REP succeeded; `bound` is BND.ADDR:BND.PORT."""

    bound: Destination


@dataclass(frozen=True, slots=True)
class Refused:
    """The server answered the request with a failure code."""

    reply: int


ClientEvent = MethodChosen | Connected | Refused


class _ClientState(Enum):
    METHOD = auto()
    AUTH = auto()
    REPLY = auto()
    ESTABLISHED = auto()
    CLOSED = auto()


class Socks5Client:
    """The client side of one SOCKS5 connection: greeting, optional RFC 1929 auth, one request.

    Raises ProtocolError from `feed()` when the server breaks the protocol and
    AuthenticationError when it rejects the credentials."""

    def __init__(
        self,
        destination: Destination,
        command: int = CMD_CONNECT,
        username: str | None = None,
        password: str | None = None,
    ) -> None:
        self._request = bytes((VERSION, command, RSV)) + encode_address(destination)
        self._credentials = (
            (username or "", password or "")
            if username is not None or password is not None
            else None
        )
        self._state = _ClientState.METHOD
        self._buffer = bytearray()
        self._outgoing = bytearray(client_greeting(username, password))
        self._events: deque[ClientEvent] = deque()

    def feed(self, data: bytes) -> None:
        if self._state is _ClientState.CLOSED:
            return
        self._buffer += data
        while self._step():
            pass

    def next_event(self) -> ClientEvent | None:
        return self._events.popleft() if self._events else None

    def data_to_send(self) -> bytes:
        out = bytes(self._outgoing)
        self._outgoing.clear()
        return out

    def trailing(self) -> bytes:
        """Tunnel bytes the server sent after its reply; taken once."""
        if self._state is not _ClientState.ESTABLISHED:
            return b""
        data = bytes(self._buffer)
        self._buffer.clear()
        return data

    def _step(self) -> bool:
        buf = self._buffer
        if self._state is _ClientState.METHOD and len(buf) >= 2:
            if buf[0] != VERSION:
                raise ProtocolError(f"server speaks version {buf[0]:#x}, not SOCKS5")
            method = buf[1]
            del buf[:2]
            self._events.append(MethodChosen(method))
            if method == METHOD_NONE_ACCEPTABLE:
                self._state = _ClientState.CLOSED
            elif method == METHOD_USERPASS and self._credentials is not None:
                self._outgoing += _userpass_request(*self._credentials)
                self._state = _ClientState.AUTH
            elif method == METHOD_NO_AUTH and self._credentials is None:
                self._outgoing += self._request
                self._state = _ClientState.REPLY
            else:
                raise ProtocolError(f"server chose method {method:#x}, which we did not offer")
            return True
        if self._state is _ClientState.AUTH and len(buf) >= 2:
            if buf[0] != USERPASS_VERSION:
                raise ProtocolError(f"username/password status version {buf[0]:#x} is not 1")
            if buf[1] != USERPASS_SUCCESS:
                self._state = _ClientState.CLOSED
                raise AuthenticationError("the SOCKS5 server rejected the username or password")
            del buf[:2]
            self._outgoing += self._request
            self._state = _ClientState.REPLY
            return True
        if self._state is _ClientState.REPLY and len(buf) >= 4:
            if buf[0] != VERSION:
                raise ProtocolError(f"reply version {buf[0]:#x} is not SOCKS5")
            try:
                bound, end = decode_address(buf, 3)
            except NeedMoreData:
                return False
            rep = buf[1]
            del buf[:end]
            if rep == REP_SUCCEEDED:
                self._events.append(Connected(bound))
                self._state = _ClientState.ESTABLISHED
            else:
                self._events.append(Refused(rep))
                self._state = _ClientState.CLOSED
                buf.clear()
            return True
        return False
