"""Shadowsocks 2022 (SIP022, "Shadowsocks 2022 Edition") TCP streams with the extensible
identity headers of SIP022-2 (EIH), as sans-I/O objects; UDP lives in ss2022_udp.

Request stream:   [salt][EIH 16B]*[fixed header + tag][variable header + tag][len+tag][data+tag]...
Response stream:  [salt][fixed header (with request salt) + tag][data + tag][len+tag][data+tag]...

Keys are base64 pre-shared keys (PSKs) of the method's exact size; each stream derives its own
subkey with BLAKE3 derive_key over key || salt. Time is always passed in as `now` (Unix seconds).
"""

from __future__ import annotations

import base64
import binascii
import os
import secrets
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

from blake3 import blake3
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM, ChaCha20Poly1305

from elsewhere.codecs.address import decode_address, encode_address
from elsewhere.codecs.shadowsocks import seal_chunks
from elsewhere.errors import AuthenticationError, ConfigError, ProtocolError, ReplayError
from elsewhere.session import Destination

Buffer = bytes | bytearray | memoryview
Aead = AESGCM | ChaCha20Poly1305

SESSION_SUBKEY_CONTEXT = "shadowsocks 2022 session subkey"  # SIP022 §2.2
IDENTITY_SUBKEY_CONTEXT = "shadowsocks 2022 identity subkey"  # SIP022-2, TCP
HEADER_TYPE_CLIENT_STREAM = 0  # SIP022 §3.1.3
HEADER_TYPE_SERVER_STREAM = 1
MIN_PADDING_LENGTH = 0
MAX_PADDING_LENGTH = 900
MAX_TIME_DIFFERENCE = 30  # SIP022 §3.1.3: more than 30 s apart MUST be treated as replay
SALT_TTL = 60.0  # SIP022 §3.1.4: store incoming salts for 60 seconds
MAX_PAYLOAD = 0xFFFF  # SIP022 §3.1.2: the 0x3FFF cap of SIP004 does not apply
TAG_SIZE = 16
NONCE_SIZE = 12  # SIP022 §3.1.1: u96 little-endian counter, +1 after every AEAD operation
LENGTH_SIZE = 2
TIMESTAMP_SIZE = 8
IDENTITY_HEADER_SIZE = 16  # SIP022-2: one AES block per identity layer
PSK_HASH_SIZE = 16  # SIP022-2: first 16 bytes of blake3::hash(PSK)
REQUEST_FIXED_HEADER_SIZE = 1 + TIMESTAMP_SIZE + LENGTH_SIZE  # type, timestamp, length
# Once this much consumed data sits at the front of the receive buffer, compact it, so a peer
# trickling bytes does not make us move the unread tail on every call.
COMPACT_AT = 1 << 16
KEY_HINT = "generate one with `elsewhere keys add`"


# --- methods and keys ---------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Method:
    """One SIP022 method: its AEAD and sizes (salt size equals key size, SIP022 §2.1)."""

    name: str
    aead: Callable[[bytes], Aead]
    key_size: int

    @property
    def salt_size(self) -> int:
        return self.key_size

    @property
    def is_aes(self) -> bool:
        """AES methods use an AES block cipher for UDP separate headers and identity headers;
        the ChaCha method has neither (SIP022 §4.1), so it cannot carry EIH."""
        return self.aead is AESGCM


METHODS: dict[str, Method] = {
    m.name: m
    for m in (
        Method("2022-blake3-aes-128-gcm", AESGCM, 16),
        Method("2022-blake3-aes-256-gcm", AESGCM, 32),
        Method("2022-blake3-chacha20-poly1305", ChaCha20Poly1305, 32),
    )
}


def get_method(method: Method | str) -> Method:
    """The Method of that name; ConfigError naming the valid ones otherwise."""
    if isinstance(method, Method):
        return method
    try:
        return METHODS[method]
    except KeyError:
        valid = ", ".join(METHODS)
        raise ConfigError(
            f"unknown Shadowsocks 2022 method {method!r}: use one of {valid}"
        ) from None


