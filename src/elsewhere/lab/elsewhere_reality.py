"""elsewhere's VLESS + REALITY as survival-matrix transports: the REALITY server in `server`,
its dest a real TLS 1.3 site of the lab's internet (cdn.test, on the freeze allowlist, or
blog.test, which is not), and elsewhere's own REALITY client (a browser's hello, Chrome's) in
`client`. A prober or censor that connects to the server meets that site itself."""

from __future__ import annotations

import uuid
from typing import Any

from elsewhere.codecs import reality
from elsewhere.lab import plan
from elsewhere.lab.elsewhere_transports import ElsewhereTransport
from elsewhere.lab.sites import HTTPS_PORT
from elsewhere.lab.topology import Lab

PORTS = {"cdn.test": (8470, 1120), "blog.test": (8471, 1121)}  # (apart from every other row's)


class ElsewhereReality(ElsewhereTransport):
    """VLESS over REALITY (no flow: elsewhere's client does not speak Vision yet) with `dest`
    one of the lab's sites, its name the client's SNI."""

    def __init__(self, dest: str = "cdn.test") -> None:
        self.dest = next(site for site in plan.SITES if site.name == dest)
        self.uuid = str(uuid.uuid4())
        self.private_key = reality.generate_private_key()
        self.short_id = "0123456789abcdef"
        self.name = "elsewhere-reality" + ("" if dest == "cdn.test" else f"-{dest.split('.')[0]}")
        self.port, self.socks_port = PORTS[dest]

    def server_inbound(self, lab: Lab) -> dict[str, Any]:
        return {
            "type": "reality",
            "dest": f"{self.dest.address}:{HTTPS_PORT}",
            "server_names": [self.dest.name],
            "private_key": reality.encode_key(self.private_key),
            "short_ids": [self.short_id],
            "max_time_diff": 60_000,
            "vless": [{"id": "lab", "uuid": self.uuid}],
        }

    def client_outbound(self, lab: Lab) -> dict[str, Any]:
        return {
            "type": "vless", "server": plan.SERVER, "port": self.port, "uuid": self.uuid,
            "security": "reality", "sni": self.dest.name, "fp": "chrome",
            "pbk": reality.encode_key(reality.public_key(self.private_key)),
            "sid": self.short_id,
        }
