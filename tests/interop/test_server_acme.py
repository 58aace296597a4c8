"""`elsewhere server --acme DOMAIN` gets its certificate from an ACME CA (Debian's pebble, with
real http-01 validation) and serves it on the TLS port that Trojan and VLESS keys point at."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import ssl
import sys
from pathlib import Path

import pytest

from elsewhere.control.links import parse_access_key
from interop.test_acme_pebble import DOMAINS, Pebble, pebble  # noqa: F401 (fixture)
from ports import free_port

pytestmark = pytest.mark.interop


async def test_server_obtains_and_serves_an_acme_certificate(
    tmp_path: Path,
    pebble: Pebble,  # noqa: F811
) -> None:
    domain = DOMAINS[0]
    tls_port = free_port()
    home = ["--data-dir", str(tmp_path / "data")]
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "elsewhere",
        "server",
        *home,
        "--host",
        "127.0.0.1",
        "--listen",
        "127.0.0.1",
        "--port",
        str(free_port()),
        "--port-2022",
        str(free_port()),
        "--port-tls",
        str(tls_port),
        "--acme",
        domain,
        "--acme-directory",
        pebble.directory,
        "--acme-ca",
        pebble.ca_file,
        "--http-port",
        str(pebble.http_port),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        assert proc.stdout is not None
        async with asyncio.timeout(60):
            while b"ss://" not in (line := await proc.stdout.readline()):
                if not line:
                    assert proc.stderr is not None
                    why = (await proc.stderr.read()).decode(errors="replace")
                    pytest.fail(f"server exited before printing its keys: {why}")
        trust = ssl.create_default_context(cadata=pebble.root().decode())
        _reader, writer = await asyncio.open_connection(
            "127.0.0.1", tls_port, ssl=trust, server_hostname=domain
        )
        names = writer.get_extra_info("peercert")["subjectAltName"]
        writer.close()
        assert ("DNS", domain) in names
        added = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "elsewhere",
            "keys",
            "add",
            "v",
            "--protocol",
            "vless",
            "--no-qr",
            *home,
            stdout=asyncio.subprocess.PIPE,
        )
        out, _ = await added.communicate()
        link = next(w for w in out.decode().split() if w.startswith("vless://"))
        key = parse_access_key(link)
        assert key.extra["sni"] == domain and "pcs" not in key.extra  # a CA cert needs no pin
    finally:
        with contextlib.suppress(ProcessLookupError):  # it may have exited on its own
            proc.send_signal(signal.SIGTERM)
        try:
            async with asyncio.timeout(10):
                await proc.wait()
        finally:
            if proc.returncode is None:
                os.kill(proc.pid, signal.SIGKILL)
                await proc.wait()