def generate_psk(method: Method | str) -> str:
    """A fresh random PSK for the method, base64-encoded as users write it (SIP022 §2.1)."""
    return base64.b64encode(secrets.token_bytes(get_method(method).key_size)).decode()


def decode_psk(method: Method | str, text: str) -> bytes:
    """One base64 PSK; ConfigError with the fix when it is not base64 or of the wrong size."""
    spec = get_method(method)
    need = f"{spec.name} needs a {spec.key_size}-byte key, base64-encoded; {KEY_HINT}"
    try:
        key = base64.b64decode(text.strip(), validate=True)
    except (binascii.Error, ValueError):
        raise ConfigError(f"{need} (the key given is not base64)") from None
    if len(key) != spec.key_size:
        raise ConfigError(f"{need} (the key given is {len(key)} bytes)")
    return key


def decode_psks(method: Method | str, password: str) -> tuple[bytes, ...]:
    """A client's key as written in configs and links: `uPSK`, or `iPSK:uPSK`, or
    `iPSK0:iPSK1:uPSK` through relays (SIP022-2). Identity PSKs come first, the user's last."""
    spec = get_method(method)
    parts = password.split(":")
    if len(parts) > 1 and not spec.is_aes:
        raise ConfigError(
            f"{spec.name} cannot carry identity headers (iPSK:uPSK keys); "
            "use 2022-blake3-aes-128-gcm or 2022-blake3-aes-256-gcm"
        )
    return tuple(decode_psk(spec, part) for part in parts)


def session_subkey(method: Method, psk: Buffer, salt: Buffer) -> bytes:
    """SIP022 §2.2: blake3::derive_key("shadowsocks 2022 session subkey", key + salt)."""
    hasher = blake3(derive_key_context=SESSION_SUBKEY_CONTEXT)
    hasher.update(psk)
    hasher.update(salt)
    return hasher.digest(method.key_size)


def identity_subkey(method: Method, ipsk: Buffer, salt: Buffer) -> bytes:
    """SIP022-2 TCP: blake3::derive_key("shadowsocks 2022 identity subkey", iPSK + salt)."""
    hasher = blake3(derive_key_context=IDENTITY_SUBKEY_CONTEXT)
    hasher.update(ipsk)
    hasher.update(salt)
    return hasher.digest(method.key_size)


def psk_hash(psk: Buffer) -> bytes:
    """SIP022-2: the first 16 bytes of blake3::hash(PSK), how an identity header names a key."""
    return blake3(psk).digest(PSK_HASH_SIZE)


def aes_block(key: bytes) -> Cipher[modes.ECB]:
    """A single-block AES permutation (ECB over exactly one block, as SIP022 uses it)."""
    return Cipher(algorithms.AES(key), modes.ECB())


# --- users (SIP022-2 servers) --------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class UserKey:
    """One user of a multi-user server: the name reported in events, and the user's uPSK."""

    name: str
    psk: bytes

    @property
    def hash(self) -> bytes:
        return psk_hash(self.psk)


