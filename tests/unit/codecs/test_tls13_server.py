"""Our TLS 1.3 server against the real OpenSSL client (the stdlib's ssl through memory BIOs):
the handshake verifies with OpenSSL checking the chain, the name and our CertificateVerify, and
records go both ways; then dest's shape is copied."""

import contextlib
import dataclasses
import datetime
import ssl
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.x509.oid import NameOID

from elsewhere.codecs.tls13_server import (
    CHANGE_CIPHER_SPEC_RECORD,
    DestFlight,
    ServerIdentity,
    Tls13Server,
    read_dest_flight,
)
from elsewhere.codecs.tls_hello import parse_client_hello
from elsewhere.errors import ProtocolError

NAME = "cdn.test"


def identity() -> ServerIdentity:
    key = Ed25519PrivateKey.generate()
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, NAME)])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder().subject_name(name).issuer_name(name).serial_number(42)
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .public_key(key.public_key())
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(NAME)]), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, None)
    )
    return ServerIdentity(chain=(cert.public_bytes(serialization.Encoding.DER),), key=key)


class Client:
    """OpenSSL's client end in memory."""

    def __init__(self, context: ssl.SSLContext) -> None:
        self.incoming, self.outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
        self.tls = context.wrap_bio(self.incoming, self.outgoing, server_hostname=NAME)

    def step(self, received: bytes = b"") -> bytes:
        if received:
            self.incoming.write(received)
        with contextlib.suppress(ssl.SSLWantReadError):
            self.tls.do_handshake()
        return self.outgoing.read()


def verifying_context(ident: ServerIdentity, tmp_path: Path) -> ssl.SSLContext:
    pem = tmp_path / "ca.pem"
    pem.write_bytes(ssl.DER_cert_to_PEM_cert(ident.chain[0]).encode())
    context = ssl.create_default_context(cafile=str(pem))
    context.minimum_version = ssl.TLSVersion.TLSv1_3
    context.set_alpn_protocols(["h2", "http/1.1"])
    return context


def drain(server: Tls13Server) -> bytes:
    out = b""
    while (data := server.next_data()) is not None:
        out += data
    return out


def handshake(
    client: Client, ident: ServerIdentity, suite: int | None = None
) -> tuple[Tls13Server, bytes]:
    hello = parse_client_hello(client.step())
    if suite is not None:  # the server takes the client's first suite it has: leave one
        hello = dataclasses.replace(hello, cipher_suites=(suite,))
    server = Tls13Server(hello, ident, alpn=("http/1.1",))
    flight = server.start()
    finished = client.step(flight)
    server.receive(finished)
    assert drain(server) == b""
    return server, flight


SUITES = {0x1301: "TLS_AES_128_GCM_SHA256", 0x1302: "TLS_AES_256_GCM_SHA384",
          0x1303: "TLS_CHACHA20_POLY1305_SHA256"}


@pytest.mark.parametrize("code", sorted(SUITES))
def test_openssl_verifies_our_handshake_and_records_go_both_ways(
    tmp_path: Path, code: int
) -> None:
    ident = identity()
    client = Client(verifying_context(ident, tmp_path))
    server, _ = handshake(client, ident, code)
    suite = SUITES[code]
    assert server.handshake_complete
    assert client.tls.version() == "TLSv1.3"
    assert client.tls.cipher()[0] == suite  # type: ignore[index]
    assert client.tls.selected_alpn_protocol() == "http/1.1"
    client.tls.write(b"GET / HTTP/1.1\r\n\r\n" + b"x" * 40000)
    server.receive(client.outgoing.read())
    assert drain(server) == b"GET / HTTP/1.1\r\n\r\n" + b"x" * 40000
    reply = b"y" * 70000
    client.incoming.write(server.send(reply))
    got = b""
    with contextlib.suppress(ssl.SSLWantReadError):
        while len(got) < len(reply):
            got += client.tls.read(1 << 20)
    assert got == reply


