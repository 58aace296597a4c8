"""elsewhere's TLS 1.3 client (the `tls` layer of every TLS outbound) against real servers over
loopback sockets: Debian's nginx 1.22.1 (OpenSSL 3.0) with each TLS 1.3 cipher suite and with
key-exchange groups that force a HelloRetryRequest, serving a file of a few MB byte for byte;
and `openssl s_server`, whose KeyUpdate (with update_requested) the client follows and answers
while data flows both ways."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from test_decoy_nginx import nginx_process

from elsewhere.transports.dial import dial
from elsewhere.transports.layer import Layer, Pending
from elsewhere.transports.settings import StreamSettings
from ports import free_port
from tls13_pki import Leaf, Pki

pytestmark = pytest.mark.interop

TIMEOUT = 10.0
BODY = os.urandom(3 * 1024 * 1024 + 12345)
CONFIG = """
worker_processes 1;
daemon off;
master_process off;
pid {dir}/nginx.pid;
error_log {dir}/error.log info;
events {{ worker_connections 64; }}
http {{
    access_log off;
    client_body_temp_path {dir}/body;
    proxy_temp_path {dir}/proxy;
    fastcgi_temp_path {dir}/fastcgi;
    uwsgi_temp_path {dir}/uwsgi;
    scgi_temp_path {dir}/scgi;
    server {{
        listen 127.0.0.1:{port} ssl http2;
        ssl_certificate {cert};
        ssl_certificate_key {key};
        ssl_protocols TLSv1.2 TLSv1.3;
        ssl_ecdh_curve {curve};
        ssl_conf_command Ciphersuites {suite};
        root {dir}/site;
    }}
}}
"""


@pytest.fixture(scope="module")
def leaf(tmp_path_factory: pytest.TempPathFactory) -> Leaf:
    return Pki(tmp_path_factory.mktemp("pki")).leaf("nginx", self_signed=True)


@contextlib.contextmanager
def nginx(root: Path, leaf: Leaf, suite: str, curve: str) -> Iterator[int]:
    (root / "site").mkdir(exist_ok=True)
    (root / "site" / "file.bin").write_bytes(BODY)
    port = free_port()
    config = CONFIG.format(
        dir=root, port=port, cert=leaf.cert, key=leaf.key, suite=suite, curve=curve
    )
    with nginx_process(root, config, port):
        yield port


def settings(leaf: Leaf, fp: str) -> StreamSettings:
    return StreamSettings.from_options("proxy", {
        "sni": "localhost", "pin": hashlib.sha256(leaf.der).hexdigest(), "fp": fp,
    })


async def read_all(stream: Layer) -> bytes:
    """Everything the stream brings until the server's end."""
    got = bytearray()
    ended = asyncio.get_running_loop().create_future()

    class Collect(asyncio.Protocol):
        def data_received(self, data: bytes) -> None:
            got.extend(data)

        def eof_received(self) -> bool:
            if not ended.done():
                ended.set_result(None)
            return False

        def connection_lost(self, exc: Exception | None) -> None:
            if not ended.done():
                ended.set_result(None)

    held = stream.get_protocol()
    collect = Collect()
    stream.set_protocol(collect)
    if isinstance(held, Pending):
        for chunk in held.chunks:
            collect.data_received(chunk)
    stream.write(b"GET /file.bin HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
    await asyncio.wait_for(ended, TIMEOUT)
    return bytes(got)


@pytest.mark.parametrize("fp", ["chrome", "firefox"])
@pytest.mark.parametrize(("suite", "curve"), [
    ("TLS_AES_128_GCM_SHA256", "X25519"),
    ("TLS_AES_256_GCM_SHA384", "X25519"),
    ("TLS_CHACHA20_POLY1305_SHA256", "X25519"),
    ("TLS_AES_128_GCM_SHA256", "secp384r1"),  # a HelloRetryRequest for both browsers
    ("TLS_AES_256_GCM_SHA384", "prime256v1"),  # one for Chrome; Firefox sends a P-256 share
])
async def test_nginx_serves_a_file_byte_for_byte(
    tmp_path: Path, leaf: Leaf, fp: str, suite: str, curve: str
) -> None:
    with nginx(tmp_path, leaf, suite, curve) as port:
        stream = await dial(settings(leaf, fp), "127.0.0.1", port)
        try:
            assert stream.get_extra_info("alpn") == "http/1.1"
            reply = await read_all(stream)
        finally:
            stream.close()
    head, _, body = reply.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 OK")
    assert body == BODY


class Lines(asyncio.Protocol):
    """What the client stream receives, awaitable by content."""

    def __init__(self) -> None:
        self.data = bytearray()
        self.changed = asyncio.Event()

    def data_received(self, data: bytes) -> None:
        self.data.extend(data)
        self.changed.set()

    async def until(self, needle: bytes) -> None:
        while needle not in self.data:
            self.changed.clear()
            await asyncio.wait_for(self.changed.wait(), TIMEOUT)


async def until_output(path: Path, needle: bytes, proc: asyncio.subprocess.Process) -> None:
    """Until s_server's stdout (a file) holds `needle`: it prints what the client sent."""
    async def look() -> None:
        while needle not in path.read_bytes():
            if proc.returncode is not None:
                raise AssertionError(f"s_server exited: {path.read_bytes()!r}")
            await asyncio.sleep(0.02)  # polling a file s_server writes; no event to wait on

    await asyncio.wait_for(look(), TIMEOUT)


async def test_openssl_key_update_with_update_requested_is_followed_and_answered(
    tmp_path: Path, leaf: Leaf
) -> None:
    binary = shutil.which("openssl") or "/usr/bin/openssl"
    port = free_port()
    out = tmp_path / "s_server.out"
    with out.open("wb") as sink:
        proc = await asyncio.create_subprocess_exec(
            binary, "s_server", "-accept", f"127.0.0.1:{port}", "-cert", str(leaf.cert),
            "-key", str(leaf.key), "-tls1_3", "-ign_eof", "-msg",
            stdin=subprocess.PIPE, stdout=sink, stderr=subprocess.STDOUT,
        )
    assert proc.stdin is not None
    try:
        await until_output(out, b"ACCEPT", proc)
        stream = await dial(settings(leaf, "chrome"), "127.0.0.1", port)
        lines = Lines()
        stream.set_protocol(lines)
        stream.write(b"before update\n")
        await until_output(out, b"before update", proc)
        proc.stdin.write(b"K\n")  # s_server: KeyUpdate, update_requested
        await until_output(out, b"SSL_do_handshake -> 1", proc)  # it sent the KeyUpdate
        proc.stdin.write(b"under the new key\n")
        await lines.until(b"under the new key")
        stream.write(b"after update\n")  # under our new key, after our own KeyUpdate
        await until_output(out, b"after update", proc)
        # -msg: OpenSSL's KeyUpdate out (>>>), then ours in (<<<), before our data
        log = out.read_bytes()
        sent = log.index(b">>> TLS 1.3, Handshake [length 0005], KeyUpdate")
        answered = log.index(b"<<< TLS 1.3, Handshake [length 0005], KeyUpdate", sent)
        assert answered < log.index(b"after update")
        stream.close()
    finally:
        proc.kill()
        await proc.wait()
