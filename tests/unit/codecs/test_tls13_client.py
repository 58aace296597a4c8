"""The TLS 1.3 client codec against the real OpenSSL (the stdlib's server driven through memory
BIOs: no sockets, no loop), and its key schedule against RFC 8448's trace."""

from __future__ import annotations

import contextlib
import hashlib
import os
import ssl
import time
from collections.abc import Callable

import pytest
from cryptography.hazmat.primitives import hashes

from elsewhere.codecs import client_hellos as ch
from elsewhere.codecs.tls13_client import (
    ALERT_BAD_CERTIFICATE,
    AlertReceived,
    DataReceived,
    Event,
    HandshakeDone,
    KeySchedule,
    PeerClosed,
    RecordCipher,
    Tls13Client,
    TlsError,
    derive_secret,
    hkdf_expand_label,
)
from elsewhere.codecs.tls13_trust import (
    AnyCertificate,
    CertificateCheck,
    ChainCheck,
    PinCheck,
)
from elsewhere.transports.tls13_layer import system_roots
from tls13_pki import Leaf, Pki


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return Pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture(scope="module")
def good(pki: Pki) -> Leaf:
    return pki.leaf("good")


class Pair:
    """Our client and an OpenSSL server, joined by memory BIOs."""

    def __init__(
        self,
        leaf: Leaf,
        check: CertificateCheck,
        *,
        fingerprint: str = "chrome",
        alpn: tuple[str, ...] = ("h2", "http/1.1"),
        server_alpn: tuple[str, ...] = ("http/1.1",),
        curve: str | None = None,
        name: str = "localhost",
        configure: Callable[[ssl.SSLContext], None] | None = None,
    ) -> None:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(leaf.cert, leaf.key)
        context.set_alpn_protocols(list(server_alpn))
        if curve:
            context.set_ecdh_curve(curve)
        if configure:
            configure(context)
        self.incoming, self.outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
        self.server = context.wrap_bio(self.incoming, self.outgoing, server_side=True)
        draft = ch.HelloDraft.new(ch.shape_for(fingerprint), name, alpn, os.urandom)
        self.client = Tls13Client(draft, check)
        self.events: list[Event] = []
        self.hellos: list[bytes] = []

    def handshake(self) -> HandshakeDone:
        self.incoming.write(self.client.start())
        for _ in range(4):
            with contextlib.suppress(ssl.SSLWantReadError):
                self.server.do_handshake()
            self.pump_to_client()
            self.incoming.write(self.client.data_to_send())
            if self.client.established:
                break
        self.server_read()  # OpenSSL takes the client's Finished, then sends its tickets
        self.pump_to_client()
        done = [e for e in self.events if isinstance(e, HandshakeDone)]
        assert done, "the handshake did not finish"
        return done[0]

    def pump_to_client(self) -> None:
        data = self.outgoing.read()
        if data:
            self.client.feed(data, time.time())
            self.events.extend(self.client.events())
            self.incoming.write(self.client.data_to_send())

    def server_read(self) -> bytes:
        got = b""
        try:
            while True:
                chunk = self.server.read(1 << 20)
                if not chunk:
                    break
                got += chunk
        except (ssl.SSLWantReadError, ssl.SSLZeroReturnError):
            pass
        return got

    def received(self) -> bytes:
        data = b"".join(e.data for e in self.events if isinstance(e, DataReceived))
        self.events = [e for e in self.events if not isinstance(e, DataReceived)]
        return data


@pytest.mark.parametrize("fingerprint", ["chrome", "firefox"])
def test_handshake_with_openssl_then_data_both_ways(good: Leaf, fingerprint: str) -> None:
    pair = Pair(good, AnyCertificate(), fingerprint=fingerprint)
    done = pair.handshake()
    assert pair.server.version() == "TLSv1.3"
    assert done.alpn == "http/1.1" == pair.server.selected_alpn_protocol()
    assert done.certificates[0] == good.der
    payload = os.urandom(300_000)  # many records, one call
    pair.incoming.write(pair.client.send(payload))
    assert pair.server_read() == payload
    pair.server.write(payload[:100_000])
    pair.pump_to_client()
    assert pair.received() == payload[:100_000]


@pytest.mark.parametrize(("fingerprint", "curve", "group"), [
    ("chrome", "prime256v1", ch.GROUP_SECP256R1),
    ("firefox", "secp384r1", ch.GROUP_SECP384R1),
])
def test_hello_retry_request_for_a_group_without_a_share(
    good: Leaf, fingerprint: str, curve: str, group: int
) -> None:
    pair = Pair(good, AnyCertificate(), fingerprint=fingerprint, curve=curve)
    done = pair.handshake()
    assert done.group == group
    pair.incoming.write(pair.client.send(b"after retry"))
    assert pair.server_read() == b"after retry"


def test_server_without_a_common_group_is_an_error(good: Leaf) -> None:
    pair = Pair(good, AnyCertificate(), fingerprint="chrome", curve="secp521r1")
    pair.incoming.write(pair.client.start())
    with pytest.raises(ssl.SSLError):
        pair.server.do_handshake()  # OpenSSL refuses: Chrome does not offer P-521