def test_a_client_that_trusts_another_certificate_refuses_ours(tmp_path: Path) -> None:
    client = Client(verifying_context(identity(), tmp_path))
    first = client.step()
    server = Tls13Server(parse_client_hello(first), identity())
    with pytest.raises(ssl.SSLCertVerificationError):
        client.step(server.start())


def test_a_wrong_client_finished_or_a_flipped_record_bit_is_refused(tmp_path: Path) -> None:
    ident = identity()
    client = Client(verifying_context(ident, tmp_path))
    first = client.step()
    server = Tls13Server(parse_client_hello(first), ident)
    finished = bytearray(client.step(server.start()))
    finished[-3] ^= 1
    server.receive(bytes(finished))
    with pytest.raises(ProtocolError):
        drain(server)


def test_close_notify_both_ways(tmp_path: Path) -> None:
    ident = identity()
    client = Client(verifying_context(ident, tmp_path))
    server, _ = handshake(client, ident)
    client.incoming.write(server.send(b"before"))
    assert client.tls.read(100) == b"before"
    client.incoming.write(server.close())
    assert client.tls.read(100) == b""  # the stdlib's way of saying close_notify
    with contextlib.suppress(ssl.SSLError):
        client.tls.unwrap()
    server.receive(client.outgoing.read())
    assert drain(server) == b""
    assert server.peer_closed


def dest_flight(lengths: list[int], server_hello_record: bytes) -> bytes:
    """A dest-like flight: its ServerHello record, CCS, then records of these total lengths."""
    records = b"".join(b"\x17\x03\x03" + (n - 5).to_bytes(2, "big") + bytes(n - 5)
                       for n in lengths)
    return server_hello_record + CHANGE_CIPHER_SPEC_RECORD + records


def test_with_dest_copied_the_server_hello_is_dests_but_the_share_and_lengths_match(
    tmp_path: Path,
) -> None:
    ident = identity()
    # dest: another run of our own server without copying, standing in for a real site
    # (the same ClientHello went to dest: its ServerHello echoes the same session id)
    client = Client(verifying_context(ident, tmp_path))
    hello = parse_client_hello(client.step())
    dest_side = Tls13Server(hello, ident)
    dest_first = dest_side.start()
    sh_record = dest_first[: 5 + int.from_bytes(dest_first[3:5], "big")]
    lengths = [120, 2100, 300, 90]
    stream = dest_flight(lengths, sh_record)
    for cut in (3, len(sh_record), len(sh_record) + 6, len(stream) - 1):
        assert read_dest_flight(stream[:cut]) is None
    dest = read_dest_flight(stream)
    assert isinstance(dest, DestFlight)
    assert dest.record_lengths == tuple(lengths)

    server = Tls13Server(hello, ident, dest=dest)
    flight = server.start()
    ours_sh = flight[: len(sh_record)]
    share_at = 5 + dest.server_hello.key_share_offset
    assert ours_sh[:share_at] == sh_record[:share_at]  # dest's random, suite, extensions
    assert ours_sh[share_at : share_at + 32] != sh_record[share_at : share_at + 32]
    rest = flight[len(sh_record) + 6 :]
    seen = []
    while rest:
        size = 5 + int.from_bytes(rest[3:5], "big")
        seen.append(size)
        rest = rest[size:]
    assert seen[1:] == lengths[1:]  # EE was padded to 120 too unless longer
    assert seen[0] == max(lengths[0], seen[0])
    # and it is still a handshake OpenSSL completes (with the certificate of this test)
    server.receive(client.step(flight))
    assert drain(server) == b"" and server.handshake_complete


def test_dest_flights_that_cannot_be_copied_say_so() -> None:
    assert read_dest_flight(b"\x15\x03\x03\x00\x02\x02\x28") is False  # an alert
    assert read_dest_flight(b"\x16\x03\x03\x00\x04\x02\x00\x00\x00") is False  # short SH
    assert read_dest_flight(b"HTTP/1.1 400 Bad Request\r\n") is False
    assert read_dest_flight(b"") is None


