"""ClientHello messages built field by field for codec tests (RFC 8446 §4.1.2): a known random,
session id and key shares, so a test knows every byte the server side reads."""

from __future__ import annotations

import struct


def _vec(length_size: int, data: bytes) -> bytes:
    return len(data).to_bytes(length_size, "big") + data


def _ext(kind: int, body: bytes) -> bytes:
    return struct.pack("!H", kind) + _vec(2, body)


def client_hello_message(
    *,
    random: bytes,
    session_id: bytes = bytes(32),
    server_name: str | None = "cdn.test",
    key_shares: tuple[tuple[int, bytes], ...] = (),
    versions: tuple[int, ...] = (0x0304, 0x0303),
    alpn: tuple[str, ...] = ("h2", "http/1.1"),
    ciphers: tuple[int, ...] = (0x1301, 0x1302, 0x1303, 0xC02B),
    signature_algorithms: tuple[int, ...] = (0x0403, 0x0804, 0x0401),
) -> bytes:
    """A ClientHello handshake message (type, 3-byte length, body)."""
    extensions = b""
    if server_name is not None:
        name = server_name.encode()
        extensions += _ext(0x0000, _vec(2, b"\x00" + _vec(2, name)))
    extensions += _ext(0x000A, _vec(2, b"".join(struct.pack("!H", g) for g, _ in key_shares)))
    sigs = b"".join(struct.pack("!H", s) for s in signature_algorithms)
    extensions += _ext(0x000D, _vec(2, sigs))
    if alpn:
        extensions += _ext(0x0010, _vec(2, b"".join(_vec(1, p.encode()) for p in alpn)))
    extensions += _ext(0x002B, _vec(1, b"".join(struct.pack("!H", v) for v in versions)))
    shares = b"".join(struct.pack("!H", g) + _vec(2, k) for g, k in key_shares)
    extensions += _ext(0x0033, _vec(2, shares))
    body = (
        b"\x03\x03" + random + _vec(1, session_id)
        + _vec(2, b"".join(struct.pack("!H", c) for c in ciphers))
        + b"\x01\x00" + _vec(2, extensions)
    )
    return b"\x01" + _vec(3, body)


def as_records(message: bytes, fragment: int = 1 << 14) -> bytes:
    """The message in handshake records of at most `fragment` bytes each."""
    out = b""
    for start in range(0, len(message), fragment):
        piece = message[start : start + fragment]
        out += b"\x16\x03\x01" + _vec(2, piece)
    return out
