"""An ACME client (RFC 8555) for the server's own certificate: an account key that signs JWS with
ES256 (RFC 7515, RFC 7518 3.4), a new order, http-01 challenges (RFC 8555 8.3) answered from a
table that the built-in port-80 responder or the fallback web server reads, a CSR to finalize,
and the PEM chain saved in the data dir and renewed when it is close to expiry. ServerCertificate
(transports/tls.py) notices the new files on its own.

HTTP is the stdlib's http.client in a worker thread: a dozen requests per certificate, each
with a timeout, off the event loop."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import email.message
import http.client
import json
import logging
import os
import ssl
import time
import urllib.parse
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature
from cryptography.x509.oid import NameOID

from elsewhere.control.certs import CertificateFiles, write_private
from elsewhere.errors import ConfigError
from elsewhere.transports.tcp import listen
from elsewhere.transports.tls import certificate_names, client_context

log = logging.getLogger("elsewhere.acme")

LETS_ENCRYPT = "https://acme-v02.api.letsencrypt.org/directory"
CHALLENGE_PATH = "/.well-known/acme-challenge/"  # RFC 8555 8.3
JOSE_JSON = "application/jose+json"  # RFC 8555 6.2
PEM_CHAIN = "application/pem-certificate-chain"  # RFC 8555 9.1
ES256_SIZE = 32  # RFC 7518 3.4: R and S, each a 32-byte big-endian integer
RENEW_WITHIN = timedelta(days=30)  # what certbot and Caddy do for 90-day certificates
CHECK_EVERY = 12 * 3600.0
RETRY_AFTER_FAILURE = 3600.0
HTTP_TIMEOUT = 30.0
# Bounds on waiting for the CA: a validation takes seconds, finalization as long.
POLL_TIMEOUT = 180.0
POLL_FIRST, POLL_MAX = 0.25, 10.0
BAD_NONCE_RETRIES = 5  # a CA may refuse a good nonce now and then (pebble: 5%)
MAX_HEAD = 8192  # longest HTTP request head the port-80 responder reads
RESPONDER_TIMEOUT = 10.0
ACME_DIR = ("certificates", "acme")


class AcmeError(ConfigError):
    """The CA refused or could not be reached; the message says which step and the CA's reason."""


# JWS, RFC 7515 / RFC 7518 / RFC 7638


def b64url(data: bytes) -> str:
    """base64url without padding (RFC 7515 2)."""
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def jwk(key: ec.EllipticCurvePublicKey) -> dict[str, str]:
    """The public JWK of a P-256 key (RFC 7518 6.2.1), members in RFC 7638's order."""
    numbers = key.public_numbers()
    return {
        "crv": "P-256",
        "kty": "EC",
        "x": b64url(numbers.x.to_bytes(ES256_SIZE, "big")),
        "y": b64url(numbers.y.to_bytes(ES256_SIZE, "big")),
    }


def jwk_thumbprint(key: ec.EllipticCurvePublicKey) -> str:
    """RFC 7638: SHA-256 of the required members, sorted, without whitespace."""
    canonical = json.dumps(jwk(key), sort_keys=True, separators=(",", ":")).encode()
    digest = hashes.Hash(hashes.SHA256())
    digest.update(canonical)
    return b64url(digest.finalize())


def key_authorization(token: str, key: ec.EllipticCurvePrivateKey) -> str:
    """What the http-01 resource must serve (RFC 8555 8.1)."""
    return f"{token}.{jwk_thumbprint(key.public_key())}"


