"""Shadowsocks 2022 UDP (SIP022 §3.2 and §4.1) with SIP022-2 identity headers, sans-I/O.

AES methods:  [AES(PSK, session ID | packet ID)][EIH 16B]*[AEAD(session subkey, body) + tag]
              nonce = separate header[4:16], session subkey = derive(PSK + session ID)
ChaCha:       [24-byte random nonce][XChaCha20-Poly1305(PSK, session ID | packet ID | body)]
Body:         type, timestamp, (server->client: client session ID), padding, address, payload

Servers key sessions on the client session ID, so a session survives a change of the client's
address: the adapter keeps its NAT entry under ClientPacket.session_id and replies to the last
address a valid packet came from. Packet IDs pass a sliding-window replay filter.
"""

from __future__ import annotations

import os
import secrets
import struct
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305

from elsewhere.codecs.address import decode_address, encode_address
from elsewhere.codecs.ss2022 import (
    KEY_HINT,
    LENGTH_SIZE,
    MAX_PADDING_LENGTH,
    TAG_SIZE,
    TIMESTAMP_SIZE,
    Aead,
    Buffer,
    Method,
    UserKey,
    UserTable,
    aes_block,
    check_timestamp,
    get_method,
    psk_hash,
    session_subkey,
)
from elsewhere.errors import AuthenticationError, ConfigError, ProtocolError, ReplayError
from elsewhere.session import Destination

HEADER_TYPE_CLIENT_PACKET = 0  # SIP022 §3.2.3
HEADER_TYPE_SERVER_PACKET = 1
SESSION_ID_SIZE = 8  # SIP022 §3.2.2
PACKET_ID_SIZE = 8
SEPARATE_HEADER_SIZE = SESSION_ID_SIZE + PACKET_ID_SIZE  # one AES block
IDENTITY_HEADER_SIZE = 16  # SIP022-2
XCHACHA_NONCE_SIZE = 24  # SIP022 §4.1
HCHACHA_INPUT_SIZE = 16  # draft-irtf-cfrg-xchacha §2.2: first 16 nonce bytes go to HChaCha20
WINDOW_SIZE = 2048  # packet IDs remembered behind the newest (as WireGuard's filter, RFC 6479)
UDP_SESSION_TIMEOUT = 300.0  # idle NAT entries and server sessions expire after this long
DNS_PORT = 53  # pad DNS packets by default: their sizes are well known to censors
MAX_PACKET_ID = (1 << 64) - 1
_WORD = 0xFFFFFFFF
_SIGMA = struct.unpack("<4I", b"expand 32-byte k")  # RFC 8439 §2.3 state constants


# --- XChaCha20-Poly1305 from cryptography's ChaCha20 and ChaCha20Poly1305 -------------------


def hchacha20(key: bytes, nonce: Buffer) -> bytes:
    """HChaCha20 (draft-irtf-cfrg-xchacha §2.2): words 0-3 and 12-15 of the ChaCha20 state
    after 20 rounds, without the final addition of the input state.

    cryptography's ChaCha20 takes the 16 bytes that fill state words 12-15 (counter and nonce)
    and returns keystream = rounds(state) + state; one block of it, minus the known input words
    (constants, and the 16 input bytes), is exactly the HChaCha20 output."""
    block = Cipher(algorithms.ChaCha20(key, bytes(nonce)), mode=None).encryptor().update(bytes(64))
    words = struct.unpack("<16I", block)
    inputs = struct.unpack("<4I", nonce)
    return struct.pack(
        "<8I",
        (words[0] - _SIGMA[0]) & _WORD,
        (words[1] - _SIGMA[1]) & _WORD,
        (words[2] - _SIGMA[2]) & _WORD,
        (words[3] - _SIGMA[3]) & _WORD,
        (words[12] - inputs[0]) & _WORD,
        (words[13] - inputs[1]) & _WORD,
        (words[14] - inputs[2]) & _WORD,
        (words[15] - inputs[3]) & _WORD,
    )


