"""The REALITY client's hello and certificate check, against the server's half of
codecs/reality.py (what Xray's and sing-box's servers compute) and against a real OpenSSL
server standing where a REALITY server would splice to dest."""

from __future__ import annotations

import os
import ssl
import time

import pytest

from elsewhere.codecs import client_hellos as ch
from elsewhere.codecs import reality
from elsewhere.codecs.reality_client import NOT_AUTHENTICATED, RealityHello
from elsewhere.codecs.tls13_client import CertificateRefused, Tls13Client
from elsewhere.codecs.tls13_trust import CertificateError
from elsewhere.codecs.tls_hello import parse_client_hello
from elsewhere.lab.clienthello import ja4
from tls13_pki import Pki

SNI = "www.example.com"
SHORT_ID = reality.parse_short_id("0123456789abcdef")


def keys(private: bytes, max_time_diff: float = 60.0) -> reality.RealityKeys:
    return reality.RealityKeys(
        private_key=private, short_ids=frozenset({SHORT_ID}), server_names=frozenset({SNI}),
        max_time_diff=max_time_diff,
    )


def hello_for(fingerprint: str, public: bytes, now: float) -> tuple[RealityHello, bytes]:
    auth = RealityHello(public, SHORT_ID, now)
    draft = ch.HelloDraft.new(ch.shape_for(fingerprint), SNI, ("h2", "http/1.1"), os.urandom)
    client = Tls13Client(draft, auth, finish_hello=auth.finish)
    return auth, client.start()


@pytest.mark.parametrize("fingerprint", ["chrome", "firefox"])
def test_the_server_opens_our_token_and_we_accept_its_temporary_certificate(
    fingerprint: str,
) -> None:
    private = reality.generate_private_key()
    now = time.time()
    auth, record = hello_for(fingerprint, reality.public_key(private), now)
    verdict = reality.authenticate(parse_client_hello(record), keys(private), now)
    assert isinstance(verdict, reality.Authenticated)
    assert verdict.token.short_id == SHORT_ID
    assert verdict.token.version == reality.CLIENT_VERSION
    assert verdict.auth_key == auth.auth_key
    certificate = reality.CertificateTemplate.generate().for_session(verdict.auth_key)
    auth.check([certificate], now)  # passes


@pytest.mark.parametrize("fingerprint", ["chrome", "firefox"])
def test_a_sealed_hello_keeps_the_browsers_fingerprint(fingerprint: str) -> None:
    _, record = hello_for(fingerprint, reality.public_key(reality.generate_private_key()), 0)
    sealed = parse_client_hello(record)
    draft = ch.HelloDraft.new(ch.shape_for(fingerprint), SNI, ("h2", "http/1.1"), os.urandom)
    plain = parse_client_hello(Tls13Client(draft, RealityHello(bytes(32), SHORT_ID, 0)).start())
    assert ja4(sealed) == ja4(plain)
    assert len(sealed.session_id) == 32 and sealed.session_id != draft.session_id


def test_a_wrong_public_key_is_a_bad_token_to_the_server() -> None:
    private = reality.generate_private_key()
    now = time.time()
    _, record = hello_for("chrome", reality.public_key(reality.generate_private_key()), now)
    verdict = reality.authenticate(parse_client_hello(record), keys(private), now)
    assert verdict is reality.Refusal.BAD_TOKEN


def test_a_clock_off_beyond_max_time_diff_is_refused_by_the_server() -> None:
    private = reality.generate_private_key()
    now = time.time()
    _, record = hello_for("chrome", reality.public_key(private), now - 600)
    verdict = reality.authenticate(parse_client_hello(record), keys(private, 60), now)
    assert verdict is reality.Refusal.CLOCK


def test_a_certificate_under_another_key_is_not_authenticated() -> None:
    auth = RealityHello(reality.public_key(reality.generate_private_key()), SHORT_ID, 0)
    auth.auth_key = bytes(32)
    template = reality.CertificateTemplate.generate().for_session(bytes(range(32)))
    with pytest.raises(CertificateError, match="did not authenticate"):
        auth.check([template], 0)  # an HMAC under another key


def test_openssl_where_the_server_spliced_to_dest_ends_in_one_clear_line(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    """What the client meets when the server did not authenticate it: dest's own TLS."""
    pki = Pki(tmp_path_factory.mktemp("dest"))
    leaf = pki.leaf("dest", names=(SNI,))
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(leaf.cert, leaf.key)
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    server = context.wrap_bio(incoming, outgoing, server_side=True)
    auth = RealityHello(reality.public_key(reality.generate_private_key()), SHORT_ID, time.time())
    draft = ch.HelloDraft.new(ch.CHROME, SNI, ("h2", "http/1.1"), os.urandom)
    client = Tls13Client(draft, auth, finish_hello=auth.finish)
    incoming.write(client.start())
    with pytest.raises(ssl.SSLWantReadError):
        server.do_handshake()
    with pytest.raises(CertificateRefused) as caught:
        client.feed(outgoing.read(), time.time())
    assert str(caught.value) == NOT_AUTHENTICATED
    assert not client.established
