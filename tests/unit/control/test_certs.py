"""Certificate files: the layouts certbot and Caddy leave, found by domain in temporary trees, and
the self-signed certificate made at first run and reused after."""

from __future__ import annotations

import ipaddress
import shutil
import stat
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from elsewhere.control.certs import (
    SELF_SIGNED_DAYS,
    CertificateFiles,
    load_certificate_files,
    self_signed,
)
from elsewhere.errors import ConfigError
from elsewhere.transports.tls import certificate_pin, server_context

NOW = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)


def leaf(path: Path) -> x509.Certificate:
    return x509.load_pem_x509_certificate(path.read_bytes())


def spki(certificate: x509.Certificate) -> bytes:
    return certificate.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )


# self-signed


def test_self_signed_is_an_ecdsa_p256_certificate_for_the_names_and_ips(tmp_path: Path) -> None:
    cert_file, key_file, pin = self_signed(tmp_path, ["vpn.example.org", "203.0.113.7"], now=NOW)
    certificate = leaf(cert_file)
    san = certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == ["vpn.example.org"]
    assert san.get_values_for_type(x509.IPAddress) == [ipaddress.ip_address("203.0.113.7")]
    assert isinstance(certificate.public_key(), ec.EllipticCurvePublicKey)
    assert certificate.public_key().curve.name == "secp256r1"
    assert certificate.issuer == certificate.subject
    assert certificate.not_valid_before_utc == NOW
    assert certificate.not_valid_after_utc == NOW + timedelta(days=SELF_SIGNED_DAYS)
    assert pin == certificate_pin(certificate.public_bytes(serialization.Encoding.DER))
    server_context(cert_file, key_file, now=NOW)  # key and certificate belong together


def test_self_signed_files_are_readable_only_by_their_owner(tmp_path: Path) -> None:
    cert_file, key_file, _ = self_signed(tmp_path, ["localhost"])
    assert stat.S_IMODE(cert_file.stat().st_mode) == 0o600
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    assert stat.S_IMODE(key_file.parent.stat().st_mode) == 0o700


def test_self_signed_is_reused_across_restarts(tmp_path: Path) -> None:
    first = self_signed(tmp_path, ["localhost", "127.0.0.1"], now=NOW)
    content = first[0].read_bytes(), first[1].read_bytes()
    again = self_signed(tmp_path, ["127.0.0.1"], now=NOW + timedelta(days=300))
    assert again == first
    assert (again[0].read_bytes(), again[1].read_bytes()) == content


def test_self_signed_is_renewed_with_the_same_key_when_30_days_are_left(tmp_path: Path) -> None:
    cert_file, key_file, pin = self_signed(tmp_path, ["localhost"], now=NOW, days=365)
    key = key_file.read_bytes()
    old = leaf(cert_file)
    still = self_signed(tmp_path, ["localhost"], now=NOW + timedelta(days=334), days=365)
    assert still[2] == pin
    renewed = self_signed(tmp_path, ["localhost"], now=NOW + timedelta(days=336), days=365)
    assert renewed[2] != pin
    assert key_file.read_bytes() == key
    assert spki(leaf(cert_file)) == spki(old)
    assert leaf(cert_file).not_valid_after_utc == NOW + timedelta(days=336 + 365)


def test_self_signed_is_made_anew_for_a_name_it_does_not_cover(tmp_path: Path) -> None:
    _, _, pin = self_signed(tmp_path, ["localhost"], now=NOW)
    cert_file, _, new_pin = self_signed(tmp_path, ["localhost", "vpn.example.org"], now=NOW)
    assert new_pin != pin
    assert "vpn.example.org" in str(leaf(cert_file).extensions)


def test_self_signed_without_names_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="at least one name"):
        self_signed(tmp_path, [])


# certbot and Caddy layouts


def issue(tmp_path: Path, names: list[str], days: int = 90) -> tuple[Path, Path]:
    """A certificate for `names` valid `days` from now, as stand-in for a CA's."""
    folder = tmp_path / "made" / f"{names[0]}-{days}"
    cert_file, key_file, _ = self_signed(folder, names, days=days)
    return cert_file, key_file


