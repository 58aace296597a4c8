"""The `elsewhere` command as a person uses it: clear one-line errors, keys, a server whose
keys change while it runs, and the demo."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from elsewhere.control.cli import parse_size
from elsewhere.control.demo import fetch_via_socks5
from elsewhere.control.links import parse_access_key
from elsewhere.control.roles import client_config
from elsewhere.engine import Engine
from elsewhere.errors import ConfigError

ELSEWHERE = [sys.executable, "-m", "elsewhere"]


def run(*args: str, timeout: float = 30) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*ELSEWHERE, *args], capture_output=True, text=True, timeout=timeout, check=False
    )


def assert_one_clear_line(result: subprocess.CompletedProcess[str], *words: str) -> None:
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("elsewhere: ")
    for word in words:
        assert word in lines[0]


@pytest.mark.parametrize(
    "command",
    [
        [],
        ["run"],
        ["server"],
        ["keys"],
        ["keys", "add"],
        ["keys", "list"],
        ["keys", "show"],
        ["keys", "revoke"],
        ["keys", "limit"],
        ["client"],
        ["relay"],
        ["demo"],
    ],
)
def test_every_command_has_help(command: list[str]) -> None:
    result = run(*command, "--help")
    assert result.returncode == 0
    assert "usage: elsewhere" in result.stdout


@pytest.mark.parametrize(
    ("key", "words"),
    [
        ("ss://not-a-key", ["ss://"]),
        ("vmess://abc", ["vmess://", "not supported"]),
        ("ss://YWVzLTI1Ni1nY206cGFzcw@host", ["port"]),
    ],
)
def test_malformed_access_key_is_one_clear_line(key: str, words: list[str]) -> None:
    assert_one_clear_line(run("client", key, "--no-status"), *words)


def test_port_in_use_is_one_clear_line() -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        key = "ss://YWVzLTI1Ni1nY206cGFzcw@127.0.0.1:8388"
        result = run("client", key, "--port", str(port), "--no-status")
    assert_one_clear_line(result, "already in use", str(port))


def test_bad_config_files_are_one_clear_line(tmp_path: Path) -> None:
    assert_one_clear_line(run("run", "-c", str(tmp_path / "nope.toml")), "does not exist")
    bad = tmp_path / "bad.toml"
    bad.write_text("[[inbounds]\ntype = 'mixed'\n")
    assert_one_clear_line(run("run", "-c", str(bad)), "not valid TOML")
    wrong = tmp_path / "wrong.toml"
    wrong.write_text("[[inbounds]]\ntype = 'socks9'\n")
    assert_one_clear_line(run("run", "-c", str(wrong)), "unknown type", "socks9")


def test_sizes_are_read_as_people_write_them() -> None:
    assert parse_size("50GB") == 50 * 10**9
    assert parse_size("1.5 GiB") == int(1.5 * 2**30)
    assert parse_size("500M") == 500 * 10**6
    assert parse_size("none") is None
    with pytest.raises(ConfigError, match="is not a size"):
        parse_size("lots")


def test_keys_add_list_limit_revoke(tmp_path: Path) -> None:
    home = ["--data-dir", str(tmp_path)]
    added = run("keys", "add", "alice", "--method", "aes-256-gcm", "--limit", "10GB", *home)
    assert added.returncode == 0, added.stderr
    link = next(w for w in added.stdout.split() if w.startswith("ss://"))
    assert parse_access_key(link).method == "aes-256-gcm"
    assert "▀" in added.stdout or "▄" in added.stdout  # the QR code
    listed = run("keys", "list", *home)
    assert "alice" in listed.stdout and "10.0 GB" in listed.stdout
    assert run("keys", "limit", "alice", "none", *home).returncode == 0
    assert "no limit" in run("keys", "list", *home).stdout
    assert_one_clear_line(run("keys", "add", "alice", *home), "alice")
    assert_one_clear_line(run("keys", "add", "bob", "--method", "rc4", *home), "rc4")
    assert run("keys", "revoke", "alice", *home).returncode == 0
    assert "alice" not in run("keys", "list", *home).stdout
    assert "revoked" in run("keys", "list", "--all", *home).stdout
    assert_one_clear_line(run("keys", "revoke", "nobody", *home), "nobody")


def test_demo_fetches_a_page_through_server_and_client() -> None:
    result = run("demo", "--exit", timeout=90)  # loaded CI machines: the run itself takes 0.2 s
    assert result.returncode == 0, result.stderr
    assert "access key: ss://" in result.stdout
    assert "got HTTP/1.1 200 OK" in result.stdout


async def _page_server() -> tuple[asyncio.Server, int]:
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok")
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    return server, server.sockets[0].getsockname()[1]


async def test_server_first_run_key_works_and_revocation_takes_effect_live(
    tmp_path: Path,
) -> None:
    from ports import free_port

    port = free_port()
    home = ["--data-dir", str(tmp_path)]
    proc = await asyncio.create_subprocess_exec(
        *ELSEWHERE,
        "server",
        *home,
        "--port",
        str(port),
        "--host",
        "127.0.0.1",
        "--listen",
        "127.0.0.1",
        "--allow-private",
        "--idle-timeout",
        "2",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        assert proc.stdout is not None
        link = ""
        async with asyncio.timeout(20):
            while not link:
                line = (await proc.stdout.readline()).decode()
                assert line, "server exited before printing its key"
                link = line.strip() if line.strip().startswith("ss://") else ""
        key = parse_access_key(link)
        assert (key.host, key.port) == ("127.0.0.1", port)
        site, site_port = await _page_server()
        async with site, Engine(client_config(key, "127.0.0.1", 0, [])) as client:
            proxy = client.inbounds[0].port  # type: ignore[attr-defined]
            page = await fetch_via_socks5(proxy, "localhost", site_port)
            assert page.endswith(b"ok")
            revoke = await asyncio.to_thread(run, "keys", "revoke", "first", *home)
            assert revoke.returncode == 0
            async with asyncio.timeout(10):
                while True:  # the server re-reads the store every 2 s
                    try:
                        page = await asyncio.wait_for(
                            fetch_via_socks5(proxy, "localhost", site_port), 4
                        )
                    except (TimeoutError, ConnectionError):
                        break
                    if not page:
                        break
        proc.send_signal(signal.SIGTERM)
        async with asyncio.timeout(10):
            assert await proc.wait() == 0
        listed = await asyncio.to_thread(run, "keys", "list", "--all", *home)
        assert "revoked" in listed.stdout
        assert "↑ 0 B" not in listed.stdout  # usage was written to the store
    finally:
        if proc.returncode is None:
            os.kill(proc.pid, signal.SIGKILL)
            await proc.wait()


@pytest.mark.parametrize(
    "key_args",
    [
        ["--protocol", "ss2022"],
        ["--protocol", "trojan"],
        ["--protocol", "vless", "--method", "ws"],
        ["--method", "aes-128-gcm"],
    ],
    ids=["ss2022", "trojan-tls", "vless-ws-tls", "ss-aes128"],
)
async def test_a_key_added_to_a_running_server_works_from_its_link(
    tmp_path: Path, key_args: list[str]
) -> None:
    from ports import free_port

    home = ["--data-dir", str(tmp_path)]
    ports = [str(free_port()) for _ in range(3)]
    proc = await asyncio.create_subprocess_exec(
        *ELSEWHERE,
        "server",
        *home,
        "--port",
        ports[0],
        "--port-2022",
        ports[1],
        "--port-tls",
        ports[2],
        "--host",
        "127.0.0.1",
        "--listen",
        "127.0.0.1",
        "--allow-private",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        assert proc.stdout is not None
        async with asyncio.timeout(20):
            while b"ss://" not in (line := await proc.stdout.readline()):
                assert line, "server exited before printing its key"
        added = await asyncio.to_thread(run, "keys", "add", "someone", "--no-qr", *home, *key_args)
        assert added.returncode == 0, added.stderr
        link = next(w for w in added.stdout.split() if "://" in w)
        key = parse_access_key(link)
        site, site_port = await _page_server()
        async with site, Engine(client_config(key, "127.0.0.1", 0, [])) as client:
            proxy = client.inbounds[0].port  # type: ignore[attr-defined]
            async with asyncio.timeout(10):
                while True:  # the server picks the key up within its 2 s reload
                    try:
                        page = await asyncio.wait_for(
                            fetch_via_socks5(proxy, "localhost", site_port), 3
                        )
                    except (TimeoutError, ConnectionError):
                        page = b""
                    if page.endswith(b"ok"):
                        break
                    await asyncio.sleep(0.5)
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            async with asyncio.timeout(10):
                await proc.wait()
        finally:
            if proc.returncode is None:
                os.kill(proc.pid, signal.SIGKILL)
                await proc.wait()