class UserTable:
    """A multi-user server's uPSKs, found in O(1) by the PSK hash an identity header carries.

    Adding and removing take effect on the next request or packet: the codecs look users up
    here every time, so revoking a user needs no restart."""

    def __init__(self, method: Method | str, users: Sequence[UserKey] = ()) -> None:
        self.method = get_method(method)
        if not self.method.is_aes:
            raise ConfigError(
                f"{self.method.name} cannot carry identity headers, so it serves one key only; "
                "use an AES method for many users on one port"
            )
        self._by_hash: dict[bytes, UserKey] = {}
        self._hash_by_name: dict[str, bytes] = {}
        for user in users:
            self.add(user.name, user.psk)

    def add(self, name: str, psk: bytes | str) -> UserKey:
        """Add a user, or replace the key of one with that name. `psk` may be base64 text."""
        key = decode_psk(self.method, psk) if isinstance(psk, str) else bytes(psk)
        if len(key) != self.method.key_size:
            raise ConfigError(
                f"{self.method.name} needs a {self.method.key_size}-byte key, base64-encoded; "
                f"{KEY_HINT} (user {name!r} has {len(key)} bytes)"
            )
        digest = psk_hash(key)
        owner = self._by_hash.get(digest)
        if owner is not None and owner.name != name:
            raise ConfigError(
                f"users {owner.name!r} and {name!r} have the same key; give each its own"
            )
        self.remove(name)
        user = UserKey(name, key)
        self._by_hash[digest] = user
        self._hash_by_name[name] = digest
        return user

    def remove(self, name: str) -> bool:
        """Revoke a user; True if there was one of that name."""
        digest = self._hash_by_name.pop(name, None)
        if digest is None:
            return False
        del self._by_hash[digest]
        return True

    def lookup(self, digest: Buffer) -> UserKey | None:
        """The user whose psk_hash() this is, or None."""
        return self._by_hash.get(bytes(digest))

    def __contains__(self, name: object) -> bool:
        return name in self._hash_by_name

    def __len__(self) -> int:
        return len(self._by_hash)

    def __iter__(self) -> Iterator[UserKey]:
        return iter(list(self._by_hash.values()))


# --- replay protection ----------------------------------------------------------------------


class SaltPool:
    """Every salt accepted in the last `ttl` seconds (SIP022 §3.1.4): an exact set, never a
    Bloom filter. Expiry walks a queue in arrival order, so each call is O(1) amortised."""

    def __init__(self, ttl: float = SALT_TTL) -> None:
        self.ttl = ttl
        self._expiry: dict[bytes, float] = {}
        self._queue: deque[tuple[float, bytes]] = deque()

    def check_and_add(self, salt: Buffer, now: float) -> None:
        """Remember a salt, or raise ReplayError when it is still remembered."""
        key = bytes(salt)
        self._expire(now)
        seen = self._expiry.get(key)
        if seen is not None and seen > now:
            raise ReplayError("salt seen in the last minute")
        expiry = now + self.ttl
        self._expiry[key] = expiry
        self._queue.append((expiry, key))

    def __contains__(self, salt: object) -> bool:
        return isinstance(salt, bytes | bytearray | memoryview) and bytes(salt) in self._expiry

    def __len__(self) -> int:
        return len(self._expiry)

    def _expire(self, now: float) -> None:
        queue = self._queue
        expiry = self._expiry
        while queue and queue[0][0] <= now:
            when, key = queue.popleft()
            # The same salt may have been re-added later (after it expired); keep that one.
            if expiry.get(key) == when:
                del expiry[key]


class TimestampError(ReplayError):
    """A header whose timestamp is more than 30 s from our clock (SIP022 §3.1.3 treats it as a
    replay). `skew` is peer time minus ours, for the client's "check the system clock" hint."""

    def __init__(self, skew: float) -> None:
        super().__init__(
            f"timestamp {skew:+.0f} s from our clock, more than {MAX_TIME_DIFFERENCE} s"
        )
        self.skew = skew


def check_timestamp(timestamp: int, now: float) -> None:
    skew = timestamp - int(now)
    if abs(skew) > MAX_TIME_DIFFERENCE:
        raise TimestampError(skew)


# --- events ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Request:
    """The server decoded a client's request header: where to connect, the first payload
    (possibly b""), and which user sent it (None on a single-key server)."""

    destination: Destination
    payload: bytes
    user: str | None


@dataclass(frozen=True, slots=True)
class ResponseHeader:
    """The client accepted the server's response header (its salt, type, timestamp, and our
    request salt). The payload that came with it follows as Data."""


@dataclass(frozen=True, slots=True)
class Data:
    """Payload of one chunk, in order."""

    payload: bytes