def test_close_notify_from_the_server_is_a_peer_closed_event(good: Leaf) -> None:
    pair = Pair(good, AnyCertificate())
    pair.handshake()
    pair.server.write(b"last words")
    with contextlib.suppress(ssl.SSLWantReadError):
        pair.server.unwrap()
    pair.pump_to_client()
    assert pair.received() == b"last words"
    assert any(isinstance(e, PeerClosed) for e in pair.events)
    pair.incoming.write(pair.client.close())
    with pytest.raises(ssl.SSLZeroReturnError):
        pair.server.read(10)


def test_key_update_from_the_client_and_the_server_keeps_data_flowing(good: Leaf) -> None:
    pair = Pair(good, AnyCertificate())
    pair.handshake()
    pair.incoming.write(pair.client.key_update(request_peer=True) + pair.client.send(b"one"))
    assert pair.server_read() == b"one"
    pair.server.write(b"two")  # under OpenSSL's new key, after its own KeyUpdate
    pair.pump_to_client()
    assert pair.received() == b"two"
    pair.incoming.write(pair.client.send(b"three"))
    assert pair.server_read() == b"three"


def test_a_tampered_record_fails_with_bad_record_mac(good: Leaf) -> None:
    pair = Pair(good, AnyCertificate())
    pair.handshake()
    pair.server.write(b"x" * 100)
    record = bytearray(pair.outgoing.read())
    record[-1] ^= 1
    with pytest.raises(TlsError, match="did not decrypt"):
        pair.client.feed(bytes(record), time.time())
    assert pair.client.data_to_send()[:1] == b"\x17"  # an encrypted alert went out


# certificates


def test_a_chain_to_a_trusted_root_for_the_name_passes(pki: Pki, good: Leaf) -> None:
    pair = Pair(good, ChainCheck(system_roots(str(pki.ca_file)), "localhost"))
    assert pair.handshake().certificates[0] == good.der


def test_a_chain_for_an_ip_address_passes(pki: Pki, good: Leaf) -> None:
    pair = Pair(good, ChainCheck(system_roots(str(pki.ca_file)), "127.0.0.1"), name="127.0.0.1")
    pair.handshake()


@pytest.mark.parametrize(("label", "options", "name", "reason"), [
    ("expired", {"expired": True}, "localhost", "expired on"),
    ("other", {"names": ("other.test",)}, "localhost", "is for other.test, not localhost"),
    ("selfsigned", {"self_signed": True}, "localhost", "self-signed and no pin"),
])
def test_bad_certificates_are_refused_with_one_line(
    pki: Pki, label: str, options: dict[str, object], name: str, reason: str
) -> None:
    leaf = pki.leaf(label, **options)  # type: ignore[arg-type]
    pair = Pair(leaf, ChainCheck(system_roots(str(pki.ca_file)), name))
    with pytest.raises(TlsError, match=reason) as caught:
        pair.handshake()
    assert caught.value.alert is not None
    assert pair.client.data_to_send()[:1] == b"\x17"  # the alert, under handshake keys


def test_a_chain_to_an_unknown_root_is_refused(pki: Pki, good: Leaf) -> None:
    pair = Pair(good, ChainCheck(system_roots(None), "localhost"))
    with pytest.raises(TlsError, match="not trusted"):
        pair.handshake()


def test_the_pinned_certificate_passes_and_another_is_refused(pki: Pki) -> None:
    leaf = pki.leaf("pinned", self_signed=True)
    Pair(leaf, PinCheck(hashlib.sha256(leaf.der).digest())).handshake()
    pair = Pair(leaf, PinCheck(bytes(32)))
    with pytest.raises(TlsError, match="does not match the pin") as caught:
        pair.handshake()
    assert caught.value.alert == ALERT_BAD_CERTIFICATE


def test_rsa_pss_certificate_verify(pki: Pki) -> None:
    leaf = pki.leaf("rsa", key_type="rsa")
    assert Pair(leaf, AnyCertificate()).handshake().certificates[0] == leaf.der


def test_a_server_that_shares_no_alpn_goes_on_without_one(good: Leaf) -> None:
    # RFC 7301 §3.2 lets a server ignore ALPN; OpenSSL does, and so does Chrome
    pair = Pair(good, AnyCertificate(), alpn=("h2",), server_alpn=("http/1.1",))
    assert pair.handshake().alpn is None


def test_alert_from_server_raises_alert_received() -> None:
    draft = ch.HelloDraft.new(ch.CHROME, "localhost", ("h2",), os.urandom)
    client = Tls13Client(draft, AnyCertificate())
    client.start()
    with pytest.raises(AlertReceived) as caught:
        client.feed(b"\x15\x03\x03\x00\x02\x02\x28", time.time())  # handshake_failure
    assert caught.value.description == 40


