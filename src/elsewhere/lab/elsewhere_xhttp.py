"""elsewhere's XHTTP as survival-matrix transports, and the CDN rows:

- `elsewhere-xhttp`: VLESS over XHTTP (packet-up, HTTP/2) straight to the server's TLS port;
- `elsewhere-xhttp-cdn`: the same through the CDN edge in `domestic` (lab.cdn: nginx, HTTP/1.1
  to the origin, bodies buffered, no WebSocket): the client only ever talks to a domestic
  address, which the allowlist and the 16 KB freeze spare;
- `elsewhere-vless-ws-cdn`: VLESS over WebSocket through the same nginx, which passes no
  Upgrade: it fails, which is why XHTTP exists.

The origin behind the CDN is the server's TLS inbound with `security = "none"` on a port of its
own, trusting X-Forwarded-For from the domestic host's uplink only."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from elsewhere.lab import cdn, plan
from elsewhere.lab.elsewhere_transports import WEBSOCKET_PATH, ElsewhereTls
from elsewhere.lab.sites import CertFiles
from elsewhere.lab.topology import Lab
from elsewhere.lab.transport import Route
from elsewhere.session import Destination
from elsewhere.transports.tls import certificate_pin

XHTTP_PATH = "/assets/sync"


class ElsewhereXhttp(ElsewhereTls):
    """VLESS over XHTTP to the server's TLS port (h2 by ALPN, packet-up)."""

    def __init__(self, mode: str = "packet-up", alpn: str = "h2") -> None:
        super().__init__("vless")
        self.mode = mode
        self.alpn = alpn
        self.name = "elsewhere-xhttp" if alpn == "h2" else "elsewhere-xhttp-h1"
        self.port, self.socks_port = (8460, 1110) if alpn == "h2" else (8461, 1111)

    def server_inbound(self, lab: Lab) -> dict[str, Any]:
        inbound = super().server_inbound(lab)
        inbound["xhttp"] = {"path": XHTTP_PATH}
        return inbound

    def client_outbound(self, lab: Lab) -> dict[str, Any]:
        outbound = super().client_outbound(lab)
        outbound |= {
            "network": "xhttp",
            "path": XHTTP_PATH,
            "mode": self.mode,
            "alpn": self.alpn,
            "host": plan.SERVER_NAME,
        }
        return outbound


class ElsewhereCdn(ElsewhereTls):
    """A TLS-family transport whose client talks to the CDN edge in `domestic`, which forwards
    to the server's plain-HTTP origin port. `network` is "xhttp" or "ws"."""

    def __init__(self, network: str = "xhttp") -> None:
        super().__init__("vless")
        self.via = network
        if network == "xhttp":
            self.name, self.port, self.socks_port = "elsewhere-xhttp-cdn", 8452, 1104
        else:
            self.name, self.port, self.socks_port = "elsewhere-vless-ws-cdn", 8453, 1105
        self._edge: dict[str, tuple[CertFiles, str]] = {}

    def edge_certificate(self, lab: Lab) -> tuple[CertFiles, str]:
        if lab.id not in self._edge:
            files = cdn.certificate(lab)
            cert = x509.load_pem_x509_certificate(files.cert.read_bytes())
            self._edge[lab.id] = files, certificate_pin(cert.public_bytes(Encoding.DER))
        return self._edge[lab.id]

    def server_inbound(self, lab: Lab) -> dict[str, Any]:
        inbound: dict[str, Any] = {
            "type": "tls",
            "security": "none",
            "fallback": "decoy",
            "vless": [{"id": "lab", "uuid": self.uuid}],
            "trusted_proxies": [plan.DOMESTIC_UPLINK],
        }
        if self.via == "xhttp":
            inbound["xhttp"] = {"path": XHTTP_PATH, "host": cdn.CDN_NAME}
        else:
            inbound["websocket"] = {"path": WEBSOCKET_PATH}
        return inbound

    def client_outbound(self, lab: Lab) -> dict[str, Any]:
        outbound: dict[str, Any] = {
            "type": "vless",
            "uuid": self.uuid,
            "server": plan.DOMESTIC_HOST,
            "port": cdn.PORT,
            "sni": cdn.CDN_NAME,
            "host": cdn.CDN_NAME,
            "pin": self.edge_certificate(lab)[1],
        }
        if self.via == "xhttp":
            outbound |= {
                "network": "xhttp",
                "path": XHTTP_PATH,
                "mode": "packet-up",
                "alpn": "h2",
            }
        else:
            outbound |= {"network": "ws", "path": WEBSOCKET_PATH}
        return outbound

    @contextmanager
    def open(self, lab: Lab) -> Iterator[Route]:
        origin = Destination(plan.SERVER, self.port)
        edge = self.edge_certificate(lab)[0]
        with cdn.running_cdn(lab, origin, edge), super().open(lab) as route:
            yield Route(proxy=route.proxy, server=Destination(plan.DOMESTIC_HOST, cdn.PORT))


def xhttp_transports() -> list[ElsewhereTls]:
    """The XHTTP rows of the matrix, and the WebSocket row through the CDN that fails."""
    return [ElsewhereXhttp(), ElsewhereCdn("xhttp"), ElsewhereCdn("ws")]
