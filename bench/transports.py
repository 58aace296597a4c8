"""The rows of the benchmark. A transport starts a server in the `server` namespace and a
client there in the `client` namespace, each client being a tunnel (like ss-tunnel) from a
local port to one fixed destination behind the server. A protocol is one small class: for
elsewhere, an `ElsewhereTransport` subclass that says what its server inbound and client
outbound look like; for a peer, how to start its server and its forwarding client; then one
line in `TRANSPORTS` (and one in `TARGETS` if an issue sets a target for it)."""

from __future__ import annotations

import json
import os
import secrets
import shutil
import subprocess
import sys
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

from namespaces import (
    ANSWER,
    CLIENT_ADDR,
    OPEN_FILES,
    RELAY_ADDR,
    SERVER_ADDR,
    SERVER_FROM_RELAY,
    Endpoint,
    Lab,
)

IDLE_TIMEOUT = 300  # seconds, the same for every implementation
TLS_NAME = "bench.test"  # the certificate's DNS name and every TLS client's SNI
WS_PATH = "/ws"


class Transport:
    """A row of the table. `pids` are the processes whose CPU time is charged to it,
    `server_pid` the one whose memory is measured per idle tunnel."""

    name = "?"  # unique in the run
    label = "?"  # what the table says about it
    kind = "?"  # its key in TRANSPORTS

    def __init__(self, lab: Lab, index: int) -> None:
        self.lab = lab
        self.index = index
        self.server_port = 8400 + index
        self.procs: list[subprocess.Popen[bytes]] = []
        self.server_pid: int | None = None
        self.client_pids: list[int] = []

    @property
    def pids(self) -> list[int]:
        return [p for p in (self.server_pid, *self.client_pids) if p is not None]

    def client_port(self, n: int) -> int:
        return 15000 + 10 * self.index + n

    def start_server(self) -> None:
        raise NotImplementedError

    def start_client(self, destinations: Sequence[Endpoint]) -> list[Endpoint]:
        """Local endpoints in the client namespace, one per destination, in order."""
        raise NotImplementedError

    def stop(self) -> None:
        for proc in reversed(self.procs):
            self.lab.stop(proc)
        self.procs.clear()

    def _spawn(
        self, ns: str, argv: list[str], log: str, port: int, env: dict[str, str] | None = None
    ) -> subprocess.Popen[bytes]:
        proc = self.lab.spawn(ns, argv, f"{self.name}-{log}", env)
        self.procs.append(proc)
        self.lab.wait_listening(ns, port, proc)
        return proc

    def versions(self) -> dict[str, str]:
        return {}


class Direct(Transport):
    """No proxy: the figures every other row is divided by."""

    name = "direct"
    label = "direct (no proxy)"

    def start_server(self) -> None:
        return None

    def start_client(self, destinations: Sequence[Endpoint]) -> list[Endpoint]:
        return list(destinations)


def _elsewhere_argv(config: Path) -> list[str]:
    cli = Path(sys.executable).with_name("elsewhere")
    if cli.exists():
        return [str(cli), "run", "--config", str(config)]
    # before the `run` command existed
    code = (
        "import sys,uvloop; from elsewhere.config import load; from elsewhere.engine import "
        "Engine; uvloop.run(Engine(load(sys.argv[1])).run_forever())"
    )
    return [sys.executable, "-c", code, str(config)]


