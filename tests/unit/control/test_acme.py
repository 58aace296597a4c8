"""The pure parts of the ACME client (RFC 8555): JWS with ES256, the JWK thumbprint, key
authorizations, the CSR, the http-01 answers and when a certificate is due for renewal. Issuance
itself runs against pebble in tests/interop/test_acme_pebble.py."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

from elsewhere.control import acme
from elsewhere.control.certs import self_signed
from elsewhere.errors import ConfigError

KEY = ec.derive_private_key(0x5EC12E7, ec.SECP256R1())


def unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def verify_es256(jws: dict[str, str], key: ec.EllipticCurvePublicKey) -> None:
    raw = unb64(jws["signature"])
    assert len(raw) == 64  # RFC 7518 3.4: R || S, not DER
    signature = encode_dss_signature(
        int.from_bytes(raw[:32], "big"), int.from_bytes(raw[32:], "big")
    )
    signed = f"{jws['protected']}.{jws['payload']}".encode()
    key.verify(signature, signed, ec.ECDSA(hashes.SHA256()))


def test_a_jws_before_the_account_exists_carries_the_jwk_and_verifies() -> None:
    body = json.loads(acme.sign(KEY, "https://ca/new-acct", "n0nce", {"a": 1}, None))
    protected = json.loads(unb64(body["protected"]))
    assert protected == {
        "alg": "ES256",
        "nonce": "n0nce",
        "url": "https://ca/new-acct",
        "jwk": acme.jwk(KEY.public_key()),
    }
    assert json.loads(unb64(body["payload"])) == {"a": 1}
    verify_es256(body, KEY.public_key())


def test_a_jws_after_the_account_exists_names_it_by_kid_and_a_post_as_get_is_empty() -> None:
    body = json.loads(acme.sign(KEY, "https://ca/order/1", "n", None, "https://ca/acct/7"))
    protected = json.loads(unb64(body["protected"]))
    assert protected["kid"] == "https://ca/acct/7"
    assert "jwk" not in protected
    assert body["payload"] == ""
    verify_es256(body, KEY.public_key())


def test_a_tampered_jws_does_not_verify() -> None:
    body = json.loads(acme.sign(KEY, "https://ca/x", "n", {"a": 1}, "k"))
    body["payload"] = acme.b64url(b'{"a":2}')
    with pytest.raises(InvalidSignature):
        verify_es256(body, KEY.public_key())


def test_the_jwk_has_32_byte_coordinates_and_the_thumbprint_follows_rfc7638() -> None:
    jwk = acme.jwk(KEY.public_key())
    assert len(unb64(jwk["x"])) == len(unb64(jwk["y"])) == 32
    numbers = KEY.public_key().public_numbers()
    assert int.from_bytes(unb64(jwk["x"]), "big") == numbers.x
    # RFC 7638 3.2: required members in lexicographic order, no whitespace
    canonical = (
        '{"crv":"P-256","kty":"EC","x":"' + jwk["x"] + '","y":"' + jwk["y"] + '"}'
    ).encode()
    assert acme.jwk_thumbprint(KEY.public_key()) == acme.b64url(hashlib.sha256(canonical).digest())


def test_the_key_authorization_is_the_token_and_the_thumbprint() -> None:
    thumbprint = acme.jwk_thumbprint(KEY.public_key())
    assert acme.key_authorization("tok-EN_1", KEY) == f"tok-EN_1.{thumbprint}"


def test_the_csr_names_every_domain_and_is_signed_by_the_certificate_key() -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    csr = x509.load_der_x509_csr(acme.make_csr(["a.example", "b.example"], key))
    assert csr.is_signature_valid
    assert csr.public_key() == key.public_key()
    san = csr.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == ["a.example", "b.example"]


# http-01 answers


def responder_with(token: str = "TOKEN", answer: str = "TOKEN.print") -> acme.ChallengeResponder:
    responder = acme.ChallengeResponder()
    responder.add(token, answer)
    return responder


def test_the_responder_answers_only_its_challenge_paths() -> None:
    responder = responder_with()
    assert responder.answer("/.well-known/acme-challenge/TOKEN") == "TOKEN.print"
    assert responder.answer("/.well-known/acme-challenge/TOKEN?x=1") == "TOKEN.print"
    assert responder.answer("/.well-known/acme-challenge/OTHER") is None
    assert responder.answer("/TOKEN") is None
    responder.remove("TOKEN")
    assert responder.answer("/.well-known/acme-challenge/TOKEN") is None


def test_a_challenge_request_gets_the_key_authorization_as_the_body() -> None:
    head = b"GET /.well-known/acme-challenge/TOKEN HTTP/1.1\r\nHost: vpn.example\r\n\r\n"
    response = responder_with().respond(head)
    assert response.startswith(b"HTTP/1.1 200 OK\r\n")
    assert b"Content-Length: 11\r\n" in response
    assert response.endswith(b"\r\n\r\nTOKEN.print")
    head_only = responder_with().respond(head.replace(b"GET", b"HEAD"))
    assert head_only.endswith(b"\r\n\r\n")
    assert b"Content-Length: 11\r\n" in head_only


def test_anything_else_on_port_80_is_redirected_to_https_like_a_site_does() -> None:
    head = b"GET /about?x=1 HTTP/1.1\r\nHost: vpn.example\r\nUser-Agent: probe\r\n\r\n"
    response = responder_with().respond(head)
    assert response.startswith(b"HTTP/1.1 301 Moved Permanently\r\n")
    assert b"Location: https://vpn.example/about?x=1\r\n" in response
    assert responder_with().respond(b"GET / HTTP/1.0\r\n\r\n").startswith(b"HTTP/1.1 404")


async def test_the_built_in_responder_serves_over_tcp() -> None:
    server = await responder_with().serve("127.0.0.1", 0)
    try:
        port = server.sockets[0].getsockname()[1]
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"GET /.well-known/acme-challenge/TOKEN HTTP/1.1\r\nHost: x\r\n\r\n")
        response = await asyncio.wait_for(reader.read(), 5)
        writer.close()
    finally:
        server.close()
    assert response.startswith(b"HTTP/1.1 200 OK") and response.endswith(b"TOKEN.print")


# renewal


def test_a_certificate_is_due_when_missing_close_to_expiry_or_not_for_all_domains(
    tmp_path: Path,
) -> None:
    files = acme.certificate_files(tmp_path, "vpn.example")
    now = datetime(2026, 6, 1, tzinfo=UTC)
    assert acme.needs_renewal(files, ["vpn.example"], now)
    made_cert, made_key, _ = self_signed(tmp_path / "made", ["vpn.example"], now=now, days=90)
    files.cert.parent.mkdir(parents=True)
    made_cert.rename(files.cert)
    made_key.rename(files.key)
    assert not acme.needs_renewal(files, ["vpn.example"], now + timedelta(days=59))
    assert acme.needs_renewal(files, ["vpn.example"], now + timedelta(days=61))
    assert acme.needs_renewal(files, ["vpn.example", "www.vpn.example"], now)


def test_acme_without_a_domain_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="acme needs a domain"):
        acme.AcmeSettings(())
