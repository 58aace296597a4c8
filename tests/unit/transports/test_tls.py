"""TLS contexts: real handshakes on loopback with generated certificates, ALPN, pins, the one-line
errors a person gets for wrong files, and a server that follows renewed certificate files."""

from __future__ import annotations

import asyncio
import base64
import logging
import os
import shutil
import ssl
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from elsewhere.control.certs import self_signed
from elsewhere.errors import ConfigError
from elsewhere.transports.tls import (
    TLS12_CIPHERS,
    PinMismatchError,
    ServerCertificate,
    certificate_pin,
    check_certificate_files,
    check_pin,
    client_context,
    parse_pin,
    server_context,
)

NAMES = ["localhost", "127.0.0.1"]


@dataclass
class Seen:
    """What the client saw of one handshake."""

    pin: str
    alpn: str | None
    version: str | None
    cipher: str
    reply: bytes
    has_ticket: bool


@asynccontextmanager
async def tls_server(context: ssl.SSLContext) -> AsyncIterator[int]:
    """A loopback TLS server that answers every connection with its negotiated ALPN."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        alpn = writer.get_extra_info("ssl_object").selected_alpn_protocol()
        writer.write(b"alpn=" + (alpn or "none").encode())
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0, ssl=context)
    try:
        yield server.sockets[0].getsockname()[1]
    finally:
        server.close()


async def connect(
    port: int, context: ssl.SSLContext, server_hostname: str | None = "localhost"
) -> Seen:
    reader, writer = await asyncio.wait_for(
        asyncio.open_connection("127.0.0.1", port, ssl=context, server_hostname=server_hostname),
        5,
    )
    try:
        reply = await asyncio.wait_for(reader.read(), 5)
        sslobj = writer.get_extra_info("ssl_object")
        return Seen(
            pin=certificate_pin(sslobj.getpeercert(binary_form=True)),
            alpn=sslobj.selected_alpn_protocol(),
            version=sslobj.version(),
            cipher=sslobj.cipher()[0],
            reply=reply,
            has_ticket=sslobj.session is not None and sslobj.session.has_ticket,
        )
    finally:
        writer.close()


def insecure(alpn: tuple[str, ...] = ("http/1.1",)) -> ssl.SSLContext:
    return client_context(sni_verify=False, alpn=alpn)


@pytest.fixture
def cert(tmp_path: Path) -> tuple[Path, Path, str]:
    return self_signed(tmp_path / "a", NAMES)


@pytest.fixture
def other_cert(tmp_path: Path) -> tuple[Path, Path, str]:
    return self_signed(tmp_path / "b", NAMES)


# server context


async def test_handshake_prefers_tls13_and_negotiates_the_alpn_both_sides_offer(cert) -> None:
    context = server_context(cert[0], cert[1], alpn=("h2", "http/1.1"))
    async with tls_server(context) as port:
        http11 = await connect(port, insecure(("http/1.1",)))
        h2 = await connect(port, insecure(("h2", "http/1.1")))
    assert (http11.version, http11.alpn, http11.reply) == ("TLSv1.3", "http/1.1", b"alpn=http/1.1")
    assert (h2.alpn, h2.reply) == ("h2", b"alpn=h2")


async def test_a_tls12_client_gets_a_forward_secret_aead_suite_like_nginx_offers(cert) -> None:
    client = insecure()
    client.maximum_version = ssl.TLSVersion.TLSv1_2
    async with tls_server(server_context(cert[0], cert[1])) as port:
        seen = await connect(port, client)
    assert seen.version == "TLSv1.2"
    assert seen.cipher in TLS12_CIPHERS.split(":")
    assert seen.cipher.startswith("ECDHE-ECDSA-")


@pytest.mark.filterwarnings("ignore:ssl.TLSVersion.TLSv1_1 is deprecated")
async def test_a_client_below_tls12_is_refused(cert) -> None:
    context = server_context(cert[0], cert[1])
    assert context.minimum_version == ssl.TLSVersion.TLSv1_2
    client = insecure()
    client.minimum_version = ssl.TLSVersion.MINIMUM_SUPPORTED
    client.maximum_version = ssl.TLSVersion.TLSv1_1
    client.set_ciphers("ALL:@SECLEVEL=0")
    async with tls_server(context) as port:
        with pytest.raises((ssl.SSLError, ConnectionError)):
            await connect(port, client)


async def test_session_tickets_are_issued_and_compression_is_off(cert) -> None:
    context = server_context(cert[0], cert[1])
    assert context.options & ssl.OP_NO_COMPRESSION
    assert not context.options & ssl.OP_NO_TICKET
    async with tls_server(context) as port:
        seen = await connect(port, insecure())
    assert seen.has_ticket


# client context and pins


async def test_a_pinned_client_accepts_the_self_signed_certificate_it_pins(cert) -> None:
    cert_file, key_file, pin = cert
    colons = ":".join(pin[i : i + 2] for i in range(0, len(pin), 2))
    b64 = base64.b64encode(bytes.fromhex(pin)).decode()
    async with tls_server(server_context(cert_file, key_file)) as port:
        for form in (pin, pin.lower(), colons, b64):
            seen = await connect(port, client_context(pin_sha256=form))
            assert seen.pin == pin
            assert seen.reply == b"alpn=http/1.1"


async def test_a_pinned_client_fails_the_handshake_on_another_certificate(cert, other_cert) -> None:
    async with tls_server(server_context(other_cert[0], other_cert[1])) as port:
        with pytest.raises(PinMismatchError, match=f"does not match the pin {cert[2]}"):
            await connect(port, client_context(pin_sha256=cert[2]))


async def test_a_verifying_client_refuses_a_self_signed_server_without_a_pin(cert) -> None:
    async with tls_server(server_context(cert[0], cert[1])) as port:
        with pytest.raises(ssl.SSLCertVerificationError):
            await connect(port, client_context())


async def test_a_verifying_client_checks_the_chain_and_the_name_against_the_sni(cert) -> None:
    trusting = client_context(ca_file=cert[0])
    async with tls_server(server_context(cert[0], cert[1])) as port:
        assert (await connect(port, trusting, "localhost")).pin == cert[2]
        with pytest.raises(ssl.SSLCertVerificationError, match="Hostname mismatch"):
            await connect(port, trusting, "example.org")


async def test_check_pin_on_a_connected_ssl_object(cert, other_cert) -> None:
    async with tls_server(server_context(cert[0], cert[1])) as port:
        reader, writer = await asyncio.open_connection(
            "127.0.0.1", port, ssl=insecure(), server_hostname="localhost"
        )
        sslobj = writer.get_extra_info("ssl_object")
        check_pin(sslobj, cert[2])
        with pytest.raises(PinMismatchError):
            check_pin(sslobj, other_cert[2])
        await reader.read()
        writer.close()


@pytest.mark.parametrize(
    "text", ["", "abc", "Z" * 64, "00" * 31, base64.b64encode(b"x" * 31).decode()]
)
def test_a_pin_that_is_not_a_sha256_is_a_config_error(text: str) -> None:
    with pytest.raises(ConfigError, match="not a SHA-256 certificate hash") as info:
        parse_pin(text)
    assert "\n" not in str(info.value)


def test_pins_parse_from_hex_and_base64_to_the_same_bytes(cert) -> None:
    digest = bytes.fromhex(cert[2])
    assert parse_pin(cert[2]) == digest
    assert parse_pin(base64.urlsafe_b64encode(digest).decode().rstrip("=")) == digest


# a person's mistakes, one line each


def one_line(excinfo: pytest.ExceptionInfo[ConfigError]) -> str:
    text = str(excinfo.value)
    assert "\n" not in text
    return text


def test_a_missing_certificate_file_is_named(tmp_path: Path, cert) -> None:
    with pytest.raises(ConfigError) as info:
        server_context(tmp_path / "nope.pem", cert[1])
    assert one_line(info) == f"certificate file {tmp_path / 'nope.pem'} does not exist"


def test_a_missing_key_file_is_named(tmp_path: Path, cert) -> None:
    with pytest.raises(ConfigError) as info:
        server_context(cert[0], tmp_path / "privkey.pem")
    assert one_line(info) == f"key file {tmp_path / 'privkey.pem'} does not exist"


def test_a_key_from_another_certificate_is_a_mismatch(cert, other_cert) -> None:
    with pytest.raises(ConfigError) as info:
        server_context(cert[0], other_cert[1])
    assert one_line(info).startswith(
        f"key {other_cert[1]} does not belong to certificate {cert[0]}"
    )


def test_an_expired_certificate_says_when_it_expired(tmp_path: Path) -> None:
    made = datetime(2020, 3, 1, 12, 0, tzinfo=UTC)
    cert_file, key_file, _ = self_signed(tmp_path, NAMES, now=made, days=90)
    with pytest.raises(ConfigError) as info:
        server_context(cert_file, key_file)
    assert one_line(info).startswith(f"certificate {cert_file} expired on 2020-05-30 12:00 UTC")


def test_a_certificate_not_yet_valid_points_at_the_clock(tmp_path: Path) -> None:
    cert_file, key_file, _ = self_signed(tmp_path, NAMES, now=datetime.now(UTC) + timedelta(days=2))
    with pytest.raises(ConfigError, match="check this machine's clock") as info:
        server_context(cert_file, key_file)
    one_line(info)


def test_files_swapped_or_not_pem_are_explained(cert) -> None:
    with pytest.raises(ConfigError, match="holds no PEM certificate") as info:
        server_context(cert[1], cert[0])  # key given as cert
    one_line(info)


def test_an_encrypted_key_asks_for_an_unencrypted_one(tmp_path: Path, cert) -> None:
    from cryptography.hazmat.primitives import serialization

    key = serialization.load_pem_private_key(cert[1].read_bytes(), None)
    locked = tmp_path / "locked.pem"
    locked.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.BestAvailableEncryption(b"secret"),
        )
    )
    with pytest.raises(ConfigError, match=f"key {locked} is encrypted") as info:
        server_context(cert[0], locked)
    one_line(info)


def test_check_certificate_files_reports_names_expiry_and_pin(cert) -> None:
    info = check_certificate_files(cert[0], cert[1])
    assert info.names == ("localhost", "127.0.0.1")
    assert info.pin == cert[2]
    assert info.self_signed
    assert info.not_after > datetime.now(UTC) + timedelta(days=365)


# following renewed files


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def replace_files(source: tuple[Path, Path, str], target: tuple[Path, Path, str]) -> None:
    """Put new files in place the way certbot does: whole files appear at once."""
    for new, old in ((source[0], target[0]), (source[1], target[1])):
        staged = old.with_suffix(".staged")
        shutil.copyfile(new, staged)
        os.replace(staged, old)


async def test_a_renewed_certificate_is_served_after_the_check_interval(cert, other_cert) -> None:
    clock = Clock()
    holder = ServerCertificate(cert[0], cert[1], check_every=60, clock=clock)
    async with tls_server(holder.context) as port:
        assert (await connect(port, insecure())).pin == cert[2]
        replace_files(other_cert, cert)
        clock.now += 59  # the files are not looked at more often than every 60 s
        assert (await connect(port, insecure())).pin == cert[2]
        clock.now += 1
        renewed = await connect(port, insecure())
        without_sni = await connect(port, insecure(), server_hostname=None)
    assert renewed.pin == other_cert[2]
    assert renewed.alpn == "http/1.1"
    assert without_sni.pin == other_cert[2]
    assert holder.pin == other_cert[2]


async def test_half_written_renewal_keeps_the_old_certificate_and_says_so_once(
    cert, other_cert, caplog: pytest.LogCaptureFixture
) -> None:
    clock = Clock()
    holder = ServerCertificate(cert[0], cert[1], check_every=0, clock=clock)
    # only the certificate is new so far: it does not match the old key
    staged = cert[0].with_suffix(".staged")
    shutil.copyfile(other_cert[0], staged)
    os.replace(staged, cert[0])
    with caplog.at_level(logging.WARNING, "elsewhere.tls"):
        async with tls_server(holder.context) as port:
            assert (await connect(port, insecure())).pin == cert[2]
            assert (await connect(port, insecure())).pin == cert[2]
            staged = cert[1].with_suffix(".staged")
            shutil.copyfile(other_cert[1], staged)
            os.replace(staged, cert[1])
            assert (await connect(port, insecure())).pin == other_cert[2]
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert "keeping the old certificate: key" in warnings[0]


def test_reload_raises_for_bad_files_and_reports_a_change(cert, other_cert) -> None:
    holder = ServerCertificate(cert[0], cert[1])
    assert holder.reload() is False  # same files, same certificate
    cert[1].unlink()
    with pytest.raises(ConfigError, match="does not exist"):
        holder.reload()
    assert holder.pin == cert[2]
    replace_files(other_cert, (cert[0], cert[1], ""))
    assert holder.reload() is True
    assert holder.pin == other_cert[2]