class XChaCha20Poly1305:
    """AEAD_XChaCha20_Poly1305 (draft-irtf-cfrg-xchacha §2): ChaCha20-Poly1305 keyed with
    HChaCha20(key, nonce[:16]), nonce 0x00000000 || nonce[16:24]."""

    def __init__(self, key: bytes) -> None:
        if len(key) != 32:
            raise ValueError("XChaCha20-Poly1305 key must be 32 bytes")
        self._key = bytes(key)

    def _aead(self, nonce: Buffer) -> tuple[ChaCha20Poly1305, bytes]:
        if len(nonce) != XCHACHA_NONCE_SIZE:
            raise ValueError("XChaCha20-Poly1305 nonce must be 24 bytes")
        view = memoryview(nonce).cast("B")
        subkey = hchacha20(self._key, view[:HCHACHA_INPUT_SIZE])
        return ChaCha20Poly1305(subkey), b"\x00\x00\x00\x00" + bytes(view[HCHACHA_INPUT_SIZE:])

    def encrypt(self, nonce: Buffer, data: Buffer, associated_data: Buffer | None) -> bytes:
        aead, short_nonce = self._aead(nonce)
        return aead.encrypt(short_nonce, data, associated_data)

    def decrypt(self, nonce: Buffer, data: Buffer, associated_data: Buffer | None) -> bytes:
        """Plaintext; raises cryptography's InvalidTag when the tag does not verify."""
        aead, short_nonce = self._aead(nonce)
        return aead.decrypt(short_nonce, data, associated_data)


# --- replay filter --------------------------------------------------------------------------


class SlidingWindow:
    """Packet-ID replay filter (SIP022 §3.2.4; RFC 6479's idea): the newest ID seen and a bitmap
    of the `size` IDs behind it, kept in one Python int (shifts and masks, no per-bit loop).

    check() before the costly decryption, accept() once the packet is authentic."""

    def __init__(self, size: int = WINDOW_SIZE) -> None:
        self.size = size
        self._mask = (1 << size) - 1
        self._newest = -1
        self._bits = 0  # bit i set: packet ID (newest - i) was accepted

    def check(self, packet_id: int) -> bool:
        """True when the ID is new and not too old to tell."""
        if packet_id > self._newest:
            return True
        behind = self._newest - packet_id
        return behind < self.size and not (self._bits >> behind) & 1

    def accept(self, packet_id: int) -> None:
        """Record an authentic packet's ID (which check() passed)."""
        if packet_id > self._newest:
            shift = packet_id - self._newest
            self._bits = ((self._bits << shift) | 1) & self._mask if shift < self.size else 1
            self._newest = packet_id
        else:
            self._bits |= 1 << (self._newest - packet_id)


# --- values ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ClientPacket:
    """A packet the server accepted. `session_id` (the client session ID, 8 bytes) is the NAT
    key; `user` is the name from the UserTable (None on a single-key server)."""

    session_id: bytes
    packet_id: int
    destination: Destination
    payload: bytes
    user: str | None


@dataclass(frozen=True, slots=True)
class ServerPacket:
    """A packet the client accepted: where the payload came from, and the server session."""

    session_id: bytes
    packet_id: int
    source: Destination
    payload: bytes


def _xor16(a: Buffer, b: Buffer) -> bytes:
    return (int.from_bytes(a, "big") ^ int.from_bytes(b, "big")).to_bytes(16, "big")


def _default_padding(port: int, payload: int) -> int:
    if port == DNS_PORT and payload < MAX_PADDING_LENGTH:
        return 1 + secrets.randbelow(MAX_PADDING_LENGTH - payload)
    return 0


