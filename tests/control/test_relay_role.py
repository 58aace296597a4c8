"""The relay role (issue 9) on loopback: a relay carries its users to the exit and counts them
itself, the exit sees one client; chains of relays; never an open proxy; an exit it cannot use
is named with the reason, and its users get a closed connection, not a hang."""

from __future__ import annotations

import asyncio
import contextlib
import shlex
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest

from elsewhere.codecs.ss2022 import generate_psk
from elsewhere.config import from_mapping
from elsewhere.control import roles
from elsewhere.control.demo import fetch_via_socks5
from elsewhere.control.links import AccessKey, format_access_key
from elsewhere.control.relay import EXIT_TAG, exit_of, relay_config, status_line
from elsewhere.engine import Engine
from elsewhere.outbounds.exit import ExitOutbound
from ports import free_port

M2022 = "2022-blake3-aes-256-gcm"
AEAD = "aes-256-gcm"
PAGE = b"<html>the blocked site</html>"


class Meter:
    """Usage per key id, as the store's meter counts it."""

    def __init__(self) -> None:
        self.up: Counter[str] = Counter()
        self.down: Counter[str] = Counter()

    def add(self, key_id: str, up: int, down: int) -> None:
        self.up[key_id] += up
        self.down[key_id] += down


@asynccontextmanager
async def site() -> AsyncIterator[tuple[int, list[str]]]:
    """An HTTP server on loopback; yields its port and the peers that connected."""
    peers: list[str] = []

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        peers.append(writer.get_extra_info("peername")[0])
        try:
            await reader.readuntil(b"\r\n\r\n")
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % len(PAGE) + PAGE)
            await writer.drain()
        finally:
            writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    async with server:
        yield server.sockets[0].getsockname()[1], peers


def ss2022_link(port: int, psk: str, user_psk: str, name: str) -> str:
    key = AccessKey("ss", M2022, f"{psk}:{user_psk}", "127.0.0.1", port, name=name)
    return format_access_key(key)


def ss_link(port: int, password: str, name: str) -> str:
    return format_access_key(AccessKey("ss", AEAD, password, "127.0.0.1", port, name=name))


def ss2022_inbound(port: int, psk: str, users: Mapping[str, str]) -> dict[str, Any]:
    return {"type": "ss2022", "listen": "127.0.0.1", "port": port, "method": M2022, "psk": psk,
            "users": [{"id": name, "psk": key} for name, key in users.items()]}


def exit_engine(inbound: dict[str, Any], meter: Meter, private: str = "allow") -> Engine:
    return Engine(from_mapping({"inbounds": [inbound],
                                "outbounds": [{"type": "direct", "private": private}],
                                "timeouts": {"idle": 5}}), meter=meter)


def relay_engine(inbound: dict[str, Any], link: str, meter: Meter, **exit_options: Any) -> Engine:
    """The TOML form of a relay: its users' inbound, the exit as its only outbound."""
    return Engine(from_mapping({"inbounds": [inbound],
                                "outbounds": [{"type": "exit", "link": link, **exit_options}],
                                "timeouts": {"idle": 5}}), meter=meter)


def client_engine(link: str) -> Engine:
    from elsewhere.control.links import parse_access_key

    return Engine(roles.client_config(parse_access_key(link), "127.0.0.1", 0, []))


def proxy_port(client: Engine) -> int:
    return int(client.inbounds[0].port)  # type: ignore[attr-defined]


