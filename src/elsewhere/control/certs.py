"""Where the server's certificate comes from on disk: the layouts certbot and Caddy leave behind,
and a self-signed certificate made at first run whose pin (transports/tls.py) goes into the
share links of clients that accept one."""

from __future__ import annotations

import base64
import contextlib
import ipaddress
import os
import secrets
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from elsewhere.errors import ConfigError
from elsewhere.transports.tls import certificate_names, certificate_pin

LETSENCRYPT_DIR = Path("/etc/letsencrypt")
# Caddy keeps its data in $XDG_DATA_HOME/caddy (~/.local/share/caddy); the Debian package runs
# it as user caddy with HOME=/var/lib/caddy.
CADDY_SYSTEM_DIR = Path("/var/lib/caddy/.local/share/caddy")
# A self-signed certificate lives this long. The share-link pin hashes the whole certificate,
# so every renewal would cut off every client holding a link; Debian's own self-signed
# "snakeoil" certificate (make-ssl-cert) is made for ten years too.
SELF_SIGNED_DAYS = 3650
RENEW_WITHIN = timedelta(days=30)
SELF_SIGNED_DIR = ("certificates", "self-signed")


@dataclass(frozen=True)
class CertificateFiles:
    """A PEM certificate chain (leaf first) and its private key."""

    cert: Path
    key: Path


# finding files


def default_caddy_dirs() -> tuple[Path, ...]:
    xdg = os.environ.get("XDG_DATA_HOME")
    home = Path(xdg) if xdg else Path.home() / ".local" / "share"
    return (home / "caddy", CADDY_SYSTEM_DIR)


def load_certificate_files(
    path_or_domain: str | os.PathLike[str],
    *,
    letsencrypt_dir: Path = LETSENCRYPT_DIR,
    caddy_dirs: Sequence[Path] | None = None,
) -> CertificateFiles:
    """The certificate and key for a directory, a certificate file, or a domain name.

    A directory may hold certbot's fullchain.pem + privkey.pem, or Caddy's NAME.crt + NAME.key.
    A domain is looked up in certbot's live/ lineages and in Caddy's storage
    (certificates/ISSUER/DOMAIN/), a wildcard certificate counting for the names it covers; when
    several fit, the one valid longest wins."""
    text = os.fspath(path_or_domain)
    path = Path(text)
    if os.sep in text or path.exists():
        return _from_path(path)
    domain = _domain(text)
    caddy = tuple(caddy_dirs) if caddy_dirs is not None else default_caddy_dirs()
    candidates = [*_certbot_candidates(letsencrypt_dir, domain), *_caddy_candidates(caddy, domain)]
    best: tuple[datetime, CertificateFiles] | None = None
    for files in candidates:
        try:
            certificate = x509.load_pem_x509_certificate(files.cert.read_bytes())
        except (OSError, ValueError):
            continue
        if not _covers(certificate_names(certificate), domain) or not files.key.exists():
            continue
        if best is None or certificate.not_valid_after_utc > best[0]:
            best = (certificate.not_valid_after_utc, files)
    if best is None:
        places = [str(letsencrypt_dir / "live" / domain)]
        places += [str(d / "certificates" / "*" / domain) for d in caddy]
        raise ConfigError(
            f"no certificate for {domain} in {', '.join(places)}; "
            'set cert = "…/fullchain.pem" and key = "…/privkey.pem", or use acme = true'
        )
    return best[1]


def _from_path(path: Path) -> CertificateFiles:
    if path.is_dir():
        pairs = [("fullchain.pem", "privkey.pem"), (f"{path.name}.crt", f"{path.name}.key")]
        pairs += [("cert.pem", "key.pem")]
        for cert, key in pairs:
            if (path / cert).is_file() and (path / key).is_file():
                return CertificateFiles(path / cert, path / key)
        raise ConfigError(
            f"{path} holds neither fullchain.pem + privkey.pem (certbot) nor "
            f"{path.name}.crt + {path.name}.key (Caddy); set cert and key to the files"
        )
    if not path.exists():
        raise ConfigError(f"certificate path {path} does not exist")
    for key_path in (path.with_suffix(".key"), path.parent / "privkey.pem"):
        if key_path.is_file() and key_path != path:
            return CertificateFiles(path, key_path)
    raise ConfigError(f"no key next to {path} (looked for {path.stem}.key and privkey.pem)")


def _certbot_candidates(base: Path, domain: str) -> list[CertificateFiles]:
    live = base / "live"
    try:
        lineages = sorted(p for p in live.iterdir() if p.is_dir())
    except FileNotFoundError:
        return []
    except PermissionError:
        raise ConfigError(
            f"{live} is not readable by this user (certbot keeps it root-only); "
            "run as root or copy the files and set cert and key"
        ) from None
    return [CertificateFiles(p / "fullchain.pem", p / "privkey.pem") for p in lineages]


def _caddy_candidates(bases: Iterable[Path], domain: str) -> list[CertificateFiles]:
    # Caddy stores *.example.com as wildcard_.example.com
    names = [domain]
    if "." in domain:
        names.append("wildcard_." + domain.split(".", 1)[1])
    found: list[CertificateFiles] = []
    for base in bases:
        with contextlib.suppress(OSError):
            for issuer in sorted((base / "certificates").iterdir()):
                for name in names:
                    folder = issuer / name
                    if (folder / f"{name}.crt").is_file():
                        found.append(
                            CertificateFiles(folder / f"{name}.crt", folder / f"{name}.key")
                        )
    return found


