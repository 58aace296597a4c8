"""A CDN edge in the lab's `domestic` namespace: Debian's nginx as an ordinary caching reverse
proxy, the way a CDN forwards a site to its origin. Users reach it over HTTPS (HTTP/2 or
HTTP/1.1) at plan.DOMESTIC_HOST, which the censor's allowlist and 16 KB freeze spare; it
forwards every request over HTTP/1.1 to the origin abroad, with request bodies buffered whole
before they go (proxy_request_buffering on), responses cached unless the origin says
otherwise, and no WebSocket upgrade configured (no Upgrade/Connection headers passed on): what
most CDNs do by default, and why XHTTP's packet-up exists."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from contextlib import contextmanager

from elsewhere.lab import plan
from elsewhere.lab.errors import LabError
from elsewhere.lab.sites import CertFiles
from elsewhere.lab.topology import Lab
from elsewhere.session import Destination

CDN_NAME = "edge.cdn-ru.test"  # the name users' TLS shows: a domestic CDN's
PORT = 443
START_TIMEOUT = 10.0

CONFIG = """\
user root;
worker_processes 1;
daemon off;
pid {root}/nginx.pid;
error_log {root}/error.log warn;
events {{ worker_connections 1024; }}
http {{
    access_log {root}/access.log;
    client_body_temp_path {root}/body;
    proxy_temp_path {root}/proxy;
    fastcgi_temp_path {root}/fastcgi;
    uwsgi_temp_path {root}/uwsgi;
    scgi_temp_path {root}/scgi;
    proxy_cache_path {root}/cache keys_zone=edge:4m max_size=64m;
    server {{
        listen {address}:{port} ssl http2;
        server_name {name};
        ssl_certificate {cert};
        ssl_certificate_key {key};
        client_max_body_size 2m;
        location / {{
            proxy_pass http://{origin};
            proxy_http_version 1.1;
            proxy_set_header Host $host;
            proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
            proxy_request_buffering on;
            proxy_buffering on;
            proxy_cache edge;
            proxy_read_timeout 300s;
        }}
    }}
}}
"""


def nginx_binary() -> str:
    binary = shutil.which("nginx") or "/usr/sbin/nginx"
    if not shutil.which(binary):
        raise LabError("the CDN needs Debian's nginx (apt-get install nginx-light or nginx)")
    return binary


_issued: dict[str, CertFiles] = {}  # lab id -> the edge's one certificate


def certificate(lab: Lab) -> CertFiles:
    """The edge's certificate from the lab CA, issued once per lab: every row through the CDN
    pins the same one (a second issue would overwrite the files under the first row's pin)."""
    assert lab.ca is not None
    if lab.id not in _issued:
        _issued[lab.id] = lab.ca.issue("cdn-edge", dns_names=(CDN_NAME,))
    return _issued[lab.id]


@contextmanager
def running_cdn(lab: Lab, origin: Destination, cert: CertFiles | None = None) -> Iterator[None]:
    """nginx in `domestic` on DOMESTIC_HOST:443 for CDN_NAME, forwarding to `origin` (plain
    HTTP/1.1, over the domestic host's uplink, which no censor sits on) until the block ends."""
    root = lab.workdir / "cdn"
    root.mkdir(exist_ok=True)
    files = cert or certificate(lab)
    conf = root / "nginx.conf"
    conf.write_text(
        CONFIG.format(
            root=root,
            address=plan.DOMESTIC_HOST,
            port=PORT,
            name=CDN_NAME,
            cert=files.cert,
            key=files.key,
            origin=origin,
        )
    )
    process = lab.spawn(
        "domestic",
        [nginx_binary(), "-c", str(conf), "-p", str(root), "-e", str(root / "error.log")],
        name="cdn-nginx",
    )
    try:
        lab.wait_tcp("domestic", plan.DOMESTIC_HOST, PORT, timeout=START_TIMEOUT)
        yield
    finally:
        lab.forget(process)