def test_a_tls12_only_server_is_named_as_such(good: Leaf) -> None:
    def tls12(context: ssl.SSLContext) -> None:
        context.maximum_version = ssl.TLSVersion.TLSv1_2

    pair = Pair(good, AnyCertificate(), configure=tls12)
    with pytest.raises(TlsError, match=r"does not speak TLS 1\.3"):
        pair.handshake()


# RFC 8448 §3 (simple 1-RTT handshake), key schedule values


def test_key_schedule_matches_rfc8448() -> None:
    shared = bytes.fromhex("8bd4054fb55b9d63fdfbacf9f04b9f0d35e6d63f537563efd46272900f89492d")
    hello_hash = bytes.fromhex(
        "860c06edc07858ee8e78f0e7428c58edd6b43f2ca3e6e95f02ed063cf0e1cad8")
    schedule = KeySchedule(hashes.SHA256())
    client, server = schedule.handshake(shared, hello_hash)
    assert schedule.handshake_secret.hex() == (
        "1dc826e93606aa6fdc0aadc12f741b01046aa6b99f691ed221a9f0ca043fbeac")
    assert client.hex() == "b3eddb126e067f35a780b3abf45e2d8f3b1a950738f52e9600746a0e27a55a21"
    assert server.hex() == "b67b7d690cc16c4e75e54213cb2d37b4e9c912bcded9105d42befd59d391ad38"
    assert schedule.master_secret.hex() == (
        "18df06843d13a08bf2a449844c5f8a478001bc4d4c627984d5a41da8d0402919")
    sha = hashes.SHA256()
    assert hkdf_expand_label(sha, client, b"key", b"", 16).hex() == (
        "dbfaa693d1762c5b666af5d950258d01")
    assert hkdf_expand_label(sha, server, b"iv", b"", 12).hex() == "5d313eb2671276ee13000b30"
    finished_hash = bytes.fromhex(
        "9608102a0f1ccc6db6250b7b7e417b1a000eaada3daae4777a7686c9ff83df13")
    client_ap, _ = schedule.application(finished_hash)
    assert client_ap.hex() == (
        "9e40646ce79a7f9dc05af8889bce6552875afa0b06df0087f792ebb7c17504a5")
    assert derive_secret(sha, schedule.master_secret, b"c ap traffic", finished_hash) == client_ap


def test_record_cipher_round_trip_and_key_update() -> None:
    secret = bytes(range(32))
    for suite in (ch.AES_128_GCM_SHA256, ch.AES_256_GCM_SHA384, ch.CHACHA20_POLY1305_SHA256):
        sender, receiver = RecordCipher(suite, secret), RecordCipher(suite, secret)
        record = sender.seal(23, b"hello")
        assert receiver.open(record[:5], record[5:]) == (23, b"hello")
        sender, receiver = sender.next(), receiver.next()
        record = sender.seal(22, b"after update")
        assert receiver.open(record[:5], record[5:]) == (22, b"after update")


# RFC 8879 compressed certificates (Chrome offers brotli, Firefox zlib, brotli and zstd; CDNs
# such as Cloudflare compress with brotli). OpenSSL 3.0 compresses none, so the message is built
# here around a real Certificate body.


def compressed(algorithm: int, plain: bytes, claimed: int | None = None) -> bytes:
    import zlib

    import brotli

    data = brotli.compress(plain) if algorithm == ch.CERT_COMPRESSION_BROTLI else zlib.compress(
        plain)
    size = len(plain) if claimed is None else claimed
    return (algorithm.to_bytes(2, "big") + size.to_bytes(3, "big")
            + len(data).to_bytes(3, "big") + data)


@pytest.mark.parametrize(("fingerprint", "algorithm"), [
    ("chrome", ch.CERT_COMPRESSION_BROTLI), ("firefox", ch.CERT_COMPRESSION_ZLIB),
    ("firefox", ch.CERT_COMPRESSION_BROTLI),
])
def test_a_compressed_certificate_opens_to_the_certificate(
    good: Leaf, fingerprint: str, algorithm: int
) -> None:
    body = b"\x00" + (len(good.der) + 5).to_bytes(3, "big") + len(good.der).to_bytes(
        3, "big") + good.der + b"\x00\x00"
    client = Tls13Client(
        ch.HelloDraft.new(ch.shape_for(fingerprint), "localhost", (), os.urandom),
        AnyCertificate(),
    )
    assert client._decompress(compressed(algorithm, body)) == body


def test_compressed_certificates_that_lie_or_were_not_offered_are_refused(good: Leaf) -> None:
    client = Tls13Client(ch.HelloDraft.new(ch.CHROME, "localhost", (), os.urandom),
                         AnyCertificate())
    bomb = bytes(1 << 20)
    with pytest.raises(TlsError, match="larger than it said"):
        client._decompress(compressed(ch.CERT_COMPRESSION_BROTLI, bomb, claimed=1000))
    with pytest.raises(TlsError, match="did not offer"):
        client._decompress(compressed(ch.CERT_COMPRESSION_ZLIB, good.der))  # Chrome: brotli only
