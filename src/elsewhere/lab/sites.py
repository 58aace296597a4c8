"""The lab's `internet`: a certificate authority only the lab trusts, HTTPS (and plain HTTP) test
sites — instagram.test, facebook.test, blog.test, cdn.test, bank.test — with an access log, and a
DNS server that knows them. Certificates are X.509 v3 made with `cryptography` (RFC 5280).

Run as `python -m elsewhere.lab.sites --workdir DIR` inside the `internet` namespace; the lab
prepares the certificates first with `prepare_sites`."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime
import ipaddress
import json
import signal
import ssl
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import cast
from urllib.parse import parse_qs

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from elsewhere.errors import ProtocolError
from elsewhere.lab import dns, plan

HTTPS_PORT = 443
HTTP_PORT = 80
DNS_PORT = 53
PAGE_BYTES = 48 * 1024  # a home page bigger than the 16 KB freeze, like real pages
BIG_DEFAULT = 1024 * 1024
BIG_LIMIT = 64 * 1024 * 1024
CHUNK = 64 * 1024
HEADER_TIMEOUT = 10.0  # seconds a client may take to send its request head
CERT_DAYS = 30
READY = "sites ready"
ACCESS_LOG = "access.log"


# -- the lab CA ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class CertFiles:
    """A PEM certificate and its unencrypted PKCS#8 key."""

    cert: Path
    key: Path


class LabCA:
    """A throwaway certificate authority (EC P-256) living in `directory`."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        directory.mkdir(parents=True, exist_ok=True)
        self._key = ec.generate_private_key(ec.SECP256R1())
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "elsewhere lab CA")])
        public = self._key.public_key()
        self._cert = (
            self._builder(name, public)
            .issuer_name(name)
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=False,
                    content_commitment=False,
                    key_encipherment=False,
                    data_encipherment=False,
                    key_agreement=False,
                    key_cert_sign=True,
                    crl_sign=True,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(public), critical=False
            )
            .sign(self._key, hashes.SHA256())
        )
        self.cert_path = directory / "ca.pem"
        self.cert_path.write_bytes(self._cert.public_bytes(serialization.Encoding.PEM))

    @staticmethod
    def _builder(subject: x509.Name, public: ec.EllipticCurvePublicKey) -> x509.CertificateBuilder:
        now = datetime.datetime.now(datetime.UTC)
        return (
            x509.CertificateBuilder()
            .subject_name(subject)
            .public_key(public)
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(hours=1))
            .not_valid_after(now + datetime.timedelta(days=CERT_DAYS))
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(public), critical=False)
        )

    def issue(
        self,
        stem: str,
        *,
        dns_names: tuple[str, ...] = (),
        ip_addresses: tuple[str, ...] = (),
        client: bool = False,
    ) -> CertFiles:
        """A leaf certificate for a server (or, with `client`, a client) written as `stem`.pem."""
        key = ec.generate_private_key(ec.SECP256R1())
        common_name = dns_names[0] if dns_names else stem
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
        alt_names: list[x509.GeneralName] = [x509.DNSName(n) for n in dns_names]
        alt_names += [x509.IPAddress(ipaddress.ip_address(a)) for a in ip_addresses]
        usage = ExtendedKeyUsageOID.CLIENT_AUTH if client else ExtendedKeyUsageOID.SERVER_AUTH
        builder = (
            self._builder(subject, key.public_key())
            .issuer_name(self._cert.subject)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=True,
                    content_commitment=False,
                    key_encipherment=False,
                    data_encipherment=False,
                    key_agreement=True,
                    key_cert_sign=False,
                    crl_sign=False,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )
            .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(self._key.public_key()),
                critical=False,
            )
        )
        if alt_names:
            builder = builder.add_extension(x509.SubjectAlternativeName(alt_names), critical=False)
        cert = builder.sign(self._key, hashes.SHA256())
        files = CertFiles(self.directory / f"{stem}.pem", self.directory / f"{stem}.key")
        files.cert.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        files.key.write_bytes(
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        )
        files.key.chmod(0o600)
        return files


def cert_stem(site: plan.Site) -> str:
    return f"site-{site.name}"


def prepare_sites(ca: LabCA) -> None:
    """Issue one certificate per site (name and address) into the CA's directory."""
    for site in plan.SITES:
        ca.issue(cert_stem(site), dns_names=(site.name,), ip_addresses=(site.address,))


# -- HTTP(S) ---------------------------------------------------------------------------------


def home_page(site: plan.Site) -> bytes:
    head = f"<!doctype html><title>{site.name}</title><h1>Welcome to {site.name}</h1>\n"
    opening, closing = "<!-- ", " -->\n"
    padding = PAGE_BYTES - len(head) - len(opening) - len(closing)
    return (head + opening + "." * padding + closing).encode()