def _domain(text: str) -> str:
    domain = text.strip().rstrip(".").lower()
    labels = domain.split(".")
    if not domain or not all(labels) or any(c.isspace() for c in domain):
        raise ConfigError(f"{text!r} is neither a certificate path nor a domain name")
    return domain


def _covers(names: Iterable[str], domain: str) -> bool:
    for name in names:
        name = name.lower()
        if name == domain:
            return True
        # RFC 6125 6.4.3: a wildcard stands for exactly one left-most label
        if name.startswith("*.") and "." in domain and domain.split(".", 1)[1] == name[2:]:
            return True
    return False


# self-signed


def self_signed(
    data_dir: str | os.PathLike[str],
    names: Sequence[str],
    *,
    now: datetime | None = None,
    days: int = SELF_SIGNED_DAYS,
) -> tuple[Path, Path, str]:
    """The self-signed certificate in `data_dir` for `names` (DNS names and IP addresses):
    reused while it covers all of them and has more than 30 days left, otherwise made anew
    (ECDSA P-256, keeping an existing key). Returns (cert_path, key_path, pin); files are 0600."""
    if not names:
        raise ConfigError("a self-signed certificate needs at least one name or IP address")
    now = (now or datetime.now(UTC)).replace(microsecond=0)
    folder = Path(data_dir).joinpath(*SELF_SIGNED_DIR)
    cert_path, key_path = folder / "cert.pem", folder / "key.pem"
    key = _existing_key(key_path)
    if key is not None:
        reused = _reusable(cert_path, key, names, now)
        if reused is not None:
            return (
                cert_path,
                key_path,
                certificate_pin(reused.public_bytes(serialization.Encoding.DER)),
            )
    else:
        key = ec.generate_private_key(ec.SECP256R1())
        write_private(
            key_path,
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            ),
        )
    certificate = _make_self_signed(key, names, now, days)
    write_private(cert_path, certificate.public_bytes(serialization.Encoding.PEM))
    return (
        cert_path,
        key_path,
        certificate_pin(certificate.public_bytes(serialization.Encoding.DER)),
    )


def _existing_key(path: Path) -> ec.EllipticCurvePrivateKey | None:
    try:
        key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    except (OSError, ValueError, TypeError):
        return None
    return key if isinstance(key, ec.EllipticCurvePrivateKey) else None


def _reusable(
    path: Path, key: ec.EllipticCurvePrivateKey, names: Sequence[str], now: datetime
) -> x509.Certificate | None:
    try:
        certificate = x509.load_pem_x509_certificate(path.read_bytes())
    except (OSError, ValueError):
        return None
    spki = serialization.PublicFormat.SubjectPublicKeyInfo
    der = serialization.Encoding.DER
    if certificate.public_key().public_bytes(der, spki) != key.public_key().public_bytes(der, spki):
        return None
    if certificate.not_valid_after_utc - now < RENEW_WITHIN:
        return None
    have = {_canonical(n) for n in certificate_names(certificate)}
    if not {_canonical(n) for n in names} <= have:
        return None
    return certificate


def _make_self_signed(
    key: ec.EllipticCurvePrivateKey, names: Sequence[str], now: datetime, days: int
) -> x509.Certificate:
    """Shaped like `openssl req -x509` output with a subjectAltName, nothing unusual."""
    general: list[x509.GeneralName] = []
    for name in names:
        try:
            general.append(x509.IPAddress(ipaddress.ip_address(name)))
        except ValueError:
            general.append(x509.DNSName(_domain(name)))
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, names[0])])
    public = key.public_key()
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(public)
        .serial_number(int.from_bytes(secrets.token_bytes(16), "big") >> 1)
        .not_valid_before(now)
        .not_valid_after(now + timedelta(days=days))
        .add_extension(x509.SubjectAlternativeName(general), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=False,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public), critical=False)
        .sign(key, hashes.SHA256())
    )


def _canonical(name: str) -> str:
    try:
        return str(ipaddress.ip_address(name))
    except ValueError:
        return name.strip().rstrip(".").lower()


def public_key_pin(cert_file: str | os.PathLike[str]) -> str:
    """The pin sing-box (and the Hiddify and sing-box apps on it) checks a server with, its
    `certificate_public_key_sha256`: the base64 SHA-256 of the leaf's SubjectPublicKeyInfo.
    Unlike the whole-certificate pin of the share links (`pcs`), it survives a renewal that
    keeps the key, as self_signed's do."""
    try:
        leaf = x509.load_pem_x509_certificate(Path(cert_file).read_bytes())
    except (OSError, ValueError) as exc:
        raise ConfigError(f"cannot read the certificate {cert_file}: {exc}") from None
    spki = leaf.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    digest = hashes.Hash(hashes.SHA256())
    digest.update(spki)
    return base64.b64encode(digest.finalize()).decode("ascii")


# files


def write_private(path: Path, data: bytes) -> None:
    """Write a file readable only by its owner, atomically (a reader sees old or new, whole)."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    temporary = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "wb") as out:
            out.write(data)
            out.flush()
            os.fsync(out.fileno())
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(OSError):
            temporary.unlink()
        raise