Event = Request | ResponseHeader | Data


# --- chunked AEAD stream --------------------------------------------------------------------


def _nonce(counter: int) -> bytes:
    return counter.to_bytes(NONCE_SIZE, "little")


class _Sealer:
    """Encrypts one direction's chunks under one session subkey, counting nonces."""

    def __init__(self, aead: Aead) -> None:
        self._seal = aead.encrypt
        self._seal_into = aead.encrypt_into
        self._counter = 0

    def seal(self, plaintext: Buffer) -> bytes:
        counter = self._counter
        self._counter = counter + 1
        return self._seal(_nonce(counter), plaintext, None)

    def encode(self, data: Buffer) -> bytearray:
        """[len][len tag][payload][payload tag]... for `data`, sealed straight into one buffer
        (encrypt_into: no per-chunk bytes objects, no join)."""
        out, self._counter = seal_chunks(
            self._seal_into, self._counter, memoryview(data).cast("B"), MAX_PAYLOAD
        )
        return out

    def chunks(self, data: Buffer, out: list[bytes]) -> None:
        """Append [len][len tag][payload][payload tag] pieces for `data` to `out`."""
        view = memoryview(data).cast("B")
        seal = self._seal
        counter = self._counter
        for start in range(0, len(view), MAX_PAYLOAD):
            piece = view[start : start + MAX_PAYLOAD]
            out.append(seal(_nonce(counter), len(piece).to_bytes(LENGTH_SIZE, "big"), None))
            out.append(seal(_nonce(counter + 1), piece, None))
            counter += 2
        self._counter = counter


class _Receiver:
    """Buffers one direction of a stream and decrypts it: first the side's header(s), then
    length/payload chunk pairs. A failure is final: every later feed raises again, so an adapter
    that keeps reading (stealth rules) can never get plaintext by accident."""

    def __init__(self) -> None:
        self._buffer = bytearray()
        self._offset = 0
        self._open: Callable[[bytes, Buffer, None], bytes] | None = None
        self._counter = 0
        self._length: int | None = None  # payload chunk length read, chunk not yet complete
        self._failure: ProtocolError | None = None

    def feed(self, data: Buffer, *, now: float) -> list[Event]:
        """Bytes from the wire, in any fragmentation; the events they complete, in order.

        Raises AuthenticationError, ReplayError (TimestampError) or ProtocolError; nothing
        about how far parsing got is exposed, and every later call raises again."""
        if self._failure is not None:
            raise self._failure
        events: list[Event] = []
        buffer = self._buffer
        try:
            if self._offset == len(buffer):
                # Nothing pending: parse the caller's bytes in place, keep only the tail.
                buffer.clear()
                self._offset = 0
                with memoryview(data).cast("B") as view:
                    used = self._consume(view, 0, now, events)
                    if used < len(view):
                        buffer += view[used:]
                return events
            buffer += data
            with memoryview(buffer) as view:
                self._offset = self._consume(view, self._offset, now, events)
            if self._offset == len(buffer):
                buffer.clear()
                self._offset = 0
            elif self._offset >= COMPACT_AT:
                del buffer[: self._offset]
                self._offset = 0
            return events
        except ProtocolError as exc:
            self._failure = exc
            buffer.clear()
            self._offset = 0
            raise

    def _consume(self, view: memoryview, pos: int, now: float, events: list[Event]) -> int:
        if self._open is None:
            pos = self._header(view, pos, now, events)
            if self._open is None:
                return pos
        return self._chunks(view, pos, events)

    def _header(self, view: memoryview, pos: int, now: float, events: list[Event]) -> int:
        """Parse the side's headers; set self._open (and self._length) once they are done."""
        raise NotImplementedError

    def _start(self, aead: Aead) -> None:
        self._open = aead.decrypt
        self._counter = 0

    def _decrypt(self, ciphertext: Buffer) -> bytes:
        assert self._open is not None
        counter = self._counter
        self._counter = counter + 1
        try:
            return self._open(_nonce(counter), ciphertext, None)
        except InvalidTag:
            raise AuthenticationError("chunk failed authentication") from None

    def _chunks(self, view: memoryview, pos: int, events: list[Event]) -> int:
        open_ = self._open
        assert open_ is not None
        end = len(view)
        counter = self._counter
        length = self._length
        try:
            while True:
                if length is None:
                    stop = pos + LENGTH_SIZE + TAG_SIZE
                    if stop > end:
                        break
                    length = int.from_bytes(open_(_nonce(counter), view[pos:stop], None), "big")
                    counter += 1
                    pos = stop
                stop = pos + length + TAG_SIZE
                if stop > end:
                    break
                payload = open_(_nonce(counter), view[pos:stop], None)
                counter += 1
                pos = stop
                length = None
                if payload:
                    events.append(Data(payload))
        except InvalidTag:
            raise AuthenticationError("chunk failed authentication") from None
        finally:
            self._counter = counter
            self._length = length
        return pos