def sign(
    key: ec.EllipticCurvePrivateKey,
    url: str,
    nonce: str,
    payload: Mapping[str, Any] | None,
    kid: str | None,
) -> bytes:
    """A flattened JWS (RFC 8555 6.2): `jwk` before the account exists, `kid` after; a None
    payload is the empty string of a POST-as-GET (RFC 8555 6.3)."""
    protected: dict[str, Any] = {"alg": "ES256", "nonce": nonce, "url": url}
    if kid is None:
        protected["jwk"] = jwk(key.public_key())
    else:
        protected["kid"] = kid
    header = b64url(json.dumps(protected).encode())
    body = "" if payload is None else b64url(json.dumps(payload).encode())
    der = key.sign(f"{header}.{body}".encode("ascii"), ec.ECDSA(hashes.SHA256()))
    r, s = decode_dss_signature(der)
    signature = r.to_bytes(ES256_SIZE, "big") + s.to_bytes(ES256_SIZE, "big")
    return json.dumps(
        {"protected": header, "payload": body, "signature": b64url(signature)}
    ).encode()


def make_csr(domains: Sequence[str], key: ec.EllipticCurvePrivateKey) -> bytes:
    """A DER CSR for the domains, all in the subjectAltName (RFC 8555 7.4)."""
    csr = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, domains[0])]))
        .add_extension(
            x509.SubjectAlternativeName([x509.DNSName(d) for d in domains]), critical=False
        )
        .sign(key, hashes.SHA256())
    )
    return csr.public_bytes(serialization.Encoding.DER)


# http-01 answers


class ChallengeResponder:
    """The key authorizations the CA will fetch from http://DOMAIN/.well-known/acme-challenge/
    TOKEN. Whatever answers port 80 — `serve()` here, or the fallback web server — asks
    `answer(path)` first and serves the string it returns as the body, if any."""

    def __init__(self) -> None:
        self._answers: dict[str, str] = {}

    def add(self, token: str, authorization: str) -> None:
        self._answers[token] = authorization

    def remove(self, token: str) -> None:
        self._answers.pop(token, None)

    def answer(self, path: str) -> str | None:
        """The body for a request path (query ignored), or None when it is no challenge."""
        path = path.split("?", 1)[0]
        if not path.startswith(CHALLENGE_PATH):
            return None
        return self._answers.get(path[len(CHALLENGE_PATH) :])

    def respond(self, head: bytes) -> bytes:
        """A whole HTTP/1.1 response to a request head: the key authorization for a challenge,
        a redirect to https for anything else (what a site's port 80 usually does)."""
        lines = head.decode("latin-1").split("\r\n")
        method, _, rest = lines[0].partition(" ")
        target = rest.rpartition(" ")[0] or rest
        host = ""
        for line in lines[1:]:
            name, _, value = line.partition(":")
            if name.strip().lower() == "host":
                host = value.strip()
        body = self.answer(target) if method in ("GET", "HEAD") else None
        if body is not None:
            status, headers, content = "200 OK", "Content-Type: application/octet-stream\r\n", body
        elif host and target.startswith("/") and all(c > " " for c in host + target):
            status, headers, content = (
                "301 Moved Permanently",
                f"Location: https://{host}{target}\r\n",
                "",
            )
        else:
            status, headers, content = (
                "404 Not Found",
                "Content-Type: text/plain\r\n",
                "Not Found\n",
            )
        data = content.encode()
        response = (
            f"HTTP/1.1 {status}\r\n{headers}Content-Length: {len(data)}\r\n"
            "Connection: close\r\n\r\n"
        ).encode()
        return response if method == "HEAD" else response + data

    async def serve(self, host: str, port: int) -> asyncio.Server:
        """A tiny HTTP server for port 80 that answers challenges and redirects the rest."""
        return await listen(
            lambda: asyncio.StreamReaderProtocol(
                asyncio.StreamReader(limit=MAX_HEAD), self._handle
            ),
            host,
            port,
            "ACME http-01 responder",
        )

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            async with asyncio.timeout(RESPONDER_TIMEOUT):
                head = await reader.readuntil(b"\r\n\r\n")
                writer.write(self.respond(head))
                await writer.drain()
        except (TimeoutError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, OSError):
            pass
        finally:
            writer.close()


# the protocol