async def test_a_chain_of_three_hops_carries_each_user_and_each_hop_sees_only_the_one_before(
) -> None:
    exit_psk, b_psk, a_psk, alice_psk = (generate_psk(M2022) for _ in range(4))
    a_password = "relay-a-secret"
    exit_port, b_port, a_port = free_port(), free_port(), free_port()
    meters = {hop: Meter() for hop in ("exit", "b", "a")}
    exit_ = exit_engine(ss2022_inbound(exit_port, exit_psk, {"relay-b": b_psk}), meters["exit"])
    relay_b = relay_engine(
        {"type": "shadowsocks", "listen": "127.0.0.1", "port": b_port,
         "keys": [{"id": "relay-a", "method": AEAD, "password": a_password}]},
        ss2022_link(exit_port, exit_psk, b_psk, "exit"), meters["b"])
    relay_a = relay_engine(ss2022_inbound(a_port, a_psk, {"alice": alice_psk}),
                           ss_link(b_port, a_password, "b"), meters["a"])
    async with site() as (port, peers), exit_, relay_b, relay_a, \
            client_engine(ss2022_link(a_port, a_psk, alice_psk, "alice")) as client:
        page = await fetch_via_socks5(proxy_port(client), "127.0.0.1", port)
    assert page.endswith(PAGE) and len(peers) == 1
    assert set(meters["a"].down) == {"alice"}
    assert set(meters["b"].down) == {"relay-a"}
    assert set(meters["exit"].down) == {"relay-b"}
    # every hop carried the whole answer
    assert min(m.down[u] for m, u in ((meters["a"], "alice"), (meters["b"], "relay-a"),
                                      (meters["exit"], "relay-b"))) >= len(PAGE)


async def test_the_relay_role_counts_usage_per_key_on_the_relay_and_has_no_direct_outbound(
    tmp_path: Path,
) -> None:
    exit_psk, relay_psk = generate_psk(M2022), generate_psk(M2022)
    exit_port = free_port()
    exit_meter = Meter()
    store = roles.open_store(tmp_path)
    try:
        settings, _ = roles.prepare_server(
            store, free_port(), "127.0.0.1", "127.0.0.1",
            ports={"port_ss2022": free_port(), "port_tls": free_port()}, data=tmp_path)
        alice = roles.add_key(store, "alice", protocol="ss2022")
        config = relay_config(settings, store, ss2022_link(exit_port, exit_psk, relay_psk, "x"))
        assert [o["type"] for o in config.outbounds] == ["exit"]
        ready: asyncio.Future[Engine] = asyncio.get_running_loop().create_future()
        stop = asyncio.Event()
        async with site() as (port, _), exit_engine(
                ss2022_inbound(exit_port, exit_psk, {"the-relay": relay_psk}), exit_meter):
            serving = asyncio.ensure_future(
                roles.run_server(store, settings, ready.set_result, stop, config=config))
            relay = await asyncio.wait_for(asyncio.shield(ready), 10)
            assert set(relay.outbounds) == {EXIT_TAG}
            async with client_engine(roles.share_link(store, alice)) as client:
                page = await fetch_via_socks5(proxy_port(client), "127.0.0.1", port)
            assert page.endswith(PAGE)
            stop.set()
            await asyncio.wait_for(serving, 10)
        usage = store.get_key("alice")
        assert usage.bytes_down >= len(PAGE)  # counted on the relay, kept in its store
        assert set(exit_meter.down) == {"the-relay"}  # the exit sees one client
    finally:
        store.close()


async def test_private_destinations_are_refused_at_the_exit_and_strangers_get_silence() -> None:
    exit_psk, relay_psk, a_psk, alice_psk = (generate_psk(M2022) for _ in range(4))
    exit_port, relay_port = free_port(), free_port()
    exit_ = exit_engine(ss2022_inbound(exit_port, exit_psk, {"relay": relay_psk}), Meter(),
                        private="deny")
    relay = relay_engine(ss2022_inbound(relay_port, a_psk, {"alice": alice_psk}),
                         ss2022_link(exit_port, exit_psk, relay_psk, "exit"), Meter())
    async with site() as (port, peers), exit_, relay, \
            client_engine(ss2022_link(relay_port, a_psk, alice_psk, "alice")) as client:
        page = await fetch_via_socks5(proxy_port(client), "127.0.0.1", port)
        assert page == b"" and peers == []  # the relay has no way out but the exit's policy
        sessions = exit_.stats.sessions
        reader, writer = await asyncio.open_connection("127.0.0.1", relay_port)
        writer.write(bytes(range(256)) * 4)  # a stranger's probe
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(reader.read(1), 1.0)  # no answer, no close
        writer.close()
        assert exit_.stats.sessions == sessions  # and nothing went to the exit for it