class SiteServer:
    """Serves one site: `/` (a home page), `/big?bytes=N` (N bytes), `/whoami` (your address)."""

    def __init__(self, site: plan.Site, scheme: str, access_log: AccessLog) -> None:
        self.site = site
        self.scheme = scheme
        self.access_log = access_log
        self.page = home_page(site)

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        peer = writer.get_extra_info("peername")
        client = peer[0] if peer else "?"
        try:
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), HEADER_TIMEOUT)
            method, target = _request_line(head)
            path, _, query = target.partition("?")
            status, length, body = self._route(path, query, client)
            self.access_log.write(self.site.name, self.scheme, client, method, path, status)
            writer.write(
                f"HTTP/1.1 {status}\r\nContent-Type: text/html\r\nContent-Length: {length}\r\n"
                "Connection: close\r\n\r\n".encode()
            )
            if method != "HEAD":
                if body is not None:
                    writer.write(body)
                else:
                    await self._stream(writer, length)
            await writer.drain()
        except (
            OSError,
            asyncio.IncompleteReadError,
            asyncio.LimitOverrunError,
            TimeoutError,
            ssl.SSLError,
            ProtocolError,
        ):
            pass  # a test client that went away or spoke nonsense: nothing to serve
        finally:
            writer.close()
            with contextlib.suppress(OSError, ssl.SSLError, TimeoutError):
                await asyncio.wait_for(writer.wait_closed(), 1.0)

    def _route(self, path: str, query: str, client: str) -> tuple[str, int, bytes | None]:
        if path == "/":
            return "200 OK", len(self.page), self.page
        if path == "/whoami":
            body = client.encode()
            return "200 OK", len(body), body
        if path == "/big":
            wanted = parse_qs(query).get("bytes", [str(BIG_DEFAULT)])[0]
            size = int(wanted) if wanted.isdigit() else BIG_DEFAULT
            return "200 OK", min(size, BIG_LIMIT), None
        return "404 Not Found", 0, b""

    @staticmethod
    async def _stream(writer: asyncio.StreamWriter, length: int) -> None:
        chunk = b"x" * CHUNK
        left = length
        while left:
            piece = chunk if left >= CHUNK else chunk[:left]
            writer.write(piece)
            left -= len(piece)
            await writer.drain()


def _request_line(head: bytes) -> tuple[str, str]:
    parts = head.split(b"\r\n", 1)[0].split(b" ")
    if len(parts) != 3:
        raise ProtocolError("malformed HTTP request line")
    return parts[0].decode("latin-1"), parts[1].decode("latin-1")


class AccessLog:
    """JSON lines: which site saw which client address ask for what."""

    def __init__(self, path: Path) -> None:
        self._file = path.open("a", buffering=1, encoding="utf-8")

    def write(
        self, site: str, scheme: str, client: str, method: str, path: str, status: str
    ) -> None:
        record = {
            "t": time.time(),
            "site": site,
            "scheme": scheme,
            "client": client,
            "method": method,
            "path": path,
            "status": int(status.split()[0]),
        }
        self._file.write(json.dumps(record) + "\n")


def read_access_log(workdir: Path) -> list[dict[str, object]]:
    """The access log's records so far."""
    path = workdir / ACCESS_LOG
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


# -- DNS -------------------------------------------------------------------------------------


def lab_names() -> dict[str, str]:
    names = {site.name: site.address for site in plan.SITES}
    names[plan.SERVER_NAME] = plan.SERVER
    return names


class DnsServer(asyncio.DatagramProtocol):
    """An honest resolver for the lab's names: A records, empty answers for other types,
    NXDOMAIN for names it does not know."""

    def __init__(self) -> None:
        self.names = lab_names()
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: tuple[str | int, int]) -> None:
        reply = self.answer(data)
        if reply is not None and self.transport is not None:
            self.transport.sendto(reply, addr)

    def answer(self, data: bytes) -> bytes | None:
        try:
            query = dns.parse_query(data)
        except ProtocolError:
            return None
        address = self.names.get(query.name)
        if address is None:
            return dns.encode_answer(query, rcode=dns.RCODE_NXDOMAIN)
        if query.qtype == dns.TYPE_A:
            return dns.encode_answer(query, (address,))
        return dns.encode_answer(query)

    async def handle_stream(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        """DNS over TCP (RFC 1035 §4.2.2, RFC 7766): two-byte lengths, many queries."""
        try:
            while True:
                length = int.from_bytes(await reader.readexactly(2), "big")
                reply = self.answer(await reader.readexactly(length))
                if reply is not None:
                    writer.write(len(reply).to_bytes(2, "big") + reply)
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()


# -- the process -----------------------------------------------------------------------------


async def serve(workdir: Path) -> None:
    """Run every site and the DNS server until SIGTERM."""
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    access_log = AccessLog(workdir / ACCESS_LOG)
    servers: list[asyncio.AbstractServer] = []
    ca_dir = workdir / "ca"
    for site in plan.SITES:
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        stem = cert_stem(site)
        context.load_cert_chain(ca_dir / f"{stem}.pem", ca_dir / f"{stem}.key")
        https = SiteServer(site, "https", access_log)
        http = SiteServer(site, "http", access_log)
        servers.append(
            await asyncio.start_server(
                https.handle, site.address, HTTPS_PORT, ssl=context, ssl_handshake_timeout=5.0
            )
        )
        servers.append(await asyncio.start_server(http.handle, site.address, HTTP_PORT))
    resolver = DnsServer()
    transport, _ = await loop.create_datagram_endpoint(
        lambda: resolver, local_addr=(plan.DNS, DNS_PORT))
    servers.append(await asyncio.start_server(resolver.handle_stream, plan.DNS, DNS_PORT))
    print(READY, flush=True)
    try:
        await stop.wait()
    finally:
        transport.close()
        for server in servers:
            server.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="The censor lab's test sites and DNS server.")
    parser.add_argument("--workdir", type=Path, required=True)
    args = parser.parse_args(argv)
    asyncio.run(serve(args.workdir))
    return 0


if __name__ == "__main__":
    sys.exit(main())