@dataclass
class _Response:
    status: int
    headers: email.message.Message
    body: bytes

    def json(self) -> dict[str, Any]:
        try:
            value = json.loads(self.body)
        except ValueError:
            return {}
        return value if isinstance(value, dict) else {}


@dataclass
class AcmeClient:
    """One account at one CA. `ca_file` is trust for the CA's own HTTPS (tests: pebble)."""

    directory_url: str
    account_key: ec.EllipticCurvePrivateKey
    ca_file: str | os.PathLike[str] | None = None
    email: str | None = None
    timeout: float = HTTP_TIMEOUT
    _directory: dict[str, Any] = field(default_factory=dict)
    _nonce: str | None = None
    _kid: str | None = None

    def __post_init__(self) -> None:
        self._ssl = client_context(ca_file=self.ca_file, alpn=())

    async def issue(
        self,
        domains: Sequence[str],
        responder: ChallengeResponder,
        key: ec.EllipticCurvePrivateKey,
    ) -> bytes:
        """Order a certificate for `domains` (the key's), prove control of each over http-01,
        finalize and download: the PEM chain, leaf first."""
        await self._load_directory()
        await self._account()
        response = await self._post(
            self._url("newOrder"),
            {"identifiers": [{"type": "dns", "value": d} for d in domains]},
            "new order",
        )
        order_url = response.headers.get("Location")
        if not order_url:
            raise AcmeError("ACME new order: the CA gave no order URL")
        order = response.json()
        tokens: list[str] = []
        try:
            for authz_url in order.get("authorizations", ()):
                await self._authorize(authz_url, responder, tokens)
        finally:
            for token in tokens:
                responder.remove(token)
        order = await self._poll(order_url, ("ready", "valid"), "order", None)
        if order.get("status") == "ready":
            finalized = await self._post(
                order["finalize"], {"csr": b64url(make_csr(domains, key))}, "finalize"
            )
            order = await self._poll(order_url, ("valid",), "order", finalized.json())
        chain = await self._post(order["certificate"], None, "certificate download", PEM_CHAIN)
        return chain.body

    async def _account(self) -> None:
        if self._kid is not None:
            return
        payload: dict[str, Any] = {"termsOfServiceAgreed": True}
        if self.email:
            payload["contact"] = [f"mailto:{self.email}"]
        # RFC 8555 7.3: a known key gets its existing account back (200) instead of a new one
        response = await self._post(self._url("newAccount"), payload, "account")
        self._kid = response.headers.get("Location")
        if not self._kid:
            raise AcmeError("ACME account: the CA gave no account URL")

    async def _authorize(
        self, authz_url: str, responder: ChallengeResponder, tokens: list[str]
    ) -> None:
        authz = (await self._post(authz_url, None, "authorization")).json()
        name = authz.get("identifier", {}).get("value", "?")
        if authz.get("status") == "valid":
            return
        challenge = next(
            (c for c in authz.get("challenges", ()) if c.get("type") == "http-01"), None
        )
        if challenge is None:
            raise AcmeError(f"ACME {name}: the CA offers no http-01 challenge")
        token = challenge["token"]
        responder.add(token, key_authorization(token, self.account_key))
        tokens.append(token)
        await self._post(challenge["url"], {}, f"challenge for {name}")
        try:
            await self._poll(authz_url, ("valid",), f"validation of {name}", None)
        except AcmeError as exc:
            raise AcmeError(
                f"{exc}; the CA fetches http://{name}{CHALLENGE_PATH}… on port 80, "
                "so that port must reach elsewhere's responder or fallback"
            ) from None

    async def _poll(
        self, url: str, done: tuple[str, ...], what: str, state: dict[str, Any] | None
    ) -> dict[str, Any]:
        deadline = time.monotonic() + POLL_TIMEOUT
        delay = POLL_FIRST
        while True:
            if state is not None:
                status = state.get("status")
                if status in done:
                    return state
                if status == "invalid":
                    raise AcmeError(f"ACME {what} failed: {_problem_of(state)}")
            if time.monotonic() > deadline:
                raise AcmeError(f"ACME {what}: the CA did not finish within {POLL_TIMEOUT:.0f} s")
            if state is not None:
                await asyncio.sleep(delay)
                delay = min(delay * 2, POLL_MAX)
            response = await self._post(url, None, what)
            state = response.json()
            retry_after = response.headers.get("Retry-After", "")
            if retry_after.isdigit():
                delay = min(max(float(retry_after), POLL_FIRST), POLL_MAX)

    async def _load_directory(self) -> None:
        if not self._directory:
            response = await self._request("GET", self.directory_url, None, {}, "directory")
            self._directory = response.json()

    def _url(self, name: str) -> str:
        url = self._directory.get(name)
        if not isinstance(url, str):
            raise AcmeError(f"ACME directory {self.directory_url} has no {name}")
        return url

    async def _post(
        self, url: str, payload: Mapping[str, Any] | None, what: str, accept: str | None = None
    ) -> _Response:
        await self._load_directory()
        for _ in range(BAD_NONCE_RETRIES):
            if self._nonce is None:
                await self._request("HEAD", self._url("newNonce"), None, {}, "nonce")
            nonce, self._nonce = self._nonce, None
            body = sign(self.account_key, url, nonce or "", payload, self._kid)
            headers = {"Content-Type": JOSE_JSON}
            if accept:
                headers["Accept"] = accept
            response = await self._request("POST", url, body, headers, what)
            if response.status < 400:
                return response
            problem = response.json()
            if problem.get("type") != "urn:ietf:params:acme:error:badNonce":
                raise AcmeError(f"ACME {what} refused: {_problem_of({'error': problem})}")
        raise AcmeError(f"ACME {what}: the CA kept rejecting our nonces")

    async def _request(
        self, method: str, url: str, body: bytes | None, headers: dict[str, str], what: str
    ) -> _Response:
        try:
            response = await asyncio.to_thread(self._blocking, method, url, body, headers)
        except (OSError, http.client.HTTPException) as exc:
            reason = exc.reason if isinstance(exc, ssl.SSLError) else exc
            raise AcmeError(f"ACME {what}: cannot reach {_origin(url)}: {reason}") from None
        if response.headers.get("Replay-Nonce"):
            self._nonce = response.headers["Replay-Nonce"]
        if method == "GET" and response.status >= 400:
            raise AcmeError(f"ACME {what}: {url} answered {response.status}")
        return response

    def _blocking(
        self, method: str, url: str, body: bytes | None, headers: dict[str, str]
    ) -> _Response:
        parts = urllib.parse.urlsplit(url)
        if parts.scheme != "https" or not parts.hostname:
            raise http.client.InvalidURL(f"not an https URL: {url}")
        connection = http.client.HTTPSConnection(
            parts.hostname, parts.port, timeout=self.timeout, context=self._ssl
        )
        try:
            target = parts.path or "/"
            if parts.query:
                target += "?" + parts.query
            connection.request(
                method, target, body=body, headers={"User-Agent": "elsewhere-acme", **headers}
            )
            raw = connection.getresponse()
            return _Response(raw.status, raw.headers, raw.read())
        finally:
            connection.close()