def _main_header(
    kind: int,
    now: float,
    client_session: bytes,
    address: Destination,
    padding: int | None,
    payload: int,
) -> bytes:
    """type | timestamp | [client session ID] | padding length | padding | address."""
    if padding is None:
        padding = _default_padding(address.port, payload)
    if not 0 <= padding <= MAX_PADDING_LENGTH:
        raise ValueError(f"padding must be 0..{MAX_PADDING_LENGTH}")
    return b"".join(
        (
            bytes((kind,)),
            int(now).to_bytes(TIMESTAMP_SIZE, "big"),
            client_session,
            padding.to_bytes(LENGTH_SIZE, "big"),
            os.urandom(padding),
            encode_address(address),
        )
    )


def _parse_body(
    body: bytes, at: int, kind: int, now: float, client_session: bytes | None
) -> tuple[Destination, bytes]:
    """Check a decrypted main header starting at `at`; return its address and the payload.
    `client_session` is the ID a server->client header must carry (None for client->server)."""
    fixed = 1 + TIMESTAMP_SIZE + (SESSION_ID_SIZE if client_session is not None else 0)
    if len(body) < at + fixed + LENGTH_SIZE:
        raise ProtocolError("packet body shorter than its header")
    if body[at] != kind:
        raise ProtocolError(f"packet header type {body[at]}, expected {kind}")
    check_timestamp(int.from_bytes(body[at + 1 : at + 1 + TIMESTAMP_SIZE], "big"), now)
    at += 1 + TIMESTAMP_SIZE
    if client_session is not None:
        if body[at : at + SESSION_ID_SIZE] != client_session:
            raise ProtocolError("server packet names another client session")
        at += SESSION_ID_SIZE
    padding = int.from_bytes(body[at : at + LENGTH_SIZE], "big")
    at += LENGTH_SIZE + padding
    try:
        destination, at = decode_address(body, at)
    except ProtocolError as exc:  # NeedMoreData too: a packet is complete or nothing
        raise ProtocolError(f"packet address: {exc}") from None
    return destination, body[at:]


def _check_keys(method: Method, psks: Sequence[bytes]) -> tuple[bytes, ...]:
    if not psks:
        raise ConfigError(f"{method.name} needs a key; {KEY_HINT}")
    for psk in psks:
        if len(psk) != method.key_size:
            raise ConfigError(
                f"{method.name} needs a {method.key_size}-byte key, base64-encoded; {KEY_HINT}"
            )
    if len(psks) > 1 and not method.is_aes:
        raise ConfigError(f"{method.name} cannot carry identity headers (iPSK:uPSK)")
    return tuple(bytes(p) for p in psks)


def _open(aead: Aead | XChaCha20Poly1305, nonce: Buffer, data: Buffer) -> bytes:
    try:
        return aead.decrypt(nonce, data, None)
    except InvalidTag:
        raise AuthenticationError("packet failed authentication") from None


# --- server ---------------------------------------------------------------------------------


class _ServerSession:
    """One client session on the server: its ciphers, replay window and reply counter."""

    __slots__ = (
        "client_id",
        "header_encryptor",
        "last_seen",
        "next_packet_id",
        "open",
        "psk",
        "seal",
        "server_id",
        "user",
        "window",
    )

    def __init__(self, method: Method, client_id: bytes, psk: bytes, user: UserKey | None) -> None:
        self.client_id = client_id
        self.psk = psk
        self.user = user
        self.window = SlidingWindow()
        self.last_seen = 0.0
        server_id = os.urandom(SESSION_ID_SIZE)
        while server_id == client_id:  # SIP022 §3.2.2: MUST NOT reuse the client's ID
            server_id = os.urandom(SESSION_ID_SIZE)
        self.server_id = server_id
        self.next_packet_id = 0
        self.open: Aead | None = None
        self.seal: Aead | None = None
        self.header_encryptor = None
        if method.is_aes:
            self.open = method.aead(session_subkey(method, psk, client_id))
            self.seal = method.aead(session_subkey(method, psk, server_id))
            self.header_encryptor = aes_block(psk).encryptor()


