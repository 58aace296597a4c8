"""Our Chrome and Firefox ClientHellos against a real browser TLS stack's: curl-impersonate
(curl_cffi, the browser extra: BoringSSL set up as Chrome 152 / Firefox 155) captured on a
loopback listener. Same JA4, same cipher suites, groups, key shares, signature algorithms and
extension bodies; Chrome's order rules (GREASE at both ends, the rest permuted) and Firefox's
fixed order; and uTLS's Chrome preset is told apart from both."""

from __future__ import annotations

import contextlib
import os
import socket
import struct
import threading

import pytest

from elsewhere.codecs import client_hellos as ch
from elsewhere.codecs.tls13_client import Tls13Client
from elsewhere.codecs.tls13_trust import AnyCertificate
from elsewhere.codecs.tls_hello import handshake_message, is_grease, parse_client_hello
from elsewhere.lab.clienthello import ja3, ja4

curl_cffi = pytest.importorskip("curl_cffi", reason="the browser extra is part of the dev setup")

pytestmark = pytest.mark.interop

NAME = "www.example.com"
# bodies that carry randomness or keys: compared by shape, not bytes
RANDOM_BODIES = {ch.EXT_KEY_SHARE, ch.EXT_ECH, ch.EXT_TRUST_ANCHORS}


def browser_hello(target: str) -> bytes:
    """The first record curl-impersonate sends for `target`, to a listener on loopback."""
    from curl_cffi import Curl, CurlOpt
    from curl_cffi.requests.impersonate import resolve_latest_browser_type

    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(1)
    port = listener.getsockname()[1]
    captured: list[bytes] = []

    def serve() -> None:
        conn, _ = listener.accept()
        conn.settimeout(5)
        data = b""
        with conn:
            while len(data) < 5 or len(data) < 5 + int.from_bytes(data[3:5], "big"):
                chunk = conn.recv(65536)
                if not chunk:
                    break
                data += chunk
        captured.append(data)

    thread = threading.Thread(target=serve)
    thread.start()
    curl = Curl()
    try:
        curl.impersonate(resolve_latest_browser_type(target))
        curl.setopt(CurlOpt.URL, f"https://{NAME}:{port}/".encode())
        curl.setopt(CurlOpt.RESOLVE, [f"{NAME}:{port}:127.0.0.1"])  # no DNS: loopback only
        curl.setopt(CurlOpt.TIMEOUT_MS, 5000)
        with contextlib.suppress(curl_cffi.CurlError):  # the listener closes after the hello
            curl.perform()
    finally:
        curl.close()
        thread.join(10)
        listener.close()
    return captured[0]


def our_hello(fingerprint: str) -> bytes:
    draft = ch.HelloDraft.new(ch.shape_for(fingerprint), NAME, ("h2", "http/1.1"), os.urandom)
    return Tls13Client(draft, AnyCertificate()).start()


def extensions(record: bytes) -> list[tuple[int, bytes]]:
    message, _ = handshake_message(record)
    body = message[4:]
    at = 2 + 32
    at += 1 + body[at]  # session id
    at += 2 + int.from_bytes(body[at : at + 2], "big")  # cipher suites
    at += 1 + body[at]  # compression
    end = at + 2 + int.from_bytes(body[at : at + 2], "big")
    at += 2
    found = []
    while at < end:
        kind, length = struct.unpack_from("!HH", body, at)
        found.append((kind, body[at + 4 : at + 4 + length]))
        at += 4 + length
    return found


def degreased(data: bytes) -> bytes:
    """A body with every GREASE u16 (0x?a?a) written as 0x0a0a."""
    out = bytearray(data)
    for i in range(len(out) - 1):
        if out[i] == out[i + 1] and out[i] & 0x0F == 0x0A:
            out[i] = out[i + 1] = 0x0A
    return bytes(out)


def key_shares(body: bytes) -> list[tuple[int, int]]:
    shares, at = [], 2
    while at < len(body):
        group, length = struct.unpack_from("!HH", body, at)
        shares.append((0 if is_grease(group) else group, length))
        at += 4 + length
    return shares


