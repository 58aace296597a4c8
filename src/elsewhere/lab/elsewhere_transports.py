"""elsewhere's own transports as survival-matrix transports: the server role runs in `server`,
the client role (a `mixed` SOCKS5/HTTP port that sends names unresolved) in `client`, each as
`python -m elsewhere run -c FILE` with a TOML config written here. One class per wire format:

- Shadowsocks AEAD (SIP004) with an Outline printable prefix, and without one to show the
  difference the prefix makes against the GFW's fully-encrypted-traffic rule;
- Shadowsocks 2022 (SIP022);
- Trojan over TLS, VLESS over TLS, VLESS over WebSocket over TLS, all on one TLS inbound with
  the built-in decoy site as the fallback, and a certificate from the lab CA pinned by the
  client (the way a self-signed elsewhere server is pinned in its share links);
- VLESS over WebSocket with a browser's ClientHello (`fp = "chrome"`, transports.browser_ws),
  when that transport and its `curl_cffi` dependency are installed.
"""

from __future__ import annotations

import importlib.util
import json
import secrets
import uuid
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any, Literal

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from elsewhere.codecs.ss2022 import generate_psk
from elsewhere.lab import fingerprints, plan
from elsewhere.lab.clienthello import ja3, ja4, parse_client_hello, python_default_hello
from elsewhere.lab.matrix import DEFAULT_SEED
from elsewhere.lab.policy import CensorConfig
from elsewhere.lab.sites import CertFiles
from elsewhere.lab.techniques.fingerprint import SNI_LENGTHS
from elsewhere.lab.topology import Lab, LabProcess
from elsewhere.lab.transport import Route, Transport
from elsewhere.session import Destination
from elsewhere.transports.settings import StreamSettings
from elsewhere.transports.tls import certificate_pin

START_TIMEOUT = 10.0
LISTENING = "listening:"  # what `elsewhere run` prints once an inbound accepts connections
IDLE_TIMEOUT = 60  # seconds; short enough that a torn-down cell leaves nothing open for long
# Outline's suggested prefix for ports like 80/8080: an HTTP response start, printable, so the
# first packet meets the GFW's "first six bytes printable" exemption (Wu et al. 2023, Ex2).
HTTP_PREFIX = b"HTTP/1.1 "
WEBSOCKET_PATH = "/assets/live"

TlsProtocol = Literal["trojan", "vless"]
TlsNetwork = Literal["tcp", "ws"]


def toml_text(config: Mapping[str, Any]) -> str:
    """The subset of TOML an engine config needs: arrays of tables of scalars, lists and inline
    tables (TOML 1.0; basic strings share JSON's escapes, which `json.dumps` writes)."""
    lines: list[str] = []
    for section, tables in config.items():
        if isinstance(tables, Mapping):
            lines += [f"[{section}]", *(f"{k} = {_toml_value(v)}" for k, v in tables.items()), ""]
            continue
        for table in tables:
            lines += [f"[[{section}]]", *(f"{k} = {_toml_value(v)}" for k, v in table.items()), ""]
    return "\n".join(lines)


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float | str):
        return json.dumps(value, ensure_ascii=False)
    if isinstance(value, Mapping):
        return "{ " + ", ".join(f"{k} = {_toml_value(v)}" for k, v in value.items()) + " }"
    if isinstance(value, Sequence):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    raise TypeError(f"no TOML form for {type(value).__name__}")


