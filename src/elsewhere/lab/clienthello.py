"""The two fingerprints censors and CDNs compute from a TLS ClientHello: JA3 (Salesforce, 2017)
and JA4 (FoxIO, 2023: ciphers and extensions sorted, GREASE ignored, SNI/ALPN left out of the
hash). The ClientHello itself is parsed by codecs/tls_hello.py, the one parser."""

from __future__ import annotations

import contextlib
import ssl

from cryptography.hazmat.primitives import hashes

from elsewhere.codecs.tls_hello import (
    EXT_ALPN,
    EXT_SERVER_NAME,
    ClientHello,
    is_grease,
    looks_like_tls,
    parse_client_hello,
)

__all__ = [
    "ClientHello", "is_grease", "ja3", "ja3_string", "ja4", "looks_like_tls",
    "parse_client_hello", "python_default_hello",
]

JA4_VERSIONS = {0x0304: "13", 0x0303: "12", 0x0302: "11", 0x0301: "10", 0x0300: "s3"}
JA4_EMPTY_HASH = "000000000000"


# -- fingerprints ----------------------------------------------------------------------------


def _digest(algorithm: hashes.HashAlgorithm, text: str) -> str:
    hasher = hashes.Hash(algorithm)
    hasher.update(text.encode())
    return hasher.finalize().hex()


def ja3_string(hello: ClientHello) -> str:
    def dashed(values: tuple[int, ...]) -> str:
        return "-".join(str(v) for v in values if not is_grease(v))

    return ",".join((
        str(hello.legacy_version), dashed(hello.cipher_suites), dashed(hello.extensions),
        dashed(hello.supported_groups), dashed(hello.ec_point_formats),
    ))


def ja3(hello: ClientHello) -> str:
    """JA3: MD5 of version,ciphers,extensions,groups,point formats (decimal, GREASE removed)."""
    return _digest(hashes.MD5(), ja3_string(hello))


def ja4(hello: ClientHello, transport: str = "t") -> str:
    """JA4 (a_b_c) of a ClientHello seen over TCP ("t") or QUIC ("q")."""
    versions = [v for v in hello.supported_versions if not is_grease(v)]
    version = JA4_VERSIONS.get(max(versions) if versions else hello.legacy_version, "00")
    ciphers = [c for c in hello.cipher_suites if not is_grease(c)]
    extensions = [e for e in hello.extensions if not is_grease(e)]
    part_a = (
        f"{transport}{version}{'d' if hello.server_name else 'i'}"
        f"{min(len(ciphers), 99):02d}{min(len(extensions), 99):02d}{_ja4_alpn(hello.alpn)}"
    )
    part_b = (
        _digest(hashes.SHA256(), ",".join(sorted(f"{c:04x}" for c in ciphers)))[:12]
        if ciphers else JA4_EMPTY_HASH
    )
    hashed = sorted(f"{e:04x}" for e in extensions if e not in (EXT_SERVER_NAME, EXT_ALPN))
    signatures = ",".join(f"{s:04x}" for s in hello.signature_algorithms if not is_grease(s))
    text = ",".join(hashed) + (f"_{signatures}" if signatures else "")
    part_c = _digest(hashes.SHA256(), text)[:12] if hashed else JA4_EMPTY_HASH
    return f"{part_a}_{part_b}_{part_c}"


def _ja4_alpn(alpn: tuple[str, ...]) -> str:
    if not alpn or not alpn[0]:
        return "00"
    first = alpn[0]
    if first[0].isascii() and first[0].isalnum() and first[-1].isascii() and first[-1].isalnum():
        return first[0] + first[-1]
    hexed = first.encode("latin-1").hex()
    return hexed[0] + hexed[-1]


def python_default_hello(
    server_name: str = "example.test", context: ssl.SSLContext | None = None
) -> bytes:
    """The ClientHello record Python's `ssl.create_default_context()` sends (or `context`'s),
    made without any network: the handshake runs into a MemoryBIO."""
    context = context or ssl.create_default_context()
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    tls = context.wrap_bio(incoming, outgoing, server_hostname=server_name)
    with contextlib.suppress(ssl.SSLWantReadError):  # it waits for a ServerHello
        tls.do_handshake()
    return outgoing.read()