def trust_anchors(body: bytes) -> set[bytes]:
    found, at = set(), 2
    while at < len(body):
        found.add(body[at + 1 : at + 1 + body[at]])
        at += 1 + body[at]
    return found


@pytest.fixture(scope="module")
def chrome() -> bytes:
    return browser_hello("chrome")


@pytest.fixture(scope="module")
def firefox() -> bytes:
    return browser_hello("firefox")


def test_our_chrome_hello_has_chromes_ja4_and_contents(chrome: bytes) -> None:
    ours = our_hello("chrome")
    theirs_hello, ours_hello = parse_client_hello(chrome), parse_client_hello(ours)
    assert ja4(ours_hello) == ja4(theirs_hello)
    assert [c for c in ours_hello.cipher_suites if not is_grease(c)] == [
        c for c in theirs_hello.cipher_suites if not is_grease(c)]
    assert is_grease(ours_hello.cipher_suites[0]) and is_grease(theirs_hello.cipher_suites[0])
    theirs_ext, ours_ext = dict(extensions(chrome)), dict(extensions(ours))
    assert {k for k in ours_ext if not is_grease(k)} == {k for k in theirs_ext if not is_grease(k)}
    for kind, body in theirs_ext.items():
        if is_grease(kind) or kind in RANDOM_BODIES or kind == ch.EXT_SERVER_NAME:
            continue
        assert degreased(ours_ext[kind]) == degreased(body), f"extension {kind:#06x}"
    assert key_shares(ours_ext[ch.EXT_KEY_SHARE]) == key_shares(theirs_ext[ch.EXT_KEY_SHARE])
    assert trust_anchors(ours_ext[ch.EXT_TRUST_ANCHORS]) == trust_anchors(
        theirs_ext[ch.EXT_TRUST_ANCHORS])
    for body in (ours_ext[ch.EXT_ECH], theirs_ext[ch.EXT_ECH]):
        assert body[:5] == b"\x00\x00\x01\x00\x01" and body[6:8] == b"\x00\x20"
        assert len(body) - 42 in ch.ECH_GREASE_PAYLOADS


def test_our_chrome_hello_puts_grease_at_both_ends_and_permutes_the_rest(chrome: bytes) -> None:
    theirs = [k for k, _ in extensions(chrome)]
    assert is_grease(theirs[0]) and is_grease(theirs[-1])
    orders = set()
    for _ in range(8):
        ours = [k for k, _ in extensions(our_hello("chrome"))]
        assert is_grease(ours[0]) and is_grease(ours[-1]) and ours[0] != ours[-1]
        assert not any(is_grease(k) for k in ours[1:-1])
        orders.add(tuple(ours[1:-1]))
    assert len(orders) > 1  # a fixed order would be a fingerprint of its own


def test_our_firefox_hello_is_firefoxs_byte_for_byte_but_for_keys_and_randoms(
    firefox: bytes,
) -> None:
    ours = our_hello("firefox")
    assert ja3(parse_client_hello(ours)) == ja3(parse_client_hello(firefox))
    assert ja4(parse_client_hello(ours)) == ja4(parse_client_hello(firefox))
    theirs_ext, ours_ext = extensions(firefox), extensions(ours)
    assert [k for k, _ in ours_ext] == [k for k, _ in theirs_ext]  # Firefox's one order
    for (kind, body), (_, mine) in zip(theirs_ext, ours_ext, strict=True):
        if kind == ch.EXT_KEY_SHARE:
            assert key_shares(mine) == key_shares(body)
        elif kind == ch.EXT_ECH:
            assert mine[:5] == body[:5] and len(mine) - 42 in ch.ECH_GREASE_PAYLOADS
        elif kind != ch.EXT_SERVER_NAME:
            assert mine == body, f"extension {kind:#06x}"


def test_record_and_hello_versions_are_the_browsers(chrome: bytes, firefox: bytes) -> None:
    for fingerprint, theirs in (("chrome", chrome), ("firefox", firefox)):
        ours = our_hello(fingerprint)
        assert ours[:3] == theirs[:3] == b"\x16\x03\x01"
        assert ours[9:11] == theirs[9:11] == b"\x03\x03"
        assert ours[43] == theirs[43] == 32  # a 32-byte session id (middlebox compatibility)