def certbot_lineage(base: Path, lineage: str, made: tuple[Path, Path]) -> CertificateFiles:
    folder = base / "live" / lineage
    folder.mkdir(parents=True)
    shutil.copyfile(made[0], folder / "fullchain.pem")
    shutil.copyfile(made[1], folder / "privkey.pem")
    return CertificateFiles(folder / "fullchain.pem", folder / "privkey.pem")


def caddy_site(base: Path, issuer: str, name: str, made: tuple[Path, Path]) -> CertificateFiles:
    folder = base / "certificates" / issuer / name
    folder.mkdir(parents=True)
    shutil.copyfile(made[0], folder / f"{name}.crt")
    shutil.copyfile(made[1], folder / f"{name}.key")
    return CertificateFiles(folder / f"{name}.crt", folder / f"{name}.key")


def find(tmp_path: Path, what: str) -> CertificateFiles:
    return load_certificate_files(
        what, letsencrypt_dir=tmp_path / "letsencrypt", caddy_dirs=[tmp_path / "caddy"]
    )


def test_a_domain_is_found_in_certbots_live_directory(tmp_path: Path) -> None:
    expected = certbot_lineage(
        tmp_path / "letsencrypt", "example.com", issue(tmp_path, ["example.com"])
    )
    assert find(tmp_path, "Example.COM.") == expected


def test_a_second_name_of_a_certbot_lineage_is_found_and_the_longest_valid_wins(
    tmp_path: Path,
) -> None:
    names = ["example.com", "vpn.example.com"]
    letsencrypt = tmp_path / "letsencrypt"
    certbot_lineage(letsencrypt, "example.com", issue(tmp_path, names, days=20))
    newer = certbot_lineage(letsencrypt, "example.com-0001", issue(tmp_path, names, days=80))
    certbot_lineage(letsencrypt, "other.org", issue(tmp_path, ["other.org"], days=89))
    assert find(tmp_path, "vpn.example.com") == newer


def test_a_domain_is_found_in_caddys_storage_under_any_issuer(tmp_path: Path) -> None:
    caddy = tmp_path / "caddy"
    caddy_site(
        caddy, "acme.zerossl.com-v2-dv90", "example.com", issue(tmp_path, ["example.com"], 30)
    )
    best = caddy_site(
        caddy,
        "acme-v02.api.letsencrypt.org-directory",
        "example.com",
        issue(tmp_path, ["example.com"], 60),
    )
    assert find(tmp_path, "example.com") == best


def test_a_caddy_wildcard_certificate_covers_one_label_only(tmp_path: Path) -> None:
    made = issue(tmp_path, ["*.example.com"])
    expected = caddy_site(tmp_path / "caddy", "ca", "wildcard_.example.com", made)
    assert find(tmp_path, "vpn.example.com") == expected
    with pytest.raises(ConfigError):
        find(tmp_path, "a.vpn.example.com")


def test_certbot_and_caddy_both_holding_one_the_longer_valid_is_chosen(tmp_path: Path) -> None:
    certbot_lineage(tmp_path / "letsencrypt", "example.com", issue(tmp_path, ["example.com"], 10))
    caddy = caddy_site(
        tmp_path / "caddy", "ca", "example.com", issue(tmp_path, ["example.com"], 70)
    )
    assert find(tmp_path, "example.com") == caddy


def test_a_directory_or_a_certificate_file_is_taken_as_given(tmp_path: Path) -> None:
    lineage = certbot_lineage(tmp_path / "le", "example.com", issue(tmp_path, ["example.com"]))
    site = caddy_site(tmp_path / "cd", "ca", "example.com", issue(tmp_path, ["example.com"]))
    assert load_certificate_files(lineage.cert.parent) == lineage
    assert load_certificate_files(str(site.cert.parent)) == site
    assert load_certificate_files(lineage.cert) == lineage
    assert load_certificate_files(site.cert) == site


def test_a_domain_found_nowhere_names_the_places_looked_in_one_line(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        find(tmp_path, "example.com")
    message = str(info.value)
    assert "\n" not in message
    assert str(tmp_path / "letsencrypt" / "live" / "example.com") in message
    assert str(tmp_path / "caddy" / "certificates" / "*" / "example.com") in message
    assert "acme = true" in message


def test_a_directory_without_known_files_says_what_it_expected(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"fullchain\.pem \+ privkey\.pem"):
        load_certificate_files(tmp_path)