# --- client ---------------------------------------------------------------------------------


class TcpClient(_Receiver):
    """The client end of one SIP022 TCP connection.

    `psks` is decode_psks(method, password): identity PSKs first (one identity header each),
    the user's PSK last. Call request() once, first; its bytes must leave in one write."""

    def __init__(
        self,
        method: Method | str,
        psks: Sequence[bytes],
        *,
        salt_pool: SaltPool | None = None,
    ) -> None:
        super().__init__()
        self.method = get_method(method)
        if not psks:
            raise ConfigError(f"{self.method.name} needs a key; {KEY_HINT}")
        for psk in psks:
            if len(psk) != self.method.key_size:
                raise ConfigError(
                    f"{self.method.name} needs a {self.method.key_size}-byte key, "
                    f"base64-encoded; {KEY_HINT}"
                )
        if len(psks) > 1 and not self.method.is_aes:
            raise ConfigError(f"{self.method.name} cannot carry identity headers (iPSK:uPSK)")
        self._psks = tuple(bytes(p) for p in psks)
        self._salt_pool = salt_pool
        self._sealer: _Sealer | None = None
        self.request_salt: bytes | None = None

    def request(
        self,
        destination: Destination,
        payload: Buffer = b"",
        *,
        now: float,
        padding: int | None = None,
    ) -> bytes:
        """Salt, identity headers, both request header chunks with the initial payload (and
        chunks for any payload that does not fit): all of it for one write (SIP022 §3.1.3).

        `padding` defaults to 1..900 random bytes when the payload is shorter than 900 bytes,
        so that a short first payload does not show its length; 0 is refused without payload."""
        if self._sealer is not None:
            raise RuntimeError("request() already called on this connection")
        method = self.method
        address = encode_address(destination)
        view = memoryview(payload).cast("B")
        if padding is None:
            padding = (
                1 + secrets.randbelow(MAX_PADDING_LENGTH) if len(view) < MAX_PADDING_LENGTH else 0
            )
        if not MIN_PADDING_LENGTH <= padding <= MAX_PADDING_LENGTH:
            raise ValueError(f"padding must be {MIN_PADDING_LENGTH}..{MAX_PADDING_LENGTH}")
        if padding == 0 and not view:
            raise ValueError("SIP022 needs padding in a request header without payload")
        room = MAX_PAYLOAD - len(address) - LENGTH_SIZE - padding
        first, rest = view[:room], view[room:]

        salt = os.urandom(method.salt_size)
        out: list[bytes] = [salt]
        psks = self._psks
        for index in range(len(psks) - 1):
            encryptor = aes_block(identity_subkey(method, psks[index], salt)).encryptor()
            out.append(encryptor.update(psk_hash(psks[index + 1])) + encryptor.finalize())
        sealer = _Sealer(method.aead(session_subkey(method, psks[-1], salt)))
        variable = b"".join(
            (address, padding.to_bytes(LENGTH_SIZE, "big"), os.urandom(padding), first)
        )
        fixed = b"".join(
            (
                bytes((HEADER_TYPE_CLIENT_STREAM,)),
                int(now).to_bytes(TIMESTAMP_SIZE, "big"),
                len(variable).to_bytes(LENGTH_SIZE, "big"),
            )
        )
        out.append(sealer.seal(fixed))
        out.append(sealer.seal(variable))
        sealer.chunks(rest, out)
        self._sealer = sealer
        self.request_salt = salt
        return b"".join(out)

    def send(self, data: Buffer) -> bytearray:
        """Chunks for more payload (empty for empty data), in a fresh buffer the caller owns."""
        if self._sealer is None:
            raise RuntimeError("request() must come first")
        return self._sealer.encode(data)

    def _header(self, view: memoryview, pos: int, now: float, events: list[Event]) -> int:
        if self.request_salt is None:
            raise ProtocolError("server sent data before the request")
        method = self.method
        salt_size = method.salt_size
        fixed_size = 1 + TIMESTAMP_SIZE + salt_size + LENGTH_SIZE
        stop = pos + salt_size + fixed_size + TAG_SIZE
        if stop > len(view):
            return pos
        salt = view[pos : pos + salt_size]
        self._start(method.aead(session_subkey(method, self._psks[-1], salt)))
        header = self._decrypt(view[pos + salt_size : stop])
        if header[0] != HEADER_TYPE_SERVER_STREAM:
            raise ProtocolError(f"response header type {header[0]}, expected 1")
        check_timestamp(int.from_bytes(header[1 : 1 + TIMESTAMP_SIZE], "big"), now)
        if header[1 + TIMESTAMP_SIZE : 1 + TIMESTAMP_SIZE + salt_size] != self.request_salt:
            raise AuthenticationError("response is not for our request (request salt differs)")
        if self._salt_pool is not None:
            self._salt_pool.check_and_add(salt, now)
        self._length = int.from_bytes(header[-LENGTH_SIZE:], "big")
        events.append(ResponseHeader())
        return stop