class UdpServer:
    """The server side of SIP022 UDP for one inbound: every client session, keyed on the
    client session ID.

    Single key: `psk` is the key. Many users (SIP022-2): `psk` is the identity PSK and `users`
    the table of uPSKs; every packet's identity header is looked up again, so a revoked user's
    packets fail at once. receive() raises AuthenticationError, ReplayError (TimestampError)
    or ProtocolError for a packet to drop; the adapter answers none of them."""

    def __init__(self, method: Method | str, psk: bytes, *, users: UserTable | None = None) -> None:
        self.method = get_method(method)
        (self._psk,) = _check_keys(self.method, [psk])
        if users is not None:
            if not self.method.is_aes:
                raise ConfigError(f"{self.method.name} cannot carry identity headers")
            if users.method != self.method:
                raise ConfigError(
                    f"user table is for {users.method.name}, server is {self.method.name}"
                )
        self._users = users
        self._sessions: OrderedDict[bytes, _ServerSession] = OrderedDict()
        if self.method.is_aes:
            self._header_decryptor = aes_block(self._psk).decryptor()
        else:
            self._xchacha = XChaCha20Poly1305(self._psk)

    def receive(self, packet: Buffer, *, now: float) -> ClientPacket:
        """Decrypt and check one packet from a client."""
        view = memoryview(packet).cast("B")
        if self.method.is_aes:
            return self._receive_aes(view, now)
        return self._receive_chacha(view, now)

    def _receive_aes(self, view: memoryview, now: float) -> ClientPacket:
        identity = IDENTITY_HEADER_SIZE if self._users is not None else 0
        body_at = SEPARATE_HEADER_SIZE + identity
        if len(view) < body_at + TAG_SIZE:
            raise ProtocolError(f"packet of {len(view)} bytes is too short")
        separate = self._header_decryptor.update(view[:SEPARATE_HEADER_SIZE])
        client_id = separate[:SESSION_ID_SIZE]
        packet_id = int.from_bytes(separate[SESSION_ID_SIZE:], "big")
        psk, user = self._psk, None
        if self._users is not None:
            sealed = self._header_decryptor.update(view[SEPARATE_HEADER_SIZE:body_at])
            user = self._users.lookup(_xor16(sealed, separate))
            if user is None:
                raise AuthenticationError("identity header names no user of this server")
            psk = user.psk
        session = self._sessions.get(client_id)
        if session is not None and session.psk != psk:
            raise AuthenticationError("identity header names another user than the session's")
        if session is not None and not session.window.check(packet_id):
            raise ReplayError(f"packet ID {packet_id} replayed or too old")
        fresh = session is None
        if session is None:
            session = _ServerSession(self.method, client_id, psk, user)
        assert session.open is not None
        body = _open(session.open, separate[4:], view[body_at:])
        destination, payload = _parse_body(body, 0, HEADER_TYPE_CLIENT_PACKET, now, None)
        return self._accept(session, fresh, packet_id, destination, payload, now)

    def _receive_chacha(self, view: memoryview, now: float) -> ClientPacket:
        if len(view) < XCHACHA_NONCE_SIZE + SEPARATE_HEADER_SIZE + TAG_SIZE:
            raise ProtocolError(f"packet of {len(view)} bytes is too short")
        body = _open(self._xchacha, view[:XCHACHA_NONCE_SIZE], view[XCHACHA_NONCE_SIZE:])
        client_id = body[:SESSION_ID_SIZE]
        packet_id = int.from_bytes(body[SESSION_ID_SIZE:SEPARATE_HEADER_SIZE], "big")
        session = self._sessions.get(client_id)
        if session is not None and not session.window.check(packet_id):
            raise ReplayError(f"packet ID {packet_id} replayed or too old")
        fresh = session is None
        if session is None:
            session = _ServerSession(self.method, client_id, self._psk, None)
        destination, payload = _parse_body(
            body, SEPARATE_HEADER_SIZE, HEADER_TYPE_CLIENT_PACKET, now, None
        )
        return self._accept(session, fresh, packet_id, destination, payload, now)

    def _accept(
        self,
        session: _ServerSession,
        fresh: bool,
        packet_id: int,
        destination: Destination,
        payload: bytes,
        now: float,
    ) -> ClientPacket:
        # Only an authentic, well-formed packet creates a session or moves its window.
        if fresh:
            self._sessions[session.client_id] = session
        else:
            self._sessions.move_to_end(session.client_id)
        session.window.accept(packet_id)
        session.last_seen = now
        user = session.user.name if session.user is not None else None
        return ClientPacket(session.client_id, packet_id, destination, payload, user)

    def send(
        self,
        session_id: bytes,
        source: Destination,
        payload: Buffer,
        *,
        now: float,
        padding: int | None = None,
    ) -> bytes:
        """A packet carrying `payload` from `source` back to the client of that session.
        KeyError when the session is unknown or expired."""
        session = self._sessions[session_id]
        packet_id = session.next_packet_id
        if packet_id > MAX_PACKET_ID:
            raise ProtocolError("server packet ID space exhausted; the session must end")
        session.next_packet_id = packet_id + 1
        session.last_seen = now
        self._sessions.move_to_end(session_id)
        separate = session.server_id + packet_id.to_bytes(PACKET_ID_SIZE, "big")
        header = _main_header(
            HEADER_TYPE_SERVER_PACKET, now, session.client_id, source, padding, len(payload)
        )
        if session.seal is not None:
            assert session.header_encryptor is not None
            body = session.seal.encrypt(separate[4:], header + payload, None)
            return session.header_encryptor.update(separate) + body
        nonce = os.urandom(XCHACHA_NONCE_SIZE)
        return nonce + self._xchacha.encrypt(nonce, b"".join((separate, header, payload)), None)

    def expire(self, now: float, timeout: float = UDP_SESSION_TIMEOUT) -> list[bytes]:
        """Forget sessions idle for `timeout` seconds; return their client session IDs so the
        adapter can close their NAT entries."""
        gone: list[bytes] = []
        sessions = self._sessions
        while sessions:
            session_id, session = next(iter(sessions.items()))
            if session.last_seen + timeout > now:
                break
            del sessions[session_id]
            gone.append(session_id)
        return gone

    def close(self, session_id: bytes) -> None:
        """Forget one session (its NAT entry closed)."""
        self._sessions.pop(session_id, None)

    def __contains__(self, session_id: object) -> bool:
        return session_id in self._sessions

    def __len__(self) -> int:
        return len(self._sessions)