class ElsewhereTransport:
    """Starts an elsewhere server and client in the lab and routes curl through the client's
    SOCKS5 port. Subclasses say what the server listens with and what the client dials with."""

    name: str
    port: int  # the server's port on plan.SERVER
    socks_port: int  # the client's mixed port on 127.0.0.1 inside `client`

    def server_inbound(self, lab: Lab) -> dict[str, Any]:
        raise NotImplementedError

    def client_outbound(self, lab: Lab) -> dict[str, Any]:
        raise NotImplementedError

    def configs(self, lab: Lab) -> tuple[dict[str, Any], dict[str, Any]]:
        """(server, client) engine configs."""
        timeouts = {"idle": IDLE_TIMEOUT}
        server = {
            "inbounds": [{"listen": "0.0.0.0", "port": self.port, **self.server_inbound(lab)}],
            # Every lab address is private-range, so the server must be allowed to reach it.
            "outbounds": [{"type": "direct", "private": "allow"}],
            "timeouts": timeouts,
        }
        client = {
            "inbounds": [{"type": "mixed", "listen": "127.0.0.1", "port": self.socks_port}],
            "outbounds": [self.client_outbound(lab)],
            "timeouts": timeouts,
        }
        return server, client

    @contextmanager
    def open(self, lab: Lab) -> Iterator[Route]:
        server_config, client_config = self.configs(lab)
        started: list[LabProcess] = []
        try:
            ends: tuple[tuple[plan.Role, dict[str, Any]], ...] = (
                ("server", server_config), ("client", client_config))
            for role, config in ends:
                path = lab.workdir / f"{self.name}-{role}.toml"
                path.write_text(toml_text(config))
                path.chmod(0o600)  # it holds the keys
                process = lab.spawn(role, lab.python("elsewhere", "run", "-c", str(path)),
                                    name=f"{self.name}-{role}")
                started.append(process)
                process.wait_for_output(LISTENING, START_TIMEOUT)
            yield Route(proxy=f"socks5h://127.0.0.1:{self.socks_port}",
                        server=Destination(plan.SERVER, self.port))
        finally:
            for process in reversed(started):
                lab.forget(process)


class ElsewhereShadowsocks(ElsewhereTransport):
    """Shadowsocks AEAD (SIP004), optionally with an Outline prefix on the client's salt."""

    def __init__(self, prefix: bytes = HTTP_PREFIX, method: str = "aes-256-gcm") -> None:
        self.prefix = prefix
        self.method = method
        self.password = secrets.token_urlsafe(16)
        self.name = "elsewhere-ss-prefix" if prefix else "elsewhere-ss"
        self.port = 8390 if prefix else 8391
        self.socks_port = 1090 if prefix else 1091

    def server_inbound(self, lab: Lab) -> dict[str, Any]:
        return {"type": "shadowsocks", "udp": False,
                "keys": [{"id": "lab", "method": self.method, "password": self.password}]}

    def client_outbound(self, lab: Lab) -> dict[str, Any]:
        outbound = {"type": "shadowsocks", "server": plan.SERVER, "port": self.port,
                    "method": self.method, "password": self.password}
        if self.prefix:
            outbound["prefix"] = self.prefix.decode("latin-1")  # how the config spells bytes
        return outbound


class ElsewhereSs2022(ElsewhereTransport):
    """Shadowsocks 2022 (SIP022): BLAKE3 keys, timestamps, a salt pool, random padding."""

    name = "elsewhere-ss2022"
    port = 8392
    socks_port = 1092

    def __init__(self, method: str = "2022-blake3-aes-256-gcm") -> None:
        self.method = method
        self.psk = generate_psk(method)

    def server_inbound(self, lab: Lab) -> dict[str, Any]:
        return {"type": "ss2022", "method": self.method, "psk": self.psk, "udp": False}

    def client_outbound(self, lab: Lab) -> dict[str, Any]:
        return {"type": "ss2022", "server": plan.SERVER, "port": self.port,
                "method": self.method, "password": self.psk}


