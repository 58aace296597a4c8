"""The rows of the benchmark. A transport starts a server in the `server` namespace and a
client there in the `client` namespace, each client being a tunnel (like ss-tunnel) from a
local port to one fixed destination behind the server. A later protocol (Shadowsocks 2022,
Trojan, VLESS) is one more small class: for elsewhere, an `ElsewhereTransport` subclass that
says what its server inbound and client outbound look like; then one line in `TRANSPORTS`."""

from __future__ import annotations

import secrets
import shutil
import subprocess
import sys
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from namespaces import CLIENT_ADDR, OPEN_FILES, SERVER_ADDR, Endpoint, Lab

IDLE_TIMEOUT = 300  # seconds, the same for every implementation


class Transport:
    """A row of the table. `pids` are the processes whose CPU time is charged to it,
    `server_pid` the one whose memory is measured per idle tunnel."""

    name = "?"
    label = "?"  # what the table says about it

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

    def _spawn(self, ns: str, argv: list[str], log: str, port: int) -> subprocess.Popen[bytes]:
        proc = self.lab.spawn(ns, argv, f"{self.name}-{log}")
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

    def server_inbound(self) -> dict[str, Any]:
        raise NotImplementedError

    def client_outbound(self) -> dict[str, Any]:
        raise NotImplementedError

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
        self.server_pid = self._spawn(self.lab.server, argv, "server", self.server_port).pid

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
        proc = self._spawn(self.lab.client, argv, "client", local[-1].port)
        self.client_pids.append(proc.pid)
        return local

    def versions(self) -> dict[str, str]:
        done = subprocess.run(
            ["git", "-C", str(Path(__file__).parent), "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
        )
        return {"elsewhere": done.stdout.strip() or "?"}


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


def short(method: str) -> str:
    return {"chacha20-ietf-poly1305": "chacha20"}.get(method, method)


Factory = Callable[[Lab, int], Transport]

TRANSPORTS: dict[str, Factory] = {
    "direct": Direct,
    "elsewhere-ss-aes-256-gcm": lambda lab, i: ElsewhereShadowsocks(lab, i, "aes-256-gcm"),
    "ss-libev-aes-256-gcm": lambda lab, i: LibevShadowsocks(lab, i, "aes-256-gcm"),
    "elsewhere-ss-chacha20": lambda lab, i: ElsewhereShadowsocks(lab, i, "chacha20-ietf-poly1305"),
    "ss-libev-chacha20": lambda lab, i: LibevShadowsocks(lab, i, "chacha20-ietf-poly1305"),
}

# which row each elsewhere row is held against for the targets
PEERS = {
    "elsewhere-ss-aes-256-gcm": "ss-libev-aes-256-gcm",
    "elsewhere-ss-chacha20": "ss-libev-chacha20",
}


def missing_tools() -> list[str]:
    return [t for t in ("ip", "ss", "iperf3", "ss-server", "ss-tunnel") if shutil.which(t) is None]
