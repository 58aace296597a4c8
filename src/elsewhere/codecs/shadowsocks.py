"""Shadowsocks AEAD ciphers (SIP004, amended by SIP007): per-session subkeys, the chunked TCP
stream, UDP packets, multi-key trial decryption and salt replay protection, as sans-I/O objects.

TCP stream, one direction:  [salt][len][len tag][payload][payload tag][len][len tag]...
UDP packet:                 [salt][payload][tag]        (nonce is all zeros)

Also Outline's connection prefix: the first bytes of the client's salt are chosen plaintext so
that the first packet looks like an allowed protocol (fully-encrypted-traffic exemptions).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM, ChaCha20Poly1305
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from elsewhere.codecs.address import NeedMoreData
from elsewhere.errors import AuthenticationError, ConfigError, ProtocolError

Buffer = bytes | bytearray | memoryview
Aead = ChaCha20Poly1305 | AESGCM

MAX_PAYLOAD = 0x3FFF  # SIP004: the two high bits of the length are reserved (zero)
TAG_SIZE = 16  # SIP004: every listed AEAD has a 16-byte tag
NONCE_SIZE = 12  # SIP004: 12-byte little-endian counter, +1 after each AEAD operation
LENGTH_SIZE = 2  # SIP004: big-endian payload length
SUBKEY_INFO = b"ss-subkey"  # SIP004: HKDF_SHA1 info string
MAX_PREFIX = 16  # Outline: a prefix longer than this buys no disguise and costs salt entropy
# Each prefix byte is a salt byte an attacker knows; salts that collide reuse a subkey and so
# (key, nonce) pairs, which leaks the master key. Keep at least 64 random bits in every salt.
MIN_RANDOM_SALT = 8
ZERO_NONCE = bytes(NONCE_SIZE)  # SIP004 UDP: each packet has its own salt, so nonce 0 is safe
# Compact the decryptor's buffer only once this much consumed data sits in front of it, so a
# peer trickling bytes does not make us move the unread tail on every call.
COMPACT_AT = 1 << 16


@dataclass(frozen=True, slots=True)
class Method:
    """One SIP004 AEAD cipher: its constructor and sizes (shadowsocks.org "AEAD ciphers")."""

    name: str
    aead: Callable[[bytes], Aead]
    key_size: int
    salt_size: int


METHODS: dict[str, Method] = {
    m.name: m
    for m in (
        Method("chacha20-ietf-poly1305", ChaCha20Poly1305, 32, 32),
        Method("aes-256-gcm", AESGCM, 32, 32),
        Method("aes-128-gcm", AESGCM, 16, 16),
    )
}


def _method(name: str) -> Method:
    try:
        return METHODS[name]
    except KeyError:
        valid = ", ".join(METHODS)
        raise ConfigError(f"unknown Shadowsocks method {name!r}: use one of {valid}") from None


def derive_key(password: str, key_size: int) -> bytes:
    """The master key from a password: OpenSSL's EVP_BytesToKey with MD5, one round, no salt,
    as shadowsocks-libev and every client since derive it. D_i = MD5(D_{i-1} || password)."""
    secret = password.encode()
    key = b""
    block = b""
    while len(key) < key_size:
        digest = hashes.Hash(hashes.MD5())
        digest.update(block + secret)
        block = digest.finalize()
        key += block
    return key[:key_size]


@dataclass(frozen=True, slots=True)
class Cipher:
    """A method and its master key: what a server holds for each access key."""

    method: str
    key: bytes = field(repr=False)  # secrets never reach logs (DESIGN.md §4)

    def __post_init__(self) -> None:
        spec = _method(self.method)
        if len(self.key) != spec.key_size:
            raise ConfigError(
                f"{self.method} needs a {spec.key_size}-byte key, got {len(self.key)} bytes"
            )

    @classmethod
    def from_password(cls, method: str, password: str) -> Cipher:
        return cls(method, derive_key(password, _method(method).key_size))

    @property
    def salt_size(self) -> int:
        return METHODS[self.method].salt_size

    def session(self, salt: Buffer) -> Aead:
        """The AEAD keyed with this salt's subkey: HKDF_SHA1(key, salt, "ss-subkey")."""
        spec = METHODS[self.method]
        hkdf = HKDF(hashes.SHA1(), spec.key_size, bytes(salt), SUBKEY_INFO)
        return spec.aead(hkdf.derive(self.key))


def _nonce(counter: int) -> bytes:
    return counter.to_bytes(NONCE_SIZE, "little")


SealInto = Callable[[bytes, Buffer, None, memoryview], int]


