"""Named ClientHello fingerprints the lab's `fingerprint` technique can block, so the lab can
show which `fp` survives a censor's list:

- `python`: Python's own `ssl` hellos (every padding variant), JA3 and JA4;
- `utls-chrome`, `utls-firefox`: uTLS's presets as Xray and sing-box send them for `fp=chrome`
  and `fp=firefox` (refraction-networking/utls u_parrots.go, HelloChrome_133 and
  HelloFirefox_120), JA4 (uTLS Chrome permutes its extensions, so its JA3 is no constant);
- `chrome`, `firefox`: the current browsers' hellos, which are also elsewhere's own
  (codecs/client_hellos.py), JA4.

JA4 leaves the SNI and ALPN out of its hashes but not out of its first part, so each set holds
every variant a client sends: with and without SNI, ALPN h2+http/1.1 (TCP), http/1.1 alone
(WebSocket, HTTP upgrade) and none.

The 2026-06 wave in Russia (net4people reports) blocked uTLS `chrome` while uTLS `firefox`
passed: WAVE_2026_06 is that list, with Python's hellos, and is the technique's default."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable

from elsewhere.codecs import client_hellos as ch
from elsewhere.codecs.tls13_client import Tls13Client
from elsewhere.codecs.tls13_trust import AnyCertificate
from elsewhere.codecs.tls_hello import ClientHello, parse_client_hello
from elsewhere.lab.clienthello import ja4

ALPN_VARIANTS: tuple[tuple[str, ...], ...] = (("h2", "http/1.1"), ("http/1.1",), ())
SNI_VARIANTS = ("abroad.test", None)

# uTLS HelloChrome_133: Chrome 133's hello (no trust anchor ids yet), GREASE left out
UTLS_CHROME_133 = ClientHello(
    legacy_version=ch.TLS12,
    cipher_suites=(
        0x1301, 0x1302, 0x1303, 0xC02B, 0xC02F, 0xC02C, 0xC030, 0xCCA9, 0xCCA8, 0xC013, 0xC014,
        0x009C, 0x009D, 0x002F, 0x0035,
    ),
    extensions=(
        0x0000, 0x0017, 0xFF01, 0x000A, 0x000B, 0x0023, 0x0010, 0x0005, 0x000D, 0x0012, 0x0033,
        0x002D, 0x002B, 0x001B, 0x44CD, 0xFE0D,
    ),
    server_name=None, alpn=(),
    supported_groups=(0x11EC, 0x001D, 0x0017, 0x0018),
    ec_point_formats=(0,),
    signature_algorithms=(0x0403, 0x0804, 0x0401, 0x0503, 0x0805, 0x0501, 0x0806, 0x0601),
    supported_versions=(ch.TLS13, ch.TLS12),
)
# uTLS HelloFirefox_120
UTLS_FIREFOX_120 = ClientHello(
    legacy_version=ch.TLS12,
    cipher_suites=(
        0x1301, 0x1303, 0x1302, 0xC02B, 0xC02F, 0xCCA9, 0xCCA8, 0xC02C, 0xC030, 0xC00A, 0xC009,
        0xC013, 0xC014, 0x009C, 0x009D, 0x002F, 0x0035,
    ),
    extensions=(
        0x0000, 0x0017, 0xFF01, 0x000A, 0x000B, 0x0023, 0x0010, 0x0005, 0x0022, 0x0033, 0x002B,
        0x000D, 0x002D, 0x001C, 0xFE0D,
    ),
    server_name=None, alpn=(),
    supported_groups=(0x001D, 0x0017, 0x0018, 0x0019, 0x0100, 0x0101),
    ec_point_formats=(0,),
    signature_algorithms=(
        0x0403, 0x0503, 0x0603, 0x0804, 0x0805, 0x0806, 0x0401, 0x0501, 0x0601, 0x0203, 0x0201,
    ),
    supported_versions=(ch.TLS13, ch.TLS12),
)


def _variants(hello: ClientHello) -> frozenset[str]:
    """JA4 of `hello` with each SNI and ALPN variant a client sends."""
    found = set()
    for name in SNI_VARIANTS:
        for alpn in ALPN_VARIANTS:
            extensions = [e for e in hello.extensions
                          if not (e == ch.EXT_SERVER_NAME and name is None)
                          and not (e == ch.EXT_ALPN and not alpn)]
            found.add(ja4(ClientHello(
                legacy_version=hello.legacy_version, cipher_suites=hello.cipher_suites,
                extensions=tuple(extensions), server_name=name, alpn=alpn,
                supported_groups=hello.supported_groups, ec_point_formats=hello.ec_point_formats,
                signature_algorithms=hello.signature_algorithms,
                supported_versions=hello.supported_versions,
            )))
    return frozenset(found)


def elsewhere_hello(
    fingerprint: str, server_name: str | None, alpn: tuple[str, ...]
) -> ClientHello:
    """The hello elsewhere's TLS client sends with `fp=fingerprint` (made, not sent)."""
    draft = ch.HelloDraft.new(ch.shape_for(fingerprint), server_name, alpn, os.urandom)
    return parse_client_hello(Tls13Client(draft, AnyCertificate()).start())


def _ours(fingerprint: str) -> frozenset[str]:
    return frozenset(
        ja4(elsewhere_hello(fingerprint, name, alpn))
        for name in SNI_VARIANTS for alpn in ALPN_VARIANTS
    )


def _python() -> frozenset[str]:
    from elsewhere.lab.techniques.fingerprint import python_fingerprints

    return python_fingerprints()


NAMED: dict[str, Callable[[], frozenset[str]]] = {
    "python": _python,
    "utls-chrome": lambda: _variants(UTLS_CHROME_133),
    "utls-firefox": lambda: _variants(UTLS_FIREFOX_120),
    "chrome": lambda: _ours("chrome"),
    "firefox": lambda: _ours("firefox"),
}
WAVE_2026_06 = ("python", "utls-chrome")


def resolve(entries: Iterable[str]) -> frozenset[str]:
    """A block list: named sets expanded, anything else taken as a JA3 or JA4 string."""
    found: set[str] = set()
    for entry in entries:
        make = NAMED.get(entry)
        if make is not None:
            found |= make()
        else:
            found.add(entry)
    return frozenset(found)