class ElsewhereTls(ElsewhereTransport):
    """Trojan or VLESS over TLS (optionally inside a WebSocket) to elsewhere's TLS inbound, whose
    certificate for abroad.test comes from the lab CA and is pinned by the client; anything
    that is not ours goes to the built-in decoy site."""

    PORTS: dict[tuple[TlsProtocol, TlsNetwork, str | None], tuple[int, int]] = {
        ("trojan", "tcp", None): (8443, 1093),
        ("vless", "tcp", None): (8444, 1094),
        ("vless", "ws", None): (8445, 1095),
        ("vless", "ws", "chrome"): (8446, 1096),
        ("trojan", "ws", None): (8447, 1097),
        ("trojan", "ws", "chrome"): (8448, 1098),
        # elsewhere's own TLS client with each browser's hello (the `fingerprint` proofs)
        ("trojan", "tcp", "chrome"): (8449, 1099),
        ("trojan", "tcp", "firefox"): (8450, 1100),
    }

    def __init__(
        self, protocol: TlsProtocol, network: TlsNetwork = "tcp", fp: str | None = None
    ) -> None:
        self.protocol = protocol
        self.network = network
        self.fp = fp
        self.password = secrets.token_urlsafe(16)
        self.uuid = str(uuid.uuid4())
        self.name = "-".join(["elsewhere", protocol, *(["ws"] if network == "ws" else []),
                              *([fp] if fp else [])])
        self.port, self.socks_port = self.PORTS[(protocol, network, fp)]
        self._certificates: dict[str, tuple[CertFiles, str]] = {}  # per lab: files and pin

    def certificate(self, lab: Lab) -> tuple[CertFiles, str]:
        """The server's certificate for abroad.test from this lab's CA, and its pin."""
        if lab.id not in self._certificates:
            assert lab.ca is not None
            files = lab.ca.issue(f"{self.name}-server", dns_names=(plan.SERVER_NAME,))
            cert = x509.load_pem_x509_certificate(files.cert.read_bytes())
            self._certificates[lab.id] = files, certificate_pin(cert.public_bytes(Encoding.DER))
        return self._certificates[lab.id]

    def server_inbound(self, lab: Lab) -> dict[str, Any]:
        cert, _ = self.certificate(lab)
        inbound: dict[str, Any] = {
            "type": "tls", "cert": str(cert.cert), "key": str(cert.key), "fallback": "decoy",
        }
        if self.protocol == "trojan":
            inbound["trojan"] = [{"id": "lab", "password": self.password}]
        else:
            inbound["vless"] = [{"id": "lab", "uuid": self.uuid}]
        if self.network == "ws":
            inbound["websocket"] = {"path": WEBSOCKET_PATH}
        return inbound

    def client_outbound(self, lab: Lab) -> dict[str, Any]:
        secret = ({"password": self.password} if self.protocol == "trojan"
                  else {"uuid": self.uuid})
        outbound: dict[str, Any] = {
            "type": self.protocol, "server": plan.SERVER, "port": self.port,
            "sni": plan.SERVER_NAME, "pin": self.certificate(lab)[1], "network": self.network,
            **secret,
        }
        if self.network == "ws":
            outbound |= {"path": WEBSOCKET_PATH, "host": plan.SERVER_NAME}
        if self.fp:
            outbound["fp"] = self.fp
        return outbound


def client_fingerprints() -> frozenset[str]:
    """JA3 and JA4 of the ClientHello elsewhere's Trojan/VLESS client sent on Python's `ssl`
    with elsewhere's settings (ALPN, minimum version), for every padding variant. They differ
    from a bare `ssl.create_default_context()` hello (the ALPN extension alone changes both),
    so a censor that lists Python's hellos lists these too."""
    context = StreamSettings(sni=plan.SERVER_NAME, pin="00" * 32).context()
    labels = ".".join(["a" * 9] * 40)  # DNS labels stay under 63 bytes
    found: set[str] = set()
    for length in SNI_LENGTHS:
        name = labels[:length].strip(".") + ".test"
        hello = parse_client_hello(python_default_hello(name, context))
        found.update((ja3(hello), ja4(hello)))
    return frozenset(found)


def censor_config(seed: int = DEFAULT_SEED) -> CensorConfig:
    """The lab's censor as the survival matrix runs it for elsewhere: the stock settings, and a
    `fingerprint` technique with the 2026-06 wave's list (Python's hellos and uTLS Chrome's,
    lab/fingerprints.py) and the hellos of a Python `ssl` client with elsewhere's settings, as
    elsewhere's client sent them before it had its own TLS: a censor lists the tools it hunts
    as they are."""
    known = (*fingerprints.WAVE_2026_06, *sorted(client_fingerprints()))
    return CensorConfig(seed=seed, blocked_fingerprints=known)


def browser_fingerprints_available() -> bool:
    """Whether the browser-ClientHello WebSocket transport and curl_cffi are installed."""
    return (importlib.util.find_spec("elsewhere.transports.browser_ws") is not None
            and importlib.util.find_spec("curl_cffi") is not None)


def elsewhere_transports() -> list[Transport]:
    """Every elsewhere transport, in the order the matrix shows them."""
    transports: list[Transport] = [
        ElsewhereShadowsocks(), ElsewhereShadowsocks(prefix=b""), ElsewhereSs2022(),
        ElsewhereTls("trojan"), ElsewhereTls("vless"), ElsewhereTls("vless", "ws"),
    ]
    if browser_fingerprints_available():
        transports.append(ElsewhereTls("vless", "ws", fp="chrome"))
    from elsewhere.lab.elsewhere_xhttp import ElsewhereCdn, ElsewhereXhttp  # they build on these

    transports += [ElsewhereXhttp(), ElsewhereCdn("xhttp")]
    from elsewhere.lab.elsewhere_reality import ElsewhereReality  # (it builds on this module)

    transports += [ElsewhereReality("cdn.test"), ElsewhereReality("blog.test")]
    return transports