# --- server ---------------------------------------------------------------------------------


class TcpServer(_Receiver):
    """The server end of one SIP022 TCP connection.

    Single key: `psk` is the key. Many users on one port (SIP022-2): `psk` is the identity PSK
    and `users` the table of uPSKs; each request then carries one identity header. `salt_pool`
    is shared by every connection of the inbound. On any error raised by feed() the adapter
    must not show how many bytes were consumed (SIP022 §3.1.3 "Detection Prevention")."""

    def __init__(
        self,
        method: Method | str,
        psk: bytes,
        *,
        salt_pool: SaltPool,
        users: UserTable | None = None,
    ) -> None:
        super().__init__()
        self.method = get_method(method)
        if len(psk) != self.method.key_size:
            raise ConfigError(
                f"{self.method.name} needs a {self.method.key_size}-byte key, base64-encoded; "
                f"{KEY_HINT}"
            )
        if users is not None and users.method != self.method:
            raise ConfigError(
                f"user table is for {users.method.name}, server is {self.method.name}"
            )
        if users is not None and not self.method.is_aes:
            raise ConfigError(f"{self.method.name} cannot carry identity headers")
        self._psk = bytes(psk)
        self._users = users
        self._salt_pool = salt_pool
        self._request_salt: bytes | None = None
        self._user_psk: bytes | None = None
        self._variable_length: int | None = None
        self._sealer: _Sealer | None = None
        self.user: str | None = None
        self.destination: Destination | None = None

    def send(self, data: Buffer, *, now: float) -> bytes | bytearray:
        """Response bytes for `data`. The first call also carries the salt and the response
        header (SIP022 §3.1.3: the header always goes with payload), so call it once there is
        something to send; empty for empty data after that."""
        if self._user_psk is None or self._request_salt is None:
            raise RuntimeError("no request decoded yet")
        if self._sealer is not None:
            return self._sealer.encode(data)
        view = memoryview(data).cast("B")
        method = self.method
        salt = os.urandom(method.salt_size)
        sealer = _Sealer(method.aead(session_subkey(method, self._user_psk, salt)))
        first, view = view[:MAX_PAYLOAD], view[MAX_PAYLOAD:]
        header = b"".join(
            (
                bytes((HEADER_TYPE_SERVER_STREAM,)),
                int(now).to_bytes(TIMESTAMP_SIZE, "big"),
                self._request_salt,
                len(first).to_bytes(LENGTH_SIZE, "big"),
            )
        )
        out = [salt, sealer.seal(header), sealer.seal(first)]
        self._sealer = sealer
        sealer.chunks(view, out)
        return b"".join(out)

    def _header(self, view: memoryview, pos: int, now: float, events: list[Event]) -> int:
        if self._variable_length is None:
            pos = self._fixed_header(view, pos, now)
            if self._variable_length is None:
                return pos
        stop = pos + self._variable_length + TAG_SIZE
        if stop > len(view):
            return pos
        header = self._decrypt(view[pos:stop])
        try:
            destination, at = decode_address(header)
        except ProtocolError as exc:  # NeedMoreData too: the address must fit in the chunk
            raise ProtocolError(f"request address: {exc}") from None
        if at + LENGTH_SIZE > len(header):
            raise ProtocolError("request header ends before the padding length")
        padding = int.from_bytes(header[at : at + LENGTH_SIZE], "big")
        at += LENGTH_SIZE + padding
        if at > len(header):
            raise ProtocolError("request padding runs past the header chunk")
        payload = header[at:]
        if padding == 0 and not payload:
            raise ProtocolError("request header has neither padding nor payload")
        self.destination = destination
        events.append(Request(destination, payload, self.user))
        self._length = None
        return stop

    def _fixed_header(self, view: memoryview, pos: int, now: float) -> int:
        method = self.method
        salt_size = method.salt_size
        identity = IDENTITY_HEADER_SIZE if self._users is not None else 0
        stop = pos + salt_size + identity + REQUEST_FIXED_HEADER_SIZE + TAG_SIZE
        if stop > len(view):
            return pos
        salt = bytes(view[pos : pos + salt_size])
        user_psk = self._psk
        user_name = None
        if self._users is not None:
            decryptor = aes_block(identity_subkey(method, self._psk, salt)).decryptor()
            at = pos + salt_size
            digest = decryptor.update(view[at : at + IDENTITY_HEADER_SIZE]) + decryptor.finalize()
            user = self._users.lookup(digest)
            if user is None:
                raise AuthenticationError("identity header names no user of this server")
            user_psk = user.psk
            user_name = user.name
        self._start(method.aead(session_subkey(method, user_psk, salt)))
        header = self._decrypt(view[stop - REQUEST_FIXED_HEADER_SIZE - TAG_SIZE : stop])
        if header[0] != HEADER_TYPE_CLIENT_STREAM:
            raise ProtocolError(f"request header type {header[0]}, expected 0")
        check_timestamp(int.from_bytes(header[1 : 1 + TIMESTAMP_SIZE], "big"), now)
        self._salt_pool.check_and_add(salt, now)
        length = int.from_bytes(header[1 + TIMESTAMP_SIZE :], "big")
        if length == 0:
            raise ProtocolError("request variable header of length 0")
        self._request_salt = salt
        self._user_psk = user_psk
        self.user = user_name
        self._variable_length = length
        return stop

    def _consume(self, view: memoryview, pos: int, now: float, events: list[Event]) -> int:
        # The server's AEAD is set by the fixed header, but chunks start after the variable one.
        if self.destination is None:
            pos = self._header(view, pos, now, events)
            if self.destination is None:
                return pos
        return self._chunks(view, pos, events)