@pytest.mark.parametrize("fingerprint", ["chrome", "firefox"])
def test_elsewheres_reality_client_with_a_browsers_hello_authenticates_and_talks(
    fingerprint: str,
) -> None:
    """codecs/tls13_client.py (another engineer's TLS 1.3 client, a browser's hello with its
    X25519MLKEM768 and GREASE shares) against this server and codecs/reality: the server opens
    the token, signs with ed25519 though the hello offers no ed25519, and the client takes the
    temporary certificate."""
    import os
    import time

    from elsewhere.codecs import client_hellos, reality
    from elsewhere.codecs.reality_client import RealityHello
    from elsewhere.codecs.tls13_client import DataReceived, HandshakeDone, Tls13Client

    private = reality.generate_private_key()
    sid = reality.parse_short_id("0123abcd")
    hello_side = RealityHello(reality.public_key(private), sid, time.time())
    shape = client_hellos.shape_for(fingerprint)
    draft = client_hellos.HelloDraft.new(shape, NAME, ("h2", "http/1.1"), os.urandom)
    client = Tls13Client(draft, hello_side, hello_side.finish)
    hello = parse_client_hello(client.start())
    assert 0x0807 not in hello.signature_algorithms  # a browser's: no ed25519
    keys = reality.RealityKeys(private_key=private, short_ids=frozenset({sid}),
                               server_names=frozenset({NAME}), max_time_diff=60)
    verdict = reality.authenticate(hello, keys, time.time())
    assert isinstance(verdict, reality.Authenticated)
    template = reality.CertificateTemplate.generate()
    server = Tls13Server(hello, ServerIdentity((template.for_session(verdict.auth_key),),
                                               template.key))
    client.feed(server.start(), time.time())
    events = list(client.events())
    assert any(isinstance(event, HandshakeDone) for event in events)
    server.receive(client.data_to_send() + client.send(b"ping"))
    assert drain(server) == b"ping"
    client.feed(server.send(b"pong"), time.time())
    assert [e.data for e in client.events() if isinstance(e, DataReceived)] == [b"pong"]


def test_a_dest_that_chose_x25519mlkem768_is_copied_with_a_real_hybrid_share() -> None:
    """dest's ServerHello names X25519MLKEM768 (as big sites answer Chrome): ours copies it
    with our own ML-KEM ciphertext and X25519 key, and Chrome's hello finishes with it."""
    import os
    import struct
    import time

    from elsewhere.codecs import client_hellos
    from elsewhere.codecs.tls13_client import HandshakeDone, Tls13Client
    from elsewhere.codecs.tls13_trust import AnyCertificate

    draft = client_hellos.HelloDraft.new(client_hellos.shape_for("chrome"), NAME, ("h2",),
                                         os.urandom)
    client = Tls13Client(draft, AnyCertificate())
    hello = parse_client_hello(client.start())
    share = struct.pack("!HH", 0x11EC, 1120) + bytes(1120)
    extensions = struct.pack("!HHH", 0x2B, 2, 0x0304) + struct.pack("!HH", 0x33, len(share)) + share
    body = (b"\x03\x03" + os.urandom(32) + bytes((len(hello.session_id),)) + hello.session_id
            + b"\x13\x01\x00" + struct.pack("!H", len(extensions)) + extensions)
    message = b"\x02" + len(body).to_bytes(3, "big") + body
    sh_record = b"\x16\x03\x03" + len(message).to_bytes(2, "big") + message
    dest = read_dest_flight(dest_flight([100, 1500, 300, 80], sh_record))
    assert isinstance(dest, DestFlight)
    ident = identity()
    server = Tls13Server(hello, ident, dest=dest)
    client.feed(server.start(), time.time())
    done = [e for e in client.events() if isinstance(e, HandshakeDone)]
    assert done and done[0].group == 0x11EC
    server.receive(client.data_to_send())
    assert drain(server) == b"" and server.handshake_complete
