"""Benchmark rows for XHTTP (issue 10): VLESS over XHTTP packet-up, over HTTP/2 and HTTP/1.1,
straight to elsewhere's TLS port and through a CDN-like nginx (Debian's, HTTP/1.1 to the origin,
request bodies buffered, as lab.cdn configures it) running in the server namespace beside the
origin. The CDN's TLS and its extra hop are what the "via CDN" rows add."""

from __future__ import annotations

import shutil
import uuid
from typing import Any

from namespaces import SERVER_ADDR, Lab
from transports import TLS_NAME, ElsewhereTransport, certificate

XHTTP_PATH = "/xh"
NGINX = """\
user root;
worker_processes 1;
daemon off;
pid {root}/nginx.pid;
error_log {root}/error.log warn;
events {{ worker_connections 4096; }}
http {{
    access_log off;
    client_body_temp_path {root}/body;
    proxy_temp_path {root}/proxy;
    fastcgi_temp_path {root}/fastcgi;
    uwsgi_temp_path {root}/uwsgi;
    scgi_temp_path {root}/scgi;
    server {{
        listen {addr}:{port} ssl http2;
        server_name {name};
        ssl_certificate {cert};
        ssl_certificate_key {key};
        client_max_body_size 2m;
        keepalive_requests 100000;
        location / {{
            proxy_pass http://127.0.0.1:{origin};
            proxy_http_version 1.1;
            proxy_set_header Host $host;
            proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
            proxy_request_buffering on;
            proxy_read_timeout 300s;
        }}
    }}
}}
"""


class ElsewhereXhttp(ElsewhereTransport):
    """VLESS over XHTTP packet-up; `alpn` h2 or http/1.1; `cdn`: through nginx."""

    def __init__(self, lab: Lab, index: int, alpn: str, cdn: bool = False) -> None:
        super().__init__(lab, index)
        self.alpn = alpn
        self.cdn = cdn
        self.uuid = str(uuid.uuid4())
        version = "h2" if alpn == "h2" else "h1"
        self.name = f"elsewhere-xhttp-{version}" + ("-cdn" if cdn else "")
        self.label = f"elsewhere VLESS+XHTTP packet-up {version}" + (" via nginx" if cdn else "")
        self.origin_port = self.server_port + 100  # the elsewhere origin behind nginx

    def server_inbound(self) -> dict[str, Any]:
        cert = certificate(self.lab.workdir)
        inbound: dict[str, Any] = {
            "type": "tls",
            "listen": SERVER_ADDR,
            "port": self.server_port,
            "vless": [{"id": "bench", "uuid": self.uuid}],
            "xhttp": {"path": XHTTP_PATH},
            "fallback": "decoy",
        }
        if self.cdn:
            inbound |= {"listen": "127.0.0.1", "port": self.origin_port, "security": "none"}
            inbound["trusted_proxies"] = ["127.0.0.1"]
        else:
            inbound |= {"cert": str(cert.cert), "key": str(cert.key)}
        return inbound

    def start_server(self) -> None:
        if not self.cdn:
            super().start_server()
            return
        # the origin first (its port is not the row's), then nginx on the row's port
        port, self.server_port = self.server_port, self.origin_port
        try:
            super().start_server()
        finally:
            self.server_port = port
        origin_pid = self.server_pid
        cert = certificate(self.lab.workdir)
        root = self.lab.workdir / f"{self.name}-nginx"
        root.mkdir(exist_ok=True)
        conf = root / "nginx.conf"
        conf.write_text(
            NGINX.format(
                root=root,
                addr=SERVER_ADDR,
                port=self.server_port,
                name=TLS_NAME,
                cert=cert.cert,
                key=cert.key,
                origin=self.origin_port,
            )
        )
        binary = shutil.which("nginx") or "/usr/sbin/nginx"
        argv = [binary, "-c", str(conf), "-p", str(root), "-e", str(root / "error.log")]
        nginx = self._spawn(self.lab.server, argv, "nginx", self.server_port)
        self.server_pid = origin_pid  # memory per tunnel is the origin's
        self.client_pids.append(nginx.pid)  # nginx's CPU is charged to the row too

    def client_outbound(self) -> dict[str, Any]:
        return {
            "type": "vless",
            "tag": "proxy",
            "server": SERVER_ADDR,
            "port": self.server_port,
            "sni": TLS_NAME,
            "pin": certificate(self.lab.workdir).pin,
            "network": "xhttp",
            "path": XHTTP_PATH,
            "mode": "packet-up",
            "alpn": self.alpn,
            "uuid": self.uuid,
        }