def _toml(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return str(value)
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(value, list):
        return "[" + ", ".join(_toml(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k} = {_toml(v)}" for k, v in value.items()) + "}"
    raise TypeError(f"no TOML for {value!r}")


def to_toml(config: Mapping[str, Any]) -> str:
    """Just enough TOML for our configs: arrays of tables and plain tables of scalars."""
    lines: list[str] = []
    for section, body in config.items():
        if isinstance(body, list):
            for table in body:
                lines.append(f"[[{section}]]")
                lines += [f"{k} = {_toml(v)}" for k, v in table.items()]
                lines.append("")
        else:
            lines.append(f"[{section}]")
            lines += [f"{k} = {_toml(v)}" for k, v in body.items()]
            lines.append("")
    return "\n".join(lines)


class ElsewhereTransport(Transport):
    """An elsewhere server engine and one elsewhere client engine with a tunnel inbound per
    destination. Subclasses give the protocol's server inbound and client outbound."""

    source: Path | None = None  # src/ of an exported commit, else the working tree's
    commit: str | None = None

    def server_inbound(self) -> dict[str, Any]:
        raise NotImplementedError

    def client_outbound(self) -> dict[str, Any]:
        raise NotImplementedError

    def run_from(self, rev: str) -> None:
        """Run this row from `src/` as committed at `rev`, not from the working tree."""
        self.commit, self.source = export_source(rev, self.lab.workdir)
        self.name += f"@{self.commit}"
        self.label += f" @{self.commit}"

    def _env(self) -> dict[str, str] | None:
        if self.source is None:
            return None
        return {**os.environ, "PYTHONPATH": str(self.source)}

    def _write(self, role: str, config: Mapping[str, Any]) -> Path:
        path = self.lab.workdir / f"{self.name}-{role}.toml"
        path.write_text(to_toml(config))
        return path

    def start_server(self) -> None:
        config = {
            "inbounds": [self.server_inbound()],
            "outbounds": [{"type": "direct", "private": "allow"}],  # the lab is all private
            "timeouts": {"idle": IDLE_TIMEOUT},
        }
        argv = _elsewhere_argv(self._write("server", config))
        server = self._spawn(self.lab.server, argv, "server", self.server_port, self._env())
        self.server_pid = server.pid

    def start_client(self, destinations: Sequence[Endpoint]) -> list[Endpoint]:
        local = [Endpoint(CLIENT_ADDR, self.client_port(n)) for n in range(len(destinations))]
        inbounds = [
            {
                "type": "tunnel",
                "tag": f"tunnel{n}",
                "listen": ep.host,
                "port": ep.port,
                "destination": str(dest),
                "network": ["tcp"],  # ss-tunnel without -u is TCP only too
            }
            for n, (ep, dest) in enumerate(zip(local, destinations, strict=True))
        ]
        config = {
            "inbounds": inbounds,
            "outbounds": [self.client_outbound()],
            "timeouts": {"idle": IDLE_TIMEOUT},
        }
        argv = _elsewhere_argv(self._write("client", config))
        proc = self._spawn(self.lab.client, argv, "client", local[-1].port, self._env())
        self.client_pids.append(proc.pid)
        return local

    def versions(self) -> dict[str, str]:
        return {"elsewhere": self.commit or working_tree_version()}


class ElsewhereShadowsocks(ElsewhereTransport):
    def __init__(self, lab: Lab, index: int, method: str) -> None:
        super().__init__(lab, index)
        self.method = method
        self.password = secrets.token_urlsafe(16)
        self.name = f"elsewhere-ss-{short(method)}"
        self.label = f"elsewhere SS {method}"

    def server_inbound(self) -> dict[str, Any]:
        return {
            "type": "shadowsocks",
            "listen": SERVER_ADDR,
            "port": self.server_port,
            "udp": False,
            "keys": [{"id": "bench", "method": self.method, "password": self.password}],
        }

    def client_outbound(self) -> dict[str, Any]:
        return {
            "type": "shadowsocks",
            "tag": "proxy",
            "server": SERVER_ADDR,
            "port": self.server_port,
            "method": self.method,
            "password": self.password,
        }


class ElsewhereSs2022(ElsewhereTransport):
    """Shadowsocks 2022 (SIP022), one key: the server's `psk` is the client's password."""

    def __init__(self, lab: Lab, index: int, method: str) -> None:
        super().__init__(lab, index)
        from elsewhere.codecs.ss2022 import generate_psk

        self.method = method
        self.psk = generate_psk(method)
        self.name = f"elsewhere-ss2022-{method.removeprefix('2022-blake3-')}"
        self.label = f"elsewhere SS-2022 {method}"

    def server_inbound(self) -> dict[str, Any]:
        return {
            "type": "ss2022",
            "listen": SERVER_ADDR,
            "port": self.server_port,
            "udp": False,
            "method": self.method,
            "psk": self.psk,
        }

    def client_outbound(self) -> dict[str, Any]:
        return {
            "type": "ss2022",
            "tag": "proxy",
            "server": SERVER_ADDR,
            "port": self.server_port,
            "method": self.method,
            "password": self.psk,
        }


@dataclass(frozen=True)
class Certificate:
    cert: Path
    key: Path
    pin: str  # hex SHA-256 of the DER certificate, as elsewhere's clients take it


@cache
def certificate(workdir: Path) -> Certificate:
    """One self-signed certificate for every TLS server of the run (made as `elsewhere`
    makes it for a server without a domain), naming the server's address and TLS_NAME."""
    from elsewhere.control.certs import self_signed

    cert, key, pin = self_signed(workdir / "tls", [TLS_NAME, SERVER_ADDR])
    return Certificate(cert, key, pin)


class ElsewhereTls(ElsewhereTransport):
    """elsewhere's TLS-family server (one `tls` inbound serving Trojan and VLESS, raw and over
    WebSocket, strangers to the decoy) and a client outbound of one protocol and carrier."""

    def __init__(self, lab: Lab, index: int, protocol: str, network: str) -> None:
        super().__init__(lab, index)
        self.protocol = protocol
        self.network = network
        self.password = secrets.token_urlsafe(16)
        self.uuid = str(uuid.uuid4())
        carrier = "+WS" if network == "ws" else ""
        self.name = f"elsewhere-{protocol}-{'ws-' if network == 'ws' else ''}tls"
        self.label = f"elsewhere {protocol.capitalize().replace('Vless', 'VLESS')}{carrier}+TLS"

    def server_inbound(self) -> dict[str, Any]:
        cert = certificate(self.lab.workdir)
        return {
            "type": "tls",
            "listen": SERVER_ADDR,
            "port": self.server_port,
            "cert": str(cert.cert),
            "key": str(cert.key),
            "trojan": [{"id": "bench", "password": self.password}],
            "vless": [{"id": "bench", "uuid": self.uuid}],
            "websocket": {"path": WS_PATH},
            "fallback": "decoy",
        }

    def client_outbound(self) -> dict[str, Any]:
        secret = {"password": self.password} if self.protocol == "trojan" else {"uuid": self.uuid}
        return {
            "type": self.protocol,
            "tag": "proxy",
            "server": SERVER_ADDR,
            "port": self.server_port,
            "sni": TLS_NAME,
            "pin": certificate(self.lab.workdir).pin,
            "network": self.network,
            "path": WS_PATH,
            **secret,
        }


class ElsewhereRelay(ElsewhereTransport):
    """Two hops (issue 9): the client's tunnel → an elsewhere relay in the `relay` namespace →
    the exit in `server`, both speaking the protocol of `hop`, the one-hop row it is measured
    beside. The relay is the TOML form of `elsewhere relay`: the hop's inbound and an `exit`
    outbound holding the exit's share link. Its CPU counts with the row's; its memory is the
    row's server memory (the relay holds both sides of every tunnel)."""

    def __init__(self, lab: Lab, index: int, hop: ElsewhereSs2022 | ElsewhereTls) -> None:
        super().__init__(lab, index)
        self.hop = hop
        self.name = hop.name.replace("elsewhere-", "elsewhere-relay-", 1)
        self.label = hop.label.replace("elsewhere ", "elsewhere relay ", 1)
        self.exit_pid: int | None = None

    @property
    def pids(self) -> list[int]:
        return [p for p in (self.server_pid, self.exit_pid, *self.client_pids) if p is not None]

    def exit_link(self) -> str:
        from elsewhere.control.links import AccessKey, format_access_key

        port = self.hop.server_port
        if isinstance(self.hop, ElsewhereSs2022):
            key = AccessKey("ss", self.hop.method, self.hop.psk, SERVER_FROM_RELAY, port)
        else:
            key = AccessKey(self.hop.protocol, "", self.hop.password if self.hop.protocol ==
                            "trojan" else self.hop.uuid, SERVER_FROM_RELAY, port, extra={
                                "security": "tls", "sni": TLS_NAME, "type": self.hop.network,
                                "path": WS_PATH, "pcs": certificate(self.lab.workdir).pin})
        return format_access_key(key)

    def start_server(self) -> None:
        self.hop.server_port = self.server_port + 100  # the exit's, on the relay's link
        exit_inbound = {**self.hop.server_inbound(), "listen": SERVER_FROM_RELAY}
        config = {
            "inbounds": [exit_inbound],
            "outbounds": [{"type": "direct", "private": "allow"}],  # the lab is all private
            "timeouts": {"idle": IDLE_TIMEOUT},
        }
        argv = _elsewhere_argv(self._write("exit", config))
        port = self.hop.server_port
        self.exit_pid = self._spawn(self.lab.server, argv, "exit", port, self._env()).pid
        relay_inbound = {**self.hop.server_inbound(), "listen": RELAY_ADDR,
                         "port": self.server_port}
        config = {
            "inbounds": [relay_inbound],
            "outbounds": [{"type": "exit", "link": self.exit_link(), "check": "none"}],
            "timeouts": {"idle": IDLE_TIMEOUT},
        }
        argv = _elsewhere_argv(self._write("relay", config))
        relay = self._spawn(self.lab.relay, argv, "relay", self.server_port, self._env())
        self.server_pid = relay.pid

    def client_outbound(self) -> dict[str, Any]:
        return {**self.hop.client_outbound(), "server": RELAY_ADDR, "port": self.server_port}


class LibevShadowsocks(Transport):
    """Debian's shadowsocks-libev: ss-server, and one ss-tunnel per destination. TCP_NODELAY
    on (`--no-delay`) as elsewhere has it (asyncio and uvloop set it on every TCP socket), so
    the latency rows compare the relays, not Nagle's algorithm."""

    def __init__(self, lab: Lab, index: int, method: str) -> None:
        super().__init__(lab, index)
        self.method = method
        self.password = secrets.token_urlsafe(16)
        self.name = f"ss-libev-{short(method)}"
        self.label = f"shadowsocks-libev {method}"

    def _common(self) -> list[str]:
        return [
            "-k",
            self.password,
            "-m",
            self.method,
            "-t",
            str(IDLE_TIMEOUT),
            "-n",
            str(OPEN_FILES),
            "--no-delay",
        ]

    def start_server(self) -> None:
        argv = ["ss-server", "-s", SERVER_ADDR, "-p", str(self.server_port), *self._common()]
        self.server_pid = self._spawn(self.lab.server, argv, "server", self.server_port).pid

    def start_client(self, destinations: Sequence[Endpoint]) -> list[Endpoint]:
        local = []
        for n, dest in enumerate(destinations):
            ep = Endpoint(CLIENT_ADDR, self.client_port(n))
            argv = [
                "ss-tunnel",
                "-s",
                SERVER_ADDR,
                "-p",
                str(self.server_port),
                "-b",
                ep.host,
                "-l",
                str(ep.port),
                "-L",
                str(dest),
                *self._common(),
            ]
            self.client_pids.append(self._spawn(self.lab.client, argv, f"tunnel{n}", ep.port).pid)
            local.append(ep)
        return local

    def versions(self) -> dict[str, str]:
        done = subprocess.run(["ss-server", "-h"], capture_output=True, text=True)
        first = (done.stdout + done.stderr).strip().splitlines()
        return {"shadowsocks-libev": first[0] if first else "?"}


class V2rayVless(Transport):
    """Debian's v2ray (4.34): a VLESS+TLS server out through `freedom`, and a client with one
    dokodemo-door inbound per destination through a VLESS+TLS outbound. v2ray 4 has no
    certificate pin, so the client takes the self-signed certificate with allowInsecure."""

    name = "v2ray-vless-tls"
    label = "v2ray VLESS+TLS"

    def __init__(self, lab: Lab, index: int) -> None:
        super().__init__(lab, index)
        self.uuid = str(uuid.uuid4())

    def _write(self, role: str, config: Mapping[str, Any]) -> Path:
        path = self.lab.workdir / f"{self.name}-{role}.json"
        path.write_text(json.dumps(config, indent=1))
        return path

    def start_server(self) -> None:
        cert = certificate(self.lab.workdir)
        tls = {
            "serverName": TLS_NAME,
            "certificates": [{"certificateFile": str(cert.cert), "keyFile": str(cert.key)}],
        }
        config = {
            "log": {"loglevel": "warning"},
            "inbounds": [
                {
                    "listen": SERVER_ADDR,
                    "port": self.server_port,
                    "protocol": "vless",
                    "settings": {"clients": [{"id": self.uuid}], "decryption": "none"},
                    "streamSettings": {"network": "tcp", "security": "tls", "tlsSettings": tls},
                }
            ],
            "outbounds": [{"protocol": "freedom"}],
            "policy": {"levels": {"0": {"connIdle": IDLE_TIMEOUT}}},
        }
        argv = ["v2ray", "-config", str(self._write("server", config))]
        self.server_pid = self._spawn(self.lab.server, argv, "server", self.server_port).pid

    def start_client(self, destinations: Sequence[Endpoint]) -> list[Endpoint]:
        local = [Endpoint(CLIENT_ADDR, self.client_port(n)) for n in range(len(destinations))]
        tls = {"serverName": TLS_NAME, "allowInsecure": True}
        user = {"id": self.uuid, "encryption": "none"}
        server = {"address": SERVER_ADDR, "port": self.server_port, "users": [user]}
        config = {
            "log": {"loglevel": "warning"},
            "inbounds": [
                {
                    "listen": ep.host,
                    "port": ep.port,
                    "protocol": "dokodemo-door",
                    "settings": {"address": dest.host, "port": dest.port, "network": "tcp"},
                }
                for ep, dest in zip(local, destinations, strict=True)
            ],
            "outbounds": [
                {
                    "protocol": "vless",
                    "settings": {"vnext": [server]},
                    "streamSettings": {"network": "tcp", "security": "tls", "tlsSettings": tls},
                }
            ],
            "policy": {"levels": {"0": {"connIdle": IDLE_TIMEOUT}}},
        }
        argv = ["v2ray", "-config", str(self._write("client", config))]
        proc = self._spawn(self.lab.client, argv, "client", local[-1].port)
        self.client_pids.append(proc.pid)
        return local

    def versions(self) -> dict[str, str]:
        done = subprocess.run(["v2ray", "-version"], capture_output=True, text=True)
        first = done.stdout.strip().splitlines()
        return {"v2ray": first[0] if first else "?"}


class TrojanGfw(Transport):
    """Debian's trojan-gfw (1.16): run_type server (strangers to the answer server, its
    `remote_addr`), and one run_type forward client per destination (as ss-tunnel), checking
    the certificate against the file and the name. Its default cipher lists, TCP_NODELAY on."""

    name = "trojan-gfw"
    label = "trojan-gfw (Trojan+TLS)"

    def __init__(self, lab: Lab, index: int, fallback: Endpoint) -> None:
        super().__init__(lab, index)
        self.password = secrets.token_urlsafe(16)
        self.fallback = fallback

    def _write(self, role: str, config: Mapping[str, Any]) -> Path:
        path = self.lab.workdir / f"{self.name}-{role}.json"
        path.write_text(json.dumps(config, indent=1))
        return path

    def start_server(self) -> None:
        cert = certificate(self.lab.workdir)
        config = {
            "run_type": "server",
            "local_addr": SERVER_ADDR,
            "local_port": self.server_port,
            "remote_addr": self.fallback.host,
            "remote_port": self.fallback.port,
            "password": [self.password],
            "log_level": 2,
            "ssl": {"cert": str(cert.cert), "key": str(cert.key), "alpn": ["http/1.1"]},
            "tcp": {"no_delay": True},
        }
        argv = ["trojan", "-c", str(self._write("server", config))]
        self.server_pid = self._spawn(self.lab.server, argv, "server", self.server_port).pid

    def start_client(self, destinations: Sequence[Endpoint]) -> list[Endpoint]:
        cert = certificate(self.lab.workdir)
        local = []
        for n, dest in enumerate(destinations):
            ep = Endpoint(CLIENT_ADDR, self.client_port(n))
            config = {
                "run_type": "forward",
                "local_addr": ep.host,
                "local_port": ep.port,
                "remote_addr": SERVER_ADDR,
                "remote_port": self.server_port,
                "target_addr": dest.host,
                "target_port": dest.port,
                "password": [self.password],
                "log_level": 2,
                "ssl": {
                    "verify": True,
                    "verify_hostname": True,
                    "cert": str(cert.cert),
                    "sni": TLS_NAME,
                    "alpn": ["http/1.1"],
                },
                "tcp": {"no_delay": True},
            }
            argv = ["trojan", "-c", str(self._write(f"tunnel{n}", config))]
            self.client_pids.append(self._spawn(self.lab.client, argv, f"tunnel{n}", ep.port).pid)
            local.append(ep)
        return local

    def versions(self) -> dict[str, str]:
        done = subprocess.run(["trojan", "-v"], capture_output=True, text=True)
        first = (done.stdout + done.stderr).strip().splitlines()
        return {"trojan-gfw": first[0].removeprefix("Welcome to ") if first else "?"}


class PythonFloor(Transport):
    """floor.py: elsewhere's Shadowsocks codec under the smallest asyncio adapters, no engine.
    What CPython and uvloop cost by themselves, beside what the engine adds to them."""

    name = "python-floor"
    label = "python floor (codec only)"

    def __init__(self, lab: Lab, index: int) -> None:
        super().__init__(lab, index)
        self.password = secrets.token_urlsafe(16)
        self.script = str(Path(__file__).with_name("floor.py"))

    def start_server(self) -> None:
        argv = [sys.executable, self.script, "server", SERVER_ADDR]
        argv += [str(self.server_port), self.password]
        self.server_pid = self._spawn(self.lab.server, argv, "server", self.server_port).pid

    def start_client(self, destinations: Sequence[Endpoint]) -> list[Endpoint]:
        local = []
        for n, dest in enumerate(destinations):
            ep = Endpoint(CLIENT_ADDR, self.client_port(n))
            argv = [sys.executable, self.script, "client", ep.host, str(ep.port), self.password]
            argv += [SERVER_ADDR, str(self.server_port), dest.host, str(dest.port)]
            self.client_pids.append(self._spawn(self.lab.client, argv, f"tunnel{n}", ep.port).pid)
            local.append(ep)
        return local


def short(method: str) -> str:
    return {"chacha20-ietf-poly1305": "chacha20"}.get(method, method)


Factory = Callable[[Lab, int], Transport]

TRANSPORTS: dict[str, Factory] = {
    "direct": Direct,
    "elsewhere-ss-aes-256-gcm": lambda lab, i: ElsewhereShadowsocks(lab, i, "aes-256-gcm"),
    "ss-libev-aes-256-gcm": lambda lab, i: LibevShadowsocks(lab, i, "aes-256-gcm"),
    "python-floor": PythonFloor,
    "elsewhere-ss-chacha20": lambda lab, i: ElsewhereShadowsocks(lab, i, "chacha20-ietf-poly1305"),
    "ss-libev-chacha20": lambda lab, i: LibevShadowsocks(lab, i, "chacha20-ietf-poly1305"),
    "elsewhere-ss2022-aes-256-gcm": lambda lab, i: ElsewhereSs2022(
        lab, i, "2022-blake3-aes-256-gcm"
    ),
    "elsewhere-trojan-tls": lambda lab, i: ElsewhereTls(lab, i, "trojan", "tcp"),
    "elsewhere-vless-tls": lambda lab, i: ElsewhereTls(lab, i, "vless", "tcp"),
    "elsewhere-vless-ws-tls": lambda lab, i: ElsewhereTls(lab, i, "vless", "ws"),
    "elsewhere-relay-ss2022-aes-256-gcm": lambda lab, i: ElsewhereRelay(
        lab, i, ElsewhereSs2022(lab, i, "2022-blake3-aes-256-gcm")
    ),
    "elsewhere-relay-vless-ws-tls": lambda lab, i: ElsewhereRelay(
        lab, i, ElsewhereTls(lab, i, "vless", "ws")
    ),
    "v2ray-vless-tls": V2rayVless,
    "trojan-gfw": lambda lab, i: TrojanGfw(lab, i, ANSWER),
}


@dataclass(frozen=True)
class Target:
    """An issue's target for one elsewhere row, against a peer measured in the same run."""

    peer: str
    issue: int
    throughput: float  # at least this many times the peer's, both directions
    ttfb: bool = False  # added time to first byte at most the peer's
    rss_kib: float | None = None  # server memory per idle tunnel at most this
    within_rtt: bool = False  # TTFB at the delay line's RTT at most the peer's + one RTT


TARGETS = {
    "elsewhere-ss-aes-256-gcm": Target("ss-libev-aes-256-gcm", 2, 1.0, True, 20),
    "elsewhere-ss-chacha20": Target("ss-libev-chacha20", 2, 1.0, True, 20),
    "elsewhere-ss2022-aes-256-gcm": Target("ss-libev-aes-256-gcm", 3, 1.5),
    "elsewhere-trojan-tls": Target("trojan-gfw", 4, 1.0),
    "elsewhere-vless-tls": Target("trojan-gfw", 4, 1.0),
    "elsewhere-vless-ws-tls": Target("trojan-gfw", 4, 1.0),
    # issue 9: two hops at 0.8x the one-hop row's throughput, one RTT (relay-exit) at most added
    "elsewhere-relay-ss2022-aes-256-gcm": Target(
        "elsewhere-ss2022-aes-256-gcm", 9, 0.8, within_rtt=True
    ),
    "elsewhere-relay-vless-ws-tls": Target("elsewhere-vless-ws-tls", 9, 0.8, within_rtt=True),
}

TOOLS = {
    "ss-libev": ("ss-server", "ss-tunnel"),
    "v2ray": ("v2ray",),
    "trojan-gfw": ("trojan",),
}


def missing_tools(names: Sequence[str]) -> list[str]:
    """Programs the chosen rows need that are not installed."""
    need = ["ip", "ss", "iperf3"]
    for name in names:
        for prefix, tools in TOOLS.items():
            if name.startswith(prefix):
                need += tools
    return [t for t in dict.fromkeys(need) if shutil.which(t) is None]


REPOSITORY = Path(__file__).resolve().parent.parent


@cache
def export_source(rev: str, workdir: Path) -> tuple[str, Path]:
    """`src/` as committed at `rev`, exported into the run's folder: (short commit, path for
    PYTHONPATH, where it comes before the venv's editable install of the working tree)."""
    commit = subprocess.run(
        ["git", "-C", str(REPOSITORY), "rev-parse", "--short", rev],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    tree = workdir / f"src-{commit}"
    tree.mkdir(exist_ok=True)
    archive = subprocess.run(
        ["git", "-C", str(REPOSITORY), "archive", commit, "src"], capture_output=True, check=True
    )
    subprocess.run(["tar", "-x", "-C", str(tree)], input=archive.stdout, check=True)
    return commit, tree / "src"


def working_tree_version() -> str:
    """The repository's HEAD, with "+dirty" when files under src/ differ from it."""
    head = subprocess.run(
        ["git", "-C", str(REPOSITORY), "rev-parse", "--short", "HEAD"],
        capture_output=True,
        text=True,
    ).stdout.strip()
    dirty = subprocess.run(
        ["git", "-C", str(REPOSITORY), "status", "--porcelain", "--", "src"],
        capture_output=True,
        text=True,
    ).stdout.strip()
    return (head or "?") + ("+dirty" if dirty else "")


# XHTTP's rows live in a file of their own and build on the classes above.
from xhttp_rows import ElsewhereXhttp  # noqa: E402

TRANSPORTS |= {
    "elsewhere-xhttp-h2": lambda lab, i: ElsewhereXhttp(lab, i, "h2"),
    "elsewhere-xhttp-h1": lambda lab, i: ElsewhereXhttp(lab, i, "http/1.1"),
    "elsewhere-xhttp-h2-cdn": lambda lab, i: ElsewhereXhttp(lab, i, "h2", cdn=True),
    "elsewhere-xhttp-h1-cdn": lambda lab, i: ElsewhereXhttp(lab, i, "http/1.1", cdn=True),
}
TARGETS |= {
    "elsewhere-xhttp-h2": Target("trojan-gfw", 10, 1.0),
    "elsewhere-xhttp-h2-cdn": Target("elsewhere-xhttp-h2", 10, 0.5),
}

# XTLS Vision's rows (issue 11): elsewhere's and sing-box's servers, the same sing-box client.
from vision_rows import ElsewhereVision, SingBoxVision  # noqa: E402

TRANSPORTS |= {
    "elsewhere-vision-tls": ElsewhereVision,
    "sing-box-vision-tls": SingBoxVision,
}
TARGETS |= {
    "elsewhere-vision-tls": Target("sing-box-vision-tls", 11, 1.0),  # TTFB: within 1 ms
}