async def answering_tls_server() -> asyncio.Server:
    """Answers whatever arrives with a TLS record header, like any HTTPS server a check uses."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if await reader.read(4096):
            writer.write(b"\x16\x03\x03\x00\x02\x02\x00")
            await writer.drain()
        writer.close()

    return await asyncio.start_server(handle, "127.0.0.1", 0)


async def closes_at_once(client: Engine, port: int) -> bool:
    start = time.monotonic()
    page = await asyncio.wait_for(fetch_via_socks5(proxy_port(client), "127.0.0.1", port), 5)
    return page == b"" and time.monotonic() - start < 2


@pytest.mark.parametrize("wrong", ["key", "port"])
async def test_an_exit_the_relay_cannot_use_is_named_and_its_users_get_a_closed_connection(
    wrong: str,
) -> None:
    exit_psk, relay_psk, a_psk, alice_psk = (generate_psk(M2022) for _ in range(4))
    exit_port, relay_port = free_port(), free_port()
    link = ss2022_link(free_port() if wrong == "port" else exit_port, exit_psk,
                       generate_psk(M2022) if wrong == "key" else relay_psk, "exit")
    checker = await answering_tls_server()
    check = f"127.0.0.1:{checker.sockets[0].getsockname()[1]}"
    exit_ = exit_engine(ss2022_inbound(exit_port, exit_psk, {"relay": relay_psk}), Meter())
    relay = relay_engine(ss2022_inbound(relay_port, a_psk, {"alice": alice_psk}), link, Meter(),
                         check=check, check_timeout=1)
    async with checker, site() as (port, peers), exit_, relay, \
            client_engine(ss2022_link(relay_port, a_psk, alice_psk, "alice")) as client:
        outbound = exit_of(relay)
        outbound.start_watching()
        health = await outbound.check()
        assert health.state == "failing"
        expected = "key" if wrong == "key" else "connection refused"
        assert expected in health.reason
        assert expected in status_line(relay) and "retrying" in status_line(relay)
        assert await closes_at_once(client, port)
        assert peers == []


async def test_the_check_passes_through_a_working_exit() -> None:
    exit_psk, relay_psk = generate_psk(M2022), generate_psk(M2022)
    exit_port = free_port()
    checker = await answering_tls_server()
    check = f"127.0.0.1:{checker.sockets[0].getsockname()[1]}"
    outbound = ExitOutbound("exit", {"link": ss2022_link(exit_port, exit_psk, relay_psk, "x"),
                                     "check": check, "check_timeout": 5})
    async with checker, exit_engine(ss2022_inbound(exit_port, exit_psk, {"relay": relay_psk}),
                                    Meter()):
        try:
            health = await outbound.check()
        finally:
            await outbound.close()
    assert health.state == "ok", health.reason




ELSEWHERE = [sys.executable, "-m", "elsewhere"]


async def read_until(stream: asyncio.StreamReader, found: Callable[[str], bool], what: str) -> str:
    seen: list[str] = []
    async with asyncio.timeout(20):
        while True:
            line = (await stream.readline()).decode()
            assert line, f"exited before {what}: {''.join(seen)}"
            if found(line):
                return line.strip()
            seen.append(line)


@asynccontextmanager
async def running(*args: str) -> AsyncIterator[asyncio.subprocess.Process]:
    proc = await asyncio.create_subprocess_exec(
        *ELSEWHERE, *args, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    try:
        yield proc
    finally:
        if proc.returncode is None:
            proc.send_signal(signal.SIGTERM)
            try:
                async with asyncio.timeout(10):
                    await proc.wait()
            finally:
                if proc.returncode is None:
                    proc.kill()
                    await proc.wait()


def listening(home: Path) -> list[str]:
    return ["--data-dir", str(home), "--host", "127.0.0.1", "--listen", "127.0.0.1",
            "--port", str(free_port()), "--port-2022", str(free_port()),
            "--port-tls", str(free_port())]


async def test_the_command_elsewhere_server_prints_starts_a_relay_whose_keys_reach_the_site(
    tmp_path: Path,
) -> None:
    async with running("server", *listening(tmp_path / "exit"), "--allow-private") as server:
        assert server.stdout is not None
        command = await read_until(server.stdout, lambda line: "elsewhere relay " in line, "relay")
        words = shlex.split(command)
        assert words[:2] == ["elsewhere", "relay"] and "--check" in words  # an ss:// exit
        async with running(*words[1:], *listening(tmp_path / "relay")) as relay:
            assert relay.stderr is not None
            await read_until(relay.stderr, lambda line: " ok · " in line, "the exit's check")
            added = await asyncio.to_thread(
                subprocess.run, [*ELSEWHERE, "keys", "add", "alice", "--protocol", "ss2022",
                                 "--no-qr", "--data-dir", str(tmp_path / "relay")],
                capture_output=True, text=True, timeout=30)
            link = next(w for w in added.stdout.split() if "://" in w)
            async with site() as (port, _), client_engine(link) as client:
                async with asyncio.timeout(20):
                    while True:  # the relay picks the new key up within its 2 s reload; till
                        # then it treats the key as a stranger's: silence until its idle timeout
                        with contextlib.suppress(TimeoutError):
                            page = await asyncio.wait_for(
                                fetch_via_socks5(proxy_port(client), "127.0.0.1", port), 3)
                            if page.endswith(PAGE):
                                break


@pytest.mark.parametrize(
    ("link", "words"),
    [
        ("wg://abc@127.0.0.1:51820", ["exit link", "wg://", "ss://"]),
        ("ss://bm9wZTpwYXNzd29yZA@127.0.0.1:9?#x", ["exit link", "nope"]),  # nope:password
        (None, ["exit's link", "elsewhere server"]),
    ],
    ids=["scheme", "method", "missing"],
)
def test_an_exit_link_the_relay_cannot_use_is_one_clear_line(
    tmp_path: Path, link: str | None, words: list[str]
) -> None:
    done = subprocess.run([*ELSEWHERE, "relay", *([link] if link else []),
                           "--data-dir", str(tmp_path)],
                          capture_output=True, text=True, timeout=30)
    assert done.returncode == 2 and "Traceback" not in done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and all(w in lines[0] for w in words), done.stderr


async def test_datagrams_go_through_the_relay_and_the_exit_and_come_back() -> None:
    from interop.tls_peers import udp_echo, udp_round_trips

    exit_psk, relay_psk, a_psk, alice_psk = (generate_psk(M2022) for _ in range(4))
    exit_port, relay_port, tunnel_port = free_port(), free_port(), free_port()
    meters = {hop: Meter() for hop in ("exit", "relay")}
    exit_ = exit_engine(ss2022_inbound(exit_port, exit_psk, {"relay": relay_psk}),
                        meters["exit"])
    relay = relay_engine(ss2022_inbound(relay_port, a_psk, {"alice": alice_psk}),
                         ss2022_link(exit_port, exit_psk, relay_psk, "exit"), meters["relay"])
    datagrams = [b"first", bytes(range(256)) * 4, b"last"]
    async with udp_echo() as echo_port, exit_, relay:
        client = Engine(from_mapping({
            "inbounds": [{"type": "tunnel", "listen": "127.0.0.1", "port": tunnel_port,
                          "destination": f"127.0.0.1:{echo_port}", "network": ["udp"]}],
            "outbounds": [{"type": "ss2022",
                           "key": ss2022_link(relay_port, a_psk, alice_psk, "alice")}]}))
        async with client:
            assert await udp_round_trips(tunnel_port, datagrams) == datagrams
    assert set(meters["relay"].up) == {"alice"} and set(meters["exit"].up) == {"relay"}
    assert meters["exit"].up["relay"] >= sum(map(len, datagrams))


@pytest.mark.parametrize("uuid_ok", [True, False], ids=["right-uuid", "wrong-uuid"])
async def test_a_vless_exit_is_checked_against_its_own_tls_port_without_being_told(
    tmp_path: Path, uuid_ok: bool
) -> None:
    import uuid

    from engine.tls_helpers import make_cert
    from interop.tls_peers import pin_of

    cert, key = make_cert(tmp_path)
    user = str(uuid.uuid4())
    port = free_port()
    exit_ = Engine(from_mapping({
        "inbounds": [{"type": "tls", "listen": "127.0.0.1", "port": port, "cert": str(cert),
                      "key": str(key), "vless": [{"id": "relay", "uuid": user}],
                      "websocket": {"path": "/ws"}, "fallback": "decoy"}],
        "outbounds": [{"type": "direct", "private": "allow"}],
        "timeouts": {"idle": 5}}))
    link = format_access_key(AccessKey(
        "vless", "", user if uuid_ok else str(uuid.uuid4()), "127.0.0.1", port, extra={
            "security": "tls", "sni": "localhost", "type": "ws", "path": "/ws",
            "pcs": pin_of(cert)}))
    outbound = ExitOutbound("exit", {"link": link, "check_timeout": 5})
    assert outbound.check_target is not None and outbound.check_target.port == port
    async with exit_:
        try:
            health = await outbound.check()
        finally:
            await outbound.close()
    if uuid_ok:
        assert health.state == "ok", health.reason
    else:
        # the exit's decoy takes a stranger's request: no VLESS answer comes through
        assert health.state == "failing" and "key" in health.reason, health.reason


async def test_direct_domains_leave_the_relay_itself_and_never_for_a_private_address(
    tmp_path: Path,
) -> None:
    exit_psk, relay_psk = generate_psk(M2022), generate_psk(M2022)
    exit_port = free_port()
    exit_meter = Meter()
    store = roles.open_store(tmp_path)
    try:
        settings, _ = roles.prepare_server(
            store, free_port(), "127.0.0.1", "127.0.0.1",
            ports={"port_ss2022": free_port(), "port_tls": free_port()}, data=tmp_path)
        alice = roles.add_key(store, "alice", protocol="ss2022")
        config = relay_config(settings, store, ss2022_link(exit_port, exit_psk, relay_psk, "x"),
                              direct=["localhost"])
        assert {o["tag"]: o.get("private") for o in config.outbounds} == {
            "exit": None, "direct": "deny"}
        ready: asyncio.Future[Engine] = asyncio.get_running_loop().create_future()
        stop = asyncio.Event()
        exit_ = exit_engine(ss2022_inbound(exit_port, exit_psk, {"the-relay": relay_psk}),
                            exit_meter)
        async with site() as (port, peers), exit_:
            serving = asyncio.ensure_future(
                roles.run_server(store, settings, ready.set_result, stop, config=config))
            await asyncio.wait_for(asyncio.shield(ready), 10)
            async with client_engine(roles.share_link(store, alice)) as client:
                # a direct domain: taken by the relay's own outbound, whose policy refuses
                # loopback; through the exit the same site is reached
                assert await fetch_via_socks5(proxy_port(client), "localhost", port) == b""
                assert exit_.stats.sessions == 0 and peers == []
                page = await fetch_via_socks5(proxy_port(client), "127.0.0.1", port)
                assert page.endswith(PAGE) and exit_.stats.sessions == 1
            stop.set()
            await asyncio.wait_for(serving, 10)
    finally:
        store.close()