# certificates in the data dir


@dataclass(frozen=True)
class AcmeSettings:
    """What the inbound's `acme` option says: the domains, and optionally the CA, a contact
    address, and trust for the CA's own HTTPS (for a private or test CA)."""

    domains: tuple[str, ...]
    directory: str = LETS_ENCRYPT
    email: str | None = None
    ca_file: str | None = None

    def __post_init__(self) -> None:
        if not self.domains:
            raise ConfigError("acme needs a domain: the name clients connect to, e.g. example.com")


def certificate_files(data_dir: str | os.PathLike[str], domain: str) -> CertificateFiles:
    """Where the ACME certificate for `domain` lives in the data dir (certbot's file names)."""
    folder = Path(data_dir).joinpath(*ACME_DIR, domain.lower())
    return CertificateFiles(folder / "fullchain.pem", folder / "privkey.pem")


def needs_renewal(
    files: CertificateFiles,
    domains: Sequence[str],
    now: datetime,
    within: timedelta = RENEW_WITHIN,
) -> bool:
    """True when the certificate is missing, unreadable, not for all `domains`, or expires
    within `within` of `now`."""
    try:
        leaf = x509.load_pem_x509_certificate(files.cert.read_bytes())
    except (OSError, ValueError):
        return True
    if not files.key.exists():
        return True
    names = {n.lower() for n in certificate_names(leaf)}
    if not {d.lower() for d in domains} <= names:
        return True
    return leaf.not_valid_after_utc - now < within