def seal_chunks(
    seal_into: SealInto, counter: int, data: memoryview, max_payload: int, head: bytes = b""
) -> tuple[bytearray, int]:
    """`head`, then [len][len tag][payload][payload tag] per piece of at most `max_payload`
    bytes of `data` (SIP004's chunks, which SIP022 keeps), nonces counting from `counter`.
    Sealed straight into one preallocated buffer (encrypt_into): no bytes object per chunk and
    no join, which halves the copies of a relay's hottest call. Returns the buffer and the
    next counter."""
    total = len(data)
    pieces = -(-total // max_payload)
    out = bytearray(len(head) + total + pieces * (LENGTH_SIZE + 2 * TAG_SIZE))
    out[: len(head)] = head
    at = len(head)
    with memoryview(out) as target:
        for start in range(0, total, max_payload):
            piece = data[start : start + max_payload]
            size = len(piece)
            stop = at + LENGTH_SIZE + TAG_SIZE
            seal_into(_nonce(counter), size.to_bytes(LENGTH_SIZE, "big"), None, target[at:stop])
            at, stop = stop, stop + size + TAG_SIZE
            seal_into(_nonce(counter + 1), piece, None, target[at:stop])
            at = stop
            counter += 2
    return out, counter


class StreamEncryptor:
    """Encrypts one direction of a TCP connection. The first output starts with the salt."""

    def __init__(self, cipher: Cipher, salt: bytes | None = None, prefix: bytes = b"") -> None:
        size = cipher.salt_size
        limit = min(MAX_PREFIX, size - MIN_RANDOM_SALT)
        if len(prefix) > limit:
            raise ConfigError(
                f"prefix of {len(prefix)} bytes is too long for {cipher.method}: "
                f"at most {limit} bytes, the rest of the salt must stay random"
            )
        if salt is None:
            salt = bytes(prefix) + os.urandom(size - len(prefix))
        elif len(salt) != size or not salt.startswith(prefix):
            raise ValueError(f"salt must be {size} bytes and start with the prefix")
        self.salt: bytes = bytes(salt)
        self._aead = cipher.session(self.salt)
        self._counter = 0
        self._salt_sent = False

    def encrypt(self, data: Buffer) -> bytes | bytearray:
        """Seal `data` as SIP004 chunks of at most MAX_PAYLOAD bytes; b"" for empty input (the
        salt waits for the first real data, as the protocol has nothing to send before)."""
        view = memoryview(data).cast("B")
        total = len(view)
        if not total:
            return b""
        head = b"" if self._salt_sent else self.salt
        self._salt_sent = True
        out, self._counter = seal_chunks(
            self._aead.encrypt_into, self._counter, view, MAX_PAYLOAD, head
        )
        return out


class StreamDecryptor:
    """Decrypts one direction of a TCP connection fed in pieces of any size.

    Once a tag fails the decryptor stays failed: a stream cannot resynchronise after it, and
    an adapter that keeps reading (stealth rules) must not get plaintext by accident."""

    def __init__(self, cipher: Cipher) -> None:
        self._cipher = cipher
        self._salt_size = cipher.salt_size
        self._salt: bytes | None = None
        self._aead: Aead | None = None
        self._primed: tuple[bytes, Aead] | None = None
        self._counter = 0
        self._length: int | None = None  # payload length read, payload not yet complete
        self._buffer = bytearray()
        self._offset = 0
        self._failure: ProtocolError | None = None

    @property
    def salt(self) -> bytes | None:
        """The peer's salt, once its bytes have arrived."""
        return self._salt

    def decrypt(self, data: Buffer) -> bytes:
        """Feed bytes from the wire; return all plaintext completed so far (b"" if none).

        Raises AuthenticationError on a forged or corrupt chunk (then on every later call),
        ProtocolError on a length above MAX_PAYLOAD."""
        if self._failure is not None:
            raise type(self._failure)(f"stream already failed: {self._failure}")
        buffer = self._buffer
        if self._offset == len(buffer):
            # Nothing pending: read straight from the caller's bytes, keep only the tail.
            buffer.clear()
            self._offset = 0
            with memoryview(data).cast("B") as view:
                out, used = self._consume(view, 0)
                if used < len(view):
                    buffer += view[used:]
            return out
        buffer += data
        with memoryview(buffer) as view:
            out, self._offset = self._consume(view, self._offset)
        if self._offset == len(buffer):
            buffer.clear()
            self._offset = 0
        elif self._offset >= COMPACT_AT:
            del buffer[: self._offset]
            self._offset = 0
        return out

    def _consume(self, view: memoryview, pos: int) -> tuple[bytes, int]:
        """Decrypt every complete chunk of `view` from `pos`; return plaintext and new pos."""
        end = len(view)
        if self._aead is None:
            if end - pos < self._salt_size:
                return b"", pos
            salt = bytes(view[pos : pos + self._salt_size])
            pos += self._salt_size
            if self._primed is not None and self._primed[0] == salt:
                self._aead = self._primed[1]
            else:
                self._aead = self._cipher.session(salt)
            self._primed = None
            self._salt = salt
        open_ = self._aead.decrypt
        counter = self._counter
        length = self._length
        out: list[bytes] = []
        try:
            while True:
                if length is None:
                    stop = pos + LENGTH_SIZE + TAG_SIZE
                    if stop > end:
                        break
                    length = int.from_bytes(open_(_nonce(counter), view[pos:stop], None), "big")
                    counter += 1
                    pos = stop
                    if length > MAX_PAYLOAD:
                        self._failure = ProtocolError(
                            f"chunk length {length:#x} above {MAX_PAYLOAD:#x}"
                        )
                        raise self._failure
                stop = pos + length + TAG_SIZE
                if stop > end:
                    break
                out.append(open_(_nonce(counter), view[pos:stop], None))
                counter += 1
                pos = stop
                length = None
        except InvalidTag:
            self._failure = AuthenticationError("chunk failed authentication")
            raise self._failure from None
        finally:
            self._counter = counter
            self._length = length
        return b"".join(out), pos


def min_probe_bytes(ciphers: Sequence[Cipher]) -> int:
    """How many bytes find_cipher needs: the longest salt, a length and its tag."""
    return max(c.salt_size for c in ciphers) + LENGTH_SIZE + TAG_SIZE


def find_cipher(ciphers: Sequence[Cipher], data: Buffer) -> tuple[int, StreamDecryptor] | None:
    """Which of the server's keys opened this connection (outline-ss-server's trial decryption).

    `data` is the start of the connection, at least min_probe_bytes(ciphers) long (else
    NeedMoreData). Returns the index of the first cipher whose subkey authenticates the first
    length chunk, or None when none does. The caller puts the last key that matched first.

    The decryptor returned has not consumed anything: feed it the same bytes from the very
    first one, `decryptor.decrypt(data)`, then what follows. It reuses the probe's subkey."""
    need = min_probe_bytes(ciphers) if ciphers else 0
    if len(data) < need:
        raise NeedMoreData(f"{need} bytes needed to identify the key, got {len(data)}")
    view = memoryview(data).cast("B")
    first_nonce = _nonce(0)
    for index, cipher in enumerate(ciphers):
        size = cipher.salt_size
        salt = bytes(view[:size])
        aead = cipher.session(salt)
        try:
            aead.decrypt(first_nonce, view[size : size + LENGTH_SIZE + TAG_SIZE], None)
        except InvalidTag:
            continue
        decryptor = StreamDecryptor(cipher)
        decryptor._primed = (salt, aead)
        return index, decryptor
    return None


def encrypt_packet(cipher: Cipher, plaintext: Buffer, salt: bytes | None = None) -> bytes:
    """One SIP004 UDP packet: a fresh salt, then the payload sealed under a zero nonce."""
    if salt is None:
        salt = os.urandom(cipher.salt_size)
    elif len(salt) != cipher.salt_size:
        raise ValueError(f"salt must be {cipher.salt_size} bytes")
    return salt + cipher.session(salt).encrypt(ZERO_NONCE, plaintext, None)


def decrypt_packet(cipher: Cipher, packet: Buffer) -> bytes:
    """The payload of a SIP004 UDP packet; AuthenticationError when it is not ours."""
    size = cipher.salt_size
    if len(packet) < size + TAG_SIZE:
        raise AuthenticationError(f"packet of {len(packet)} bytes is shorter than salt and tag")
    view = memoryview(packet).cast("B")
    try:
        return cipher.session(view[:size]).decrypt(ZERO_NONCE, view[size:], None)
    except InvalidTag:
        raise AuthenticationError("packet failed authentication") from None


def find_packet_cipher(ciphers: Sequence[Cipher], packet: Buffer) -> tuple[int, bytes] | None:
    """The index of the first cipher that opens this UDP packet, and its payload; or None."""
    for index, cipher in enumerate(ciphers):
        try:
            return index, decrypt_packet(cipher, packet)
        except AuthenticationError:
            continue
    return None


class SaltFilter:
    """Replay protection for TCP salts (as outline-ss-server does): remembers about the last
    `capacity` salts in two generations of sets, so memory is bounded and each check is O(1).

    A server adds the salts it generates for its own replies too, so that a censor cannot
    reflect a server's reply back at it as if it were a client's request."""

    def __init__(self, capacity: int = 1_000_000) -> None:
        if capacity < 2:
            raise ValueError("capacity must be at least 2")
        self._generation = capacity // 2
        self._current: set[bytes] = set()
        self._old: set[bytes] = set()

    def check_and_add(self, salt: Buffer) -> bool:
        """True and remember the salt if it is new; False if it was seen before."""
        key = bytes(salt)
        if key in self._current or key in self._old:
            return False
        self._current.add(key)
        if len(self._current) >= self._generation:
            self._old = self._current
            self._current = set()
        return True

    def __len__(self) -> int:
        return len(self._current) + len(self._old)
