"""Our ACME client (RFC 8555) against Debian's pebble, the ACME test server, with real http-01
validation: pebble resolves the test domains through pebble-challtestsrv's DNS (every name to
127.0.0.1) and fetches the key authorization from our responder on a loopback port."""

from __future__ import annotations

import asyncio
import contextlib
import http.client
import json
import os
import socket
import ssl
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from elsewhere.control import acme
from elsewhere.control.certs import self_signed
from elsewhere.transports.tls import (
    ServerCertificate,
    certificate_names,
    client_context,
    server_context,
)
from ports import free_port

# Needs the Debian package pebble (listed in .ci/apt-packages); never skipped.
pytestmark = pytest.mark.interop

DOMAINS = ("vpn.example.test", "www.example.test")
START_TIMEOUT = 10.0
ISSUE_TIMEOUT = 60.0


@dataclass(frozen=True)
class Pebble:
    directory: str
    management: int
    http_port: int  # where pebble's VA fetches http-01 answers
    ca_file: str  # trust for pebble's own HTTPS (our certificate, Debian ships none)

    def settings(self, *domains: str) -> acme.AcmeSettings:
        return acme.AcmeSettings(domains or DOMAINS, directory=self.directory, ca_file=self.ca_file)

    def root(self) -> bytes:
        """The root this pebble run issues under (it makes a new one every start)."""
        connection = http.client.HTTPSConnection(
            "127.0.0.1", self.management, timeout=5, context=client_context(ca_file=self.ca_file)
        )
        try:
            connection.request("GET", "/roots/0")
            return connection.getresponse().read()
        finally:
            connection.close()


def wait_listening(proc: subprocess.Popen[bytes], port: int, log: Path) -> None:
    deadline = time.monotonic() + START_TIMEOUT
    while True:
        if proc.poll() is not None:
            pytest.fail(f"{proc.args!r} exited: {log.read_text(errors='replace')}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return
        except OSError:
            if time.monotonic() > deadline:
                pytest.fail(f"{proc.args!r} never listened on {port}")
            time.sleep(0.02)  # poll interval while the binary starts, not synchronisation


@contextlib.contextmanager
def started(args: list[str], port: int, log: Path, env: dict[str, str]) -> Iterator[None]:
    with log.open("wb") as out:
        proc = subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT, env=env)
    try:
        wait_listening(proc, port, log)
        yield
    finally:
        proc.kill()
        proc.wait(timeout=START_TIMEOUT)


@pytest.fixture
def pebble(tmp_path: Path) -> Iterator[Pebble]:
    cert, key, _ = self_signed(tmp_path / "pebble-tls", ["localhost", "127.0.0.1"])
    dns, dns_management = free_port(), free_port()
    listen, management, http_port = free_port(), free_port(), free_port()
    config = tmp_path / "pebble.json"
    config.write_text(
        json.dumps(
            {
                "pebble": {
                    "listenAddress": f"127.0.0.1:{listen}",
                    "managementListenAddress": f"127.0.0.1:{management}",
                    "certificate": str(cert),
                    "privateKey": str(key),
                    "httpPort": http_port,
                    "tlsPort": free_port(),
                    "ocspResponderURL": "",
                    "externalAccountBindingRequired": False,
                }
            }
        )
    )
    env = {**os.environ, "PEBBLE_VA_NOSLEEP": "1"}
    challtestsrv = [
        "pebble-challtestsrv",
        f"-dns01=127.0.0.1:{dns}",
        f"-management=127.0.0.1:{dns_management}",
        "-http01=",
        "-https01=",
        "-tlsalpn01=",
        "-defaultIPv4=127.0.0.1",
        "-defaultIPv6=",
    ]
    server = ["pebble", "-config", str(config), "-dnsserver", f"127.0.0.1:{dns}"]
    with (
        started(challtestsrv, dns_management, tmp_path / "challtestsrv.log", env),
        started(server, listen, tmp_path / "pebble.log", env),
    ):
        yield Pebble(f"https://127.0.0.1:{listen}/dir", management, http_port, str(cert))