async def obtain(
    settings: AcmeSettings, data_dir: str | os.PathLike[str], responder: ChallengeResponder
) -> CertificateFiles:
    """Issue a certificate now (new key, account key kept in the data dir) and save it."""
    account_key = _account_key(Path(data_dir).joinpath(*ACME_DIR, "account.key"))
    client = AcmeClient(
        settings.directory, account_key, ca_file=settings.ca_file, email=settings.email
    )
    key = ec.generate_private_key(ec.SECP256R1())
    chain = await client.issue(settings.domains, responder, key)
    try:
        x509.load_pem_x509_certificates(chain)
    except ValueError:
        raise AcmeError("ACME certificate download: the CA sent no PEM chain") from None
    files = certificate_files(data_dir, settings.domains[0])
    # key first: a reload between the two writes sees a mismatch, keeps the old pair and
    # looks again, where the other order could never be told apart from a finished one
    write_private(
        files.key,
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        ),
    )
    write_private(files.cert, chain)
    log.info(
        "certificate for %s obtained from %s",
        ", ".join(settings.domains),
        _origin(settings.directory),
    )
    return files


async def ensure(
    settings: AcmeSettings,
    data_dir: str | os.PathLike[str],
    responder: ChallengeResponder,
    *,
    now: datetime | None = None,
) -> CertificateFiles:
    """The saved certificate, issued first if missing or due for renewal."""
    files = certificate_files(data_dir, settings.domains[0])
    if needs_renewal(files, settings.domains, now or datetime.now(UTC)):
        files = await obtain(settings, data_dir, responder)
    return files


async def keep_renewed(
    settings: AcmeSettings,
    data_dir: str | os.PathLike[str],
    responder: ChallengeResponder,
    *,
    check_every: float = CHECK_EVERY,
) -> None:
    """Run for the server's life: renew when due; a failure is logged and tried again in an
    hour, long before the old certificate runs out."""
    while True:
        try:
            await ensure(settings, data_dir, responder)
            delay = check_every
        except AcmeError as exc:
            log.warning("%s; trying again in %.0f minutes", exc, RETRY_AFTER_FAILURE / 60)
            delay = RETRY_AFTER_FAILURE
        await asyncio.sleep(delay)


def _account_key(path: Path) -> ec.EllipticCurvePrivateKey:
    with contextlib.suppress(OSError, ValueError, TypeError):
        key = serialization.load_pem_private_key(path.read_bytes(), password=None)
        if isinstance(key, ec.EllipticCurvePrivateKey):
            return key
    key = ec.generate_private_key(ec.SECP256R1())
    write_private(
        path,
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        ),
    )
    return key


def _problem_of(state: Mapping[str, Any]) -> str:
    """The CA's reason (RFC 7807 problem document) from an order, authorization or response."""
    problems = [state.get("error")]
    problems += [c.get("error") for c in state.get("challenges", ()) if isinstance(c, dict)]
    for problem in problems:
        if isinstance(problem, dict) and (problem.get("detail") or problem.get("type")):
            kind = str(problem.get("type", "")).rsplit(":", 1)[-1]
            return f"{problem.get('detail') or kind} ({kind})"
    return f"status {state.get('status', 'unknown')}"


def _origin(url: str) -> str:
    parts = urllib.parse.urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}"
