"""`elsewhere server` gives its TLS port a decoy site of its own: made on the first run (or
the first run of an install that has none yet), kept as it is on every later run."""

from __future__ import annotations

import asyncio
import os
import signal
import ssl
import sys
from pathlib import Path

from elsewhere.control import roles
from elsewhere.web.decoy_content import DecoyContent

ELSEWHERE = [sys.executable, "-m", "elsewhere"]


def snapshot(directory: Path) -> dict[str, tuple[bytes, float]]:
    return {p.name: (p.read_bytes(), p.stat().st_mtime) for p in sorted(directory.iterdir())}


def tls_inbound(settings: roles.ServerSettings, store: roles.SqliteStore) -> dict[str, object]:
    config = roles.server_config(settings, store)
    (inbound,) = [i for i in config.inbounds if i.get("type") == "tls"]
    return dict(inbound)


def test_the_first_run_makes_the_site_and_later_runs_keep_it(tmp_path: Path) -> None:
    store = roles.open_store(tmp_path)
    try:
        settings, _ = roles.prepare_server(store, 0, "127.0.0.1", "127.0.0.1", data=tmp_path)
        assert settings.site == tmp_path / "site" and settings.site_created
        assert tls_inbound(settings, store)["decoy"] == str(tmp_path / "site")
        before = snapshot(tmp_path / "site")
        assert "index.html" in before
        settings, _ = roles.prepare_server(store, None, None, None, data=tmp_path)
        assert settings.site == tmp_path / "site" and not settings.site_created
        assert snapshot(tmp_path / "site") == before
    finally:
        store.close()


def test_an_install_from_before_sites_gets_one_on_its_next_run(tmp_path: Path) -> None:
    store = roles.open_store(tmp_path)
    try:
        roles.prepare_server(store, 0, "127.0.0.1", "127.0.0.1", data=tmp_path)
        for path in (tmp_path / "site").iterdir():
            path.unlink()
        (tmp_path / "site").rmdir()
        settings, created = roles.prepare_server(store, None, None, None, data=tmp_path)
        assert created == []  # the same install: its keys were kept
        assert settings.site_created and (tmp_path / "site" / "index.html").is_file()
    finally:
        store.close()


def test_without_a_data_directory_the_packaged_site_is_served(tmp_path: Path) -> None:
    store = roles.open_store(tmp_path)
    try:
        settings, _ = roles.prepare_server(store, 0, "127.0.0.1", "127.0.0.1")
        assert settings.site is None and not (tmp_path / "site").exists()
    finally:
        store.close()


async def run_server_once(home: Path, ports: list[int]) -> tuple[list[str], bytes]:
    """Start `elsewhere server`, read what it prints until it serves, fetch / from its TLS
    port, stop it; returns the lines and the answer."""
    port, port_2022, port_tls = ports
    proc = await asyncio.create_subprocess_exec(
        *ELSEWHERE,
        "server",
        "--data-dir",
        str(home),
        "--port",
        str(port),
        "--port-2022",
        str(port_2022),
        "--port-tls",
        str(port_tls),
        "--host",
        "127.0.0.1",
        "--listen",
        "127.0.0.1",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        assert proc.stdout is not None
        lines: list[str] = []
        async with asyncio.timeout(20):
            while not lines or not lines[-1].startswith("share link host:"):
                line = (await proc.stdout.readline()).decode()
                assert line, "server exited before it served"
                lines.append(line.strip())
        ctx = ssl.create_default_context()
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        reader, writer = await asyncio.open_connection(
            "127.0.0.1", port_tls, ssl=ctx, server_hostname="127.0.0.1"
        )
        writer.write(b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
        answer = await asyncio.wait_for(reader.read(-1), 10)
        writer.close()
        proc.send_signal(signal.SIGTERM)
        async with asyncio.timeout(10):
            assert await proc.wait() == 0
        return lines, answer
    finally:
        if proc.returncode is None:
            os.kill(proc.pid, signal.SIGKILL)
            await proc.wait()


async def test_the_server_command_serves_its_own_site_and_keeps_it(tmp_path: Path) -> None:
    from ports import free_port

    ports = [free_port(), free_port(), free_port()]
    site = tmp_path / "site"
    lines, answer = await run_server_once(tmp_path, ports)
    assert f"created {site}: the web site strangers see on the TLS port" in lines
    index = DecoyContent.load(site).files["/index.html"]
    assert answer.startswith(b"HTTP/1.1 200 OK\r\n") and answer.endswith(index.body)
    assert f"ETag: {index.etag}\r\n".encode() in answer
    before = snapshot(site)

    lines, again = await run_server_once(tmp_path, ports)
    assert not any(line.startswith(f"created {site}") for line in lines)
    assert snapshot(site) == before
    assert again.split(b"\r\nDate: ")[0] == answer.split(b"\r\nDate: ")[0]
    assert again.partition(b"\r\n\r\n")[2] == answer.partition(b"\r\n\r\n")[2]
