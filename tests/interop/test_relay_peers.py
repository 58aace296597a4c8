"""Clients no one here wrote get through an elsewhere relay (issue 9), each configured from the
link the relay printed: Debian's ss-local (Shadowsocks AEAD) to a relay whose exit is an
elsewhere server, and Debian's v2ray (VLESS over TLS) to a relay whose exit is Debian's ss-server.
(v2ray 4.34 over WebSocket is left out: its WebSocket reader returns the server's Close frame
as an error, not an end of stream, and it then throws away the download it still buffers; its
own server's Close does the same, and so does a one-hop elsewhere server's.) Megabytes each
way arrive byte-exact; the exit sees the relay's key only."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from elsewhere.codecs.ss2022 import generate_psk
from elsewhere.config import from_mapping
from elsewhere.control.links import AccessKey, format_access_key, parse_access_key
from elsewhere.engine import Engine
from elsewhere.store.usage import UsageMeter
from interop.peers import eventually, http_sink, running
from interop.test_ss_engine_libev import post_through, settled
from interop.tls_peers import V2RAY_READY, write_config
from interop.tls_peers import running as running_logged
from ports import free_port

# Needs the Debian packages shadowsocks-libev, v2ray and curl (.ci/apt-packages); never skipped.
pytestmark = pytest.mark.interop

M2022 = "2022-blake3-aes-256-gcm"
ELSEWHERE = [sys.executable, "-m", "elsewhere"]


@contextlib.asynccontextmanager
async def relay(
    home: Path, exit_link: str, key_args: list[str], log: Path
) -> AsyncIterator[str]:
    """`elsewhere keys add phone KEY_ARGS`, then `elsewhere relay EXIT_LINK` on loopback;
    yields the phone's link as the relay printed it, once the relay found its exit working."""
    add = await asyncio.create_subprocess_exec(
        *ELSEWHERE, "keys", "add", "phone", "--no-qr", "--data-dir", str(home), *key_args,
        stdout=asyncio.subprocess.DEVNULL)
    assert await asyncio.wait_for(add.wait(), 30) == 0
    args = ["relay", exit_link, "--data-dir", str(home), "--host", "127.0.0.1",
            "--listen", "127.0.0.1", "--port", str(free_port()),
            "--port-2022", str(free_port()), "--port-tls", str(free_port())]
    with log.open("wb") as out:
        proc = await asyncio.create_subprocess_exec(*ELSEWHERE, *args, stdout=out, stderr=out)
    try:
        def ready() -> bool:
            if proc.returncode is not None:
                pytest.fail(f"the relay exited: {log.read_text(errors='replace')}")
            return " ok · " in log.read_text(errors="replace")

        await eventually(ready, "the relay to find its exit working", 30)
        lines = log.read_text(errors="replace").splitlines()
        at = next(i for i, line in enumerate(lines) if line.startswith("key phone ("))
        yield lines[at + 1].strip()
    finally:
        if proc.returncode is None:
            proc.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(proc.wait(), 10)
            except TimeoutError:
                proc.kill()
                await proc.wait()


async def test_ss_local_from_the_relays_link_reaches_a_site_through_relay_and_exit(
    tmp_path: Path,
) -> None:
    psk, relay_psk = generate_psk(M2022), generate_psk(M2022)
    exit_port = free_port()
    meter = UsageMeter()
    exit_config = {
        "inbounds": [{"type": "ss2022", "listen": "127.0.0.1", "port": exit_port,
                      "method": M2022, "psk": psk,
                      "users": [{"id": "the-relay", "psk": relay_psk}]}],
        "outbounds": [{"type": "direct", "private": "allow"}],
    }
    exit_link = format_access_key(
        AccessKey("ss", M2022, f"{psk}:{relay_psk}", "127.0.0.1", exit_port, name="exit"))
    sink = await http_sink()
    async with sink.server, Engine(from_mapping(exit_config), meter=meter) as exit_, relay(
            tmp_path / "relay", exit_link, ["--method", "aes-256-gcm"],
            tmp_path / "relay.log") as link:
        key = parse_access_key(link)
        assert (key.method, key.host) == ("aes-256-gcm", "127.0.0.1")
        local = free_port()
        args = ["ss-local", "-s", key.host, "-p", str(key.port), "-b", "127.0.0.1",
                "-l", str(local), "-k", key.password, "-m", key.method]
        async with running(args, tmp_path / "ss-local.log", tcp=local):
            socks = ("--socks5-hostname", f"127.0.0.1:{local}")
            await post_through(sink, tmp_path, f"http://localhost:{sink.port}", *socks)
        await settled(exit_)
    [exchange] = sink.exchanges
    assert meter.drain() == {"the-relay": (exchange.read, exchange.written)}


def v2ray_from_link(link: str, local_port: int, target_port: int) -> dict[str, Any]:
    """A v2ray 4.34 client for a vless:// link: dokodemo-door on loopback to the target,
    VLESS over TLS (or WebSocket over TLS) as the link says (4.34 knows no pin:
    allowInsecure, which the link also carries for such apps)."""
    key = parse_access_key(link)
    params = key.extra
    assert params["security"] == "tls"
    stream: dict[str, Any] = {
        "network": params["type"], "security": "tls",
        "tlsSettings": {"serverName": params["sni"],
                        "allowInsecure": params.get("allowInsecure") == "1"},
    }
    if params["type"] == "ws":
        stream["wsSettings"] = {"path": params["path"], "headers": {"Host": params["host"]}}
    return {
        "log": {"loglevel": "warning"},
        "inbounds": [{"listen": "127.0.0.1", "port": local_port, "protocol": "dokodemo-door",
                      "settings": {"address": "127.0.0.1", "port": target_port,
                                   "network": "tcp"}}],
        "outbounds": [{
            "protocol": "vless",
            "settings": {"vnext": [{"address": key.host, "port": key.port,
                                    "users": [{"id": key.password, "encryption": "none"}]}]},
            "streamSettings": stream,
        }],
    }


async def test_v2ray_from_the_relays_vless_link_reaches_a_site_through_relay_and_ss_server(
    tmp_path: Path,
) -> None:
    password = os.urandom(12).hex()
    exit_port = free_port()
    exit_link = format_access_key(
        AccessKey("ss", "aes-256-gcm", password, "127.0.0.1", exit_port, name="ss-server"))
    ss_server = ["ss-server", "-s", "127.0.0.1", "-p", str(exit_port), "-k", password,
                 "-m", "aes-256-gcm"]
    sink = await http_sink()
    async with sink.server, running(ss_server, tmp_path / "ss-server.log", tcp=exit_port), \
            relay(tmp_path / "relay", exit_link, ["--protocol", "vless"],
                  tmp_path / "relay.log") as link:
        local = free_port()
        config = write_config(tmp_path, "v2ray.json", v2ray_from_link(link, local, sink.port))
        async with running_logged(["v2ray", "-config", str(config)], tmp_path / "v2ray.log",
                                  V2RAY_READY):
            await post_through(sink, tmp_path, f"http://127.0.0.1:{local}")
