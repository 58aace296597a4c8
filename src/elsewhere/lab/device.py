"""elsewhere's full-device mode in the lab: an elsewhere server (Shadowsocks, TCP and UDP) in
`server`, and `elsewhere vpn LINK --netns <client>` started from outside the namespace, so
that every program in `client` goes through the tunnel without any proxy setting. Used by the
lab tests and the benchmarks."""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

from elsewhere.control.links import AccessKey, format_access_key
from elsewhere.lab import plan
from elsewhere.lab.elsewhere_transports import LISTENING, START_TIMEOUT, toml_text
from elsewhere.lab.topology import COMMAND_TIMEOUT, Lab, LabProcess

SERVER_PORT = 8399
METHOD = "aes-256-gcm"
READY = "vpn on:"  # device/vpn.py's line once the rules are in place
VPN_START_TIMEOUT = 20.0


@dataclass
class Server:
    link: str
    process: LabProcess


@contextmanager
def shadowsocks_server(
    lab: Lab, port: int = SERVER_PORT, prefix: bytes = b""
) -> Iterator[Server]:
    """The server, and the link to it (with Outline's salt `prefix` when given)."""
    password = secrets.token_urlsafe(16)
    config = {
        "inbounds": [{"type": "shadowsocks", "listen": "0.0.0.0", "port": port, "udp": True,
                      "keys": [{"id": "lab", "method": METHOD, "password": password}]}],
        "outbounds": [{"type": "direct", "private": "allow"}],
        "timeouts": {"idle": 60},
    }
    path = lab.workdir / "device-server.toml"
    path.write_text(toml_text(config))
    path.chmod(0o600)
    process = lab.spawn("server", lab.python("elsewhere", "run", "-c", str(path)),
                        name="device-server")
    try:
        process.wait_for_output(LISTENING, START_TIMEOUT)
        key = AccessKey("ss", METHOD, password, plan.SERVER, port, prefix=prefix)
        link = format_access_key(key)
        yield Server(link, process)
    finally:
        lab.forget(process)


@contextmanager
def tls_server(lab: Lab, protocol: str = "vless") -> Iterator[Server]:
    """elsewhere's TLS inbound (VLESS or Trojan over TLS, the lab CA's certificate for
    abroad.test, pinned in the link the way elsewhere server pins a self-signed one)."""
    from elsewhere.lab.elsewhere_transports import ElsewhereTls

    transport = ElsewhereTls("vless" if protocol == "vless" else "trojan")
    _, pin = transport.certificate(lab)
    config = {
        "inbounds": [{"listen": "0.0.0.0", "port": transport.port,
                      **transport.server_inbound(lab)}],
        "outbounds": [{"type": "direct", "private": "allow"}],
        "timeouts": {"idle": 60},
    }
    path = lab.workdir / f"device-{protocol}-server.toml"
    path.write_text(toml_text(config))
    path.chmod(0o600)
    process = lab.spawn("server", lab.python("elsewhere", "run", "-c", str(path)),
                        name=f"device-{protocol}-server")
    try:
        process.wait_for_output(LISTENING, START_TIMEOUT)
        secret = transport.uuid if protocol == "vless" else transport.password
        extra = {"security": "tls", "sni": plan.SERVER_NAME, "type": "tcp", "pcs": pin}
        if protocol == "vless":
            extra["encryption"] = "none"
        key = AccessKey(protocol, "", secret, plan.SERVER, transport.port, extra=extra)
        yield Server(format_access_key(key), process)
    finally:
        lab.forget(process)


def vpn_argv(lab: Lab, *args: str) -> list[str]:
    """`elsewhere vpn … --netns <client>`, run from this (the host's) namespace."""
    return [sys.executable, "-m", "elsewhere", "vpn", *args, "--netns", lab.ns("client")]


def start_vpn(lab: Lab, link: str, extra: Sequence[str] = (), name: str = "vpn") -> LabProcess:
    """The vpn process, tracked by the lab (ended on teardown), once its rules are in."""
    log = lab.workdir / f"{name}.log"
    with log.open("wb") as out:
        popen = subprocess.Popen(
            vpn_argv(lab, link, "--dns", plan.DNS, "--no-status", *extra),
            stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            start_new_session=True, env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
    process = LabProcess(name, "client", popen, log)
    lab.processes.append(process)
    process.wait_for_output(READY, VPN_START_TIMEOUT)
    return process


def vpn_off(lab: Lab) -> subprocess.CompletedProcess[str]:
    return subprocess.run(vpn_argv(lab, "--off"), capture_output=True, text=True,
                          timeout=COMMAND_TIMEOUT)


def network_state(lab: Lab, role: plan.Role = "client") -> dict[str, str]:
    """What full-device mode may change, as text to compare before and after."""
    commands = {
        "nftables": ["nft", "list", "ruleset"],
        "rules4": ["ip", "-4", "rule", "show"],
        "rules6": ["ip", "-6", "rule", "show"],
        "routes4": ["ip", "-4", "route", "show", "table", "all"],
        "routes6": ["ip", "-6", "route", "show", "table", "all"],
    }
    return {name: lab.run(role, argv).stdout for name, argv in commands.items()}