async def handshake(context: ssl.SSLContext, trust: ssl.SSLContext, name: str) -> bytes:
    """Serve `context` on loopback and connect to it as `name`; the leaf the client saw."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0, ssl=context)
    try:
        port = server.sockets[0].getsockname()[1]
        _, writer = await asyncio.wait_for(
            asyncio.open_connection("127.0.0.1", port, ssl=trust, server_hostname=name), 5
        )
        der = writer.get_extra_info("ssl_object").getpeercert(binary_form=True)
        writer.close()
        return der
    finally:
        server.close()


async def test_issued_chain_verifies_against_pebbles_root_for_every_name(
    pebble: Pebble, tmp_path: Path
) -> None:
    responder = acme.ChallengeResponder()
    http01 = await responder.serve("127.0.0.1", pebble.http_port)
    try:
        async with asyncio.timeout(ISSUE_TIMEOUT):
            files = await acme.ensure(pebble.settings(), tmp_path / "data", responder)
    finally:
        http01.close()
    chain = x509.load_pem_x509_certificates(files.cert.read_bytes())
    assert len(chain) >= 2  # leaf and pebble's intermediate
    assert set(certificate_names(chain[0])) == set(DOMAINS)
    assert oct(files.key.stat().st_mode & 0o777) == "0o600"
    assert responder.answer(f"{acme.CHALLENGE_PATH}anything") is None  # tokens cleaned up
    root = tmp_path / "pebble-root.pem"
    root.write_bytes(pebble.root())
    trusting = client_context(ca_file=root)  # verifies chain and name, no pin
    context = server_context(files.cert, files.key)
    for name in DOMAINS:
        assert await handshake(context, trusting, name) == chain[0].public_bytes(Encoding.DER)
    with pytest.raises(ssl.SSLCertVerificationError):
        await handshake(context, client_context(), DOMAINS[0])  # not a public CA


async def test_a_fresh_certificate_is_kept_and_one_near_expiry_is_renewed_and_served(
    pebble: Pebble, tmp_path: Path
) -> None:
    responder = acme.ChallengeResponder()
    settings = pebble.settings(DOMAINS[0])
    data = tmp_path / "data"
    http01 = await responder.serve("127.0.0.1", pebble.http_port)
    try:
        async with asyncio.timeout(ISSUE_TIMEOUT):
            files = await acme.ensure(settings, data, responder)
            first = files.cert.read_bytes()
            served = ServerCertificate(files.cert, files.key, check_every=0)
            assert await acme.ensure(settings, data, responder) == files
            assert files.cert.read_bytes() == first
            expiry = x509.load_pem_x509_certificate(first).not_valid_after_utc
            await acme.ensure(settings, data, responder, now=expiry - acme.RENEW_WITHIN / 2)
    finally:
        http01.close()
    renewed = x509.load_pem_x509_certificate(files.cert.read_bytes())
    assert renewed.serial_number != x509.load_pem_x509_certificate(first).serial_number
    seen = await handshake(served.context, client_context(sni_verify=False), DOMAINS[0])
    assert seen == renewed.public_bytes(Encoding.DER)


async def test_a_challenge_nobody_answers_fails_with_the_cas_reason(
    pebble: Pebble, tmp_path: Path
) -> None:
    responder = acme.ChallengeResponder()  # not listening on pebble's http port
    with pytest.raises(acme.AcmeError) as info:
        async with asyncio.timeout(ISSUE_TIMEOUT):
            await acme.obtain(pebble.settings(DOMAINS[0]), tmp_path, responder)
    message = str(info.value)
    assert message.startswith(f"ACME validation of {DOMAINS[0]} failed: ")
    assert "connection" in message.lower()
    assert "\n" not in message
    assert not acme.certificate_files(tmp_path, DOMAINS[0]).cert.exists()