# --- client ---------------------------------------------------------------------------------


class _PeerSession:
    __slots__ = ("last_seen", "open", "window")

    def __init__(self, open_: Aead | None) -> None:
        self.open = open_
        self.window = SlidingWindow()
        self.last_seen = 0.0


class UdpClient:
    """One client UDP session (SIP022 §3.2.2): a random client session ID and a packet counter.

    `psks` is decode_psks(method, password): identity PSKs first, the user's PSK last. Replies
    may come from several server sessions (a server restart, another server behind a relay);
    each gets its own replay window and is forgotten after `timeout` seconds of silence."""

    def __init__(
        self,
        method: Method | str,
        psks: Sequence[bytes],
        *,
        session_id: bytes | None = None,
        timeout: float = UDP_SESSION_TIMEOUT,
    ) -> None:
        self.method = get_method(method)
        self._psks = _check_keys(self.method, psks)
        if session_id is None:
            session_id = os.urandom(SESSION_ID_SIZE)
        if len(session_id) != SESSION_ID_SIZE:
            raise ValueError("session ID must be 8 bytes")
        self.session_id = bytes(session_id)
        self.timeout = timeout
        self._next_packet_id = 0
        self._servers: dict[bytes, _PeerSession] = {}
        method_ = self.method
        if method_.is_aes:
            user_psk = self._psks[-1]
            self._seal = method_.aead(session_subkey(method_, user_psk, self.session_id))
            self._header_encryptor = aes_block(self._psks[0]).encryptor()
            self._header_decryptor = aes_block(user_psk).decryptor()
            # SIP022-2 UDP: identity header n = AES(iPSKn, hash(PSKn+1) ^ separate header)
            self._identity = [
                (aes_block(self._psks[i]).encryptor(), psk_hash(self._psks[i + 1]))
                for i in range(len(self._psks) - 1)
            ]
        else:
            self._xchacha = XChaCha20Poly1305(self._psks[0])

    def send(
        self,
        destination: Destination,
        payload: Buffer,
        *,
        now: float,
        padding: int | None = None,
    ) -> bytes:
        """One packet carrying `payload` to `destination`. Padding defaults to random bytes
        for DNS (port 53) and none otherwise."""
        packet_id = self._next_packet_id
        if packet_id > MAX_PACKET_ID:
            raise ProtocolError("packet ID space exhausted; start a new UdpClient session")
        self._next_packet_id = packet_id + 1
        separate = self.session_id + packet_id.to_bytes(PACKET_ID_SIZE, "big")
        header = _main_header(
            HEADER_TYPE_CLIENT_PACKET, now, b"", destination, padding, len(payload)
        )
        if not self.method.is_aes:
            nonce = os.urandom(XCHACHA_NONCE_SIZE)
            plaintext = b"".join((separate, header, payload))
            return nonce + self._xchacha.encrypt(nonce, plaintext, None)
        out = [self._header_encryptor.update(separate)]
        for encryptor, digest in self._identity:
            out.append(encryptor.update(_xor16(digest, separate)))
        out.append(self._seal.encrypt(separate[4:], header + payload, None))
        return b"".join(out)

    def receive(self, packet: Buffer, *, now: float) -> ServerPacket:
        """Decrypt and check one packet from the server; raises AuthenticationError,
        ReplayError (TimestampError) or ProtocolError for a packet to drop."""
        view = memoryview(packet).cast("B")
        if self.method.is_aes:
            if len(view) < SEPARATE_HEADER_SIZE + TAG_SIZE:
                raise ProtocolError(f"packet of {len(view)} bytes is too short")
            separate = self._header_decryptor.update(view[:SEPARATE_HEADER_SIZE])
            server_id = separate[:SESSION_ID_SIZE]
            packet_id = int.from_bytes(separate[SESSION_ID_SIZE:], "big")
            peer = self._peer(server_id, packet_id)
            assert peer.open is not None
            body = _open(peer.open, separate[4:], view[SEPARATE_HEADER_SIZE:])
            at = 0
        else:
            if len(view) < XCHACHA_NONCE_SIZE + SEPARATE_HEADER_SIZE + TAG_SIZE:
                raise ProtocolError(f"packet of {len(view)} bytes is too short")
            body = _open(self._xchacha, view[:XCHACHA_NONCE_SIZE], view[XCHACHA_NONCE_SIZE:])
            server_id = body[:SESSION_ID_SIZE]
            packet_id = int.from_bytes(body[SESSION_ID_SIZE:SEPARATE_HEADER_SIZE], "big")
            peer = self._peer(server_id, packet_id)
            at = SEPARATE_HEADER_SIZE
        source, payload = _parse_body(body, at, HEADER_TYPE_SERVER_PACKET, now, self.session_id)
        if server_id not in self._servers:
            self._forget_idle(now)
            self._servers[server_id] = peer
        peer.window.accept(packet_id)
        peer.last_seen = now
        return ServerPacket(server_id, packet_id, source, payload)

    def _peer(self, server_id: bytes, packet_id: int) -> _PeerSession:
        peer = self._servers.get(server_id)
        if peer is None:
            open_ = None
            if self.method.is_aes:
                key = session_subkey(self.method, self._psks[-1], server_id)
                open_ = self.method.aead(key)
            return _PeerSession(open_)
        if not peer.window.check(packet_id):
            raise ReplayError(f"packet ID {packet_id} replayed or too old")
        return peer

    def _forget_idle(self, now: float) -> None:
        idle = [sid for sid, p in self._servers.items() if p.last_seen + self.timeout <= now]
        for sid in idle:
            del self._servers[sid]
