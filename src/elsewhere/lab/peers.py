"""The real peers from Debian's packages, as survival-matrix transports: wireguard-go,
OpenVPN (TLS mode, UDP), shadowsocks-libev (AEAD aes-256-gcm, no prefix) and v2ray (VLESS over
TLS). They are here to show that the lab bites: a censor that cannot catch any of them proves
nothing. Each runs its server in `server` and its client in `client`, nowhere else."""

from __future__ import annotations

import base64
import ipaddress
import json
import os
import secrets
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from elsewhere.lab import plan
from elsewhere.lab.errors import LabError
from elsewhere.lab.topology import Lab, LabProcess
from elsewhere.lab.transport import Direct, Route, Transport
from elsewhere.lab.wait import wait_until
from elsewhere.session import Destination

START_TIMEOUT = 10.0
HANDSHAKE_TIMEOUT = 6.0  # seconds a tunnel gets to come up before we call it blocked
SERVER_UPLINK = "to-internet"  # the server's interface towards the internet (topology.LINKS)
# What tunnels carry: the foreign sites, foreign hosting, the domestic bank and the resolver.
TUNNELLED = (plan.FOREIGN_PLATFORMS, plan.FOREIGN_HOSTING[1], plan.DOMESTIC)


def _iface(prefix: str, lab: Lab) -> str:
    # Interface names are unique per lab: wireguard-go's control socket path is global.
    name = f"{prefix}{lab.id[2:]}"
    if len(name) > 15:
        raise LabError(f"interface name {name} is longer than Linux allows")
    return name


def _secret_file(path: Path, content: str) -> Path:
    path.write_text(content)
    path.chmod(0o600)
    return path


@contextmanager
def _processes(lab: Lab) -> Iterator[list[LabProcess]]:
    """Processes a transport starts; all stopped when it closes."""
    started: list[LabProcess] = []
    try:
        yield started
    finally:
        for process in reversed(started):
            lab.forget(process)


@contextmanager
def _masquerade(lab: Lab, network: str) -> Iterator[None]:
    """Let the server forward a tunnel's traffic to the internet under its own address."""
    rule = ["POSTROUTING", "-s", network, "-o", SERVER_UPLINK, "-j", "MASQUERADE"]
    lab.run("server", ["sysctl", "-qw", "net.ipv4.ip_forward=1"])
    lab.run("server", ["iptables", "-t", "nat", "-A", *rule])
    try:
        yield
    finally:
        lab.run("server", ["iptables", "-t", "nat", "-D", *rule], check=False)


class WireGuardGo:
    """wireguard-go on both ends; the client routes the lab's sites through the tunnel."""

    name = "wireguard-go"
    port = 51820
    network = plan.WIREGUARD_NETWORK
    server_tunnel = "10.77.50.1"
    client_tunnel = "10.77.50.2"

    @contextmanager
    def open(self, lab: Lab) -> Iterator[Route]:
        keys = {side: X25519PrivateKey.generate() for side in ("server", "client")}
        secret = {side: base64.b64encode(key.private_bytes(
            serialization.Encoding.Raw, serialization.PrivateFormat.Raw,
            serialization.NoEncryption())).decode() for side, key in keys.items()}
        public = {side: base64.b64encode(key.public_key().public_bytes(
            serialization.Encoding.Raw, serialization.PublicFormat.Raw)).decode()
            for side, key in keys.items()}
        server_if, client_if = _iface("wgs", lab), _iface("wgc", lab)
        with _processes(lab) as started, _masquerade(lab, self.network):
            started.append(self._device(lab, "server", server_if))
            started.append(self._device(lab, "client", client_if))
            server_key = _secret_file(lab.workdir / "wg-server.key", secret["server"])
            client_key = _secret_file(lab.workdir / "wg-client.key", secret["client"])
            lab.run("server", ["wg", "set", server_if, "private-key", str(server_key),
                               "listen-port", str(self.port), "peer", public["client"],
                               "allowed-ips", f"{self.client_tunnel}/32"])
            lab.run("client", ["wg", "set", client_if, "private-key", str(client_key),
                               "peer", public["server"], "endpoint", f"{plan.SERVER}:{self.port}",
                               "allowed-ips", "0.0.0.0/0"])
            ends: tuple[tuple[plan.Role, str, str], ...] = (
                ("server", server_if, self.server_tunnel),
                ("client", client_if, self.client_tunnel),
            )
            for role, iface, address in ends:
                lab.run(role, ["ip", "addr", "add", f"{address}/24", "dev", iface])
                lab.run(role, ["ip", "link", "set", iface, "up"])
            for network in TUNNELLED:  # routes exist before any packet: nothing leaks around
                lab.run("client", ["ip", "route", "add", network, "dev", client_if])
            yield Route(server=Destination(plan.SERVER, self.port), network="udp")

    @staticmethod
    def _device(lab: Lab, role: plan.Role, iface: str) -> LabProcess:
        process = lab.spawn(role, ["wireguard-go", "-f", iface], name=f"wireguard-go-{role}")
        socket_path = Path("/var/run/wireguard") / f"{iface}.sock"

        def up() -> bool:
            if not process.alive():
                raise LabError(f"wireguard-go exited: {process.output()[-400:]}")
            return socket_path.exists()

        wait_until(up, START_TIMEOUT, f"wireguard-go to create {iface}")
        return process


class OpenVpn:
    """OpenVPN 2.6 point-to-point in TLS mode with lab-CA certificates (the mode whose opcodes
    DPI fingerprints), over UDP or TCP."""

    network = plan.OPENVPN_NETWORK
    server_tunnel = "10.77.51.1"
    client_tunnel = "10.77.51.2"
    port = 1194

    def __init__(self, proto: str = "udp", handshake_timeout: float = HANDSHAKE_TIMEOUT) -> None:
        self.proto = proto
        self.handshake_timeout = handshake_timeout
        self.name = "openvpn" if proto == "udp" else f"openvpn-{proto}"

    @contextmanager
    def open(self, lab: Lab) -> Iterator[Route]:
        assert lab.ca is not None
        server_cert = lab.ca.issue("openvpn-server", dns_names=("openvpn-server",))
        client_cert = lab.ca.issue("openvpn-client", dns_names=("openvpn-client",), client=True)
        common = ["--dev-type", "tun", "--ca", str(lab.ca_cert), "--dh", "none",
                  "--data-ciphers", "AES-256-GCM", "--verb", "3", "--ping", "10"]
        server_proto = "tcp-server" if self.proto == "tcp" else "udp"
        client_proto = "tcp-client" if self.proto == "tcp" else "udp"
        routes = [arg for net in TUNNELLED for arg in ("--route", *_net_and_mask(net))]
        with _processes(lab) as started, _masquerade(lab, self.network):
            server = lab.spawn("server", [
                "openvpn", "--dev", _iface("ovs", lab), "--proto", server_proto,
                "--lport", str(self.port), "--tls-server", "--cert", str(server_cert.cert),
                "--key", str(server_cert.key), "--ifconfig", self.server_tunnel,
                self.client_tunnel, *common], name=f"{self.name}-server")
            started.append(server)
            listening = ("Listening for incoming TCP connection" if self.proto == "tcp"
                         else "link local (bound)")
            server.wait_for_output(listening, START_TIMEOUT)
            client = lab.spawn("client", [
                "openvpn", "--dev", _iface("ovc", lab), "--proto", client_proto,
                "--remote", plan.SERVER, str(self.port), "--nobind", "--tls-client",
                "--remote-cert-tls", "server", "--cert", str(client_cert.cert),
                "--key", str(client_cert.key), "--ifconfig", self.client_tunnel,
                self.server_tunnel, *routes, *common], name=f"{self.name}-client")
            started.append(client)
            route = Route(server=Destination(plan.SERVER, self.port),
                          network="tcp" if self.proto == "tcp" else "udp")
            try:
                client.wait_for_output("Initialization Sequence Completed",
                                       self.handshake_timeout)
            except LabError as exc:
                # Without a tunnel the routes were never added: fetching would go around it.
                yield Route(route.proxy, route.server, route.network, ready=False,
                            note=f"tunnel did not come up: {str(exc).splitlines()[0]}")
                return
            yield route


def _net_and_mask(cidr: str) -> tuple[str, str]:
    net = ipaddress.ip_network(cidr)
    return str(net.network_address), str(net.netmask)


class ShadowsocksLibev:
    """ss-server and ss-local from shadowsocks-libev: SIP004 AEAD, no prefix, no plugin."""

    port = 8388
    socks_port = 1080

    def __init__(self, method: str = "aes-256-gcm") -> None:
        self.method = method
        self.name = "shadowsocks-libev"
        self.password = secrets.token_urlsafe(16)

    @contextmanager
    def open(self, lab: Lab) -> Iterator[Route]:
        with _processes(lab) as started:
            started.append(lab.spawn("server", [
                "ss-server", "-s", "0.0.0.0", "-p", str(self.port), "-k", self.password,
                "-m", self.method, "-d", plan.DNS], name="ss-server"))
            started.append(lab.spawn("client", [
                "ss-local", "-s", plan.SERVER, "-p", str(self.port), "-b", "127.0.0.1",
                "-l", str(self.socks_port), "-k", self.password, "-m", self.method],
                name="ss-local"))
            lab.wait_tcp("server", plan.SERVER, self.port, START_TIMEOUT)
            lab.wait_tcp("client", "127.0.0.1", self.socks_port, START_TIMEOUT)
            yield Route(proxy=f"socks5h://127.0.0.1:{self.socks_port}",
                        server=Destination(plan.SERVER, self.port))


class V2rayVless:
    """v2ray 4.x: VLESS over TLS (a lab-CA certificate for abroad.test) on port 443."""

    name = "v2ray-vless-tls"
    port = 443
    socks_port = 1081

    @contextmanager
    def open(self, lab: Lab) -> Iterator[Route]:
        assert lab.ca is not None
        cert = lab.ca.issue("v2ray-server", dns_names=(plan.SERVER_NAME,))
        user = str(uuid.uuid4())
        server = {
            "log": {"loglevel": "warning"},
            "dns": {"servers": [plan.DNS]},
            "inbounds": [{
                "listen": "0.0.0.0", "port": self.port, "protocol": "vless",
                "settings": {"clients": [{"id": user}], "decryption": "none"},
                "streamSettings": {"network": "tcp", "security": "tls", "tlsSettings": {
                    "certificates": [{"certificateFile": str(cert.cert),
                                      "keyFile": str(cert.key)}]}},
            }],
            "outbounds": [{"protocol": "freedom", "settings": {"domainStrategy": "UseIP"}}],
        }
        client = {
            "log": {"loglevel": "warning"},
            "inbounds": [{"listen": "127.0.0.1", "port": self.socks_port, "protocol": "socks",
                          "settings": {"udp": False}}],
            "outbounds": [{
                "protocol": "vless",
                "settings": {"vnext": [{"address": plan.SERVER, "port": self.port,
                                        "users": [{"id": user, "encryption": "none"}]}]},
                "streamSettings": {"network": "tcp", "security": "tls", "tlsSettings": {
                    "serverName": plan.SERVER_NAME, "disableSystemRoot": True,
                    "certificates": [{"usage": "verify",
                                      "certificateFile": str(lab.ca_cert)}]}},
            }],
        }
        paths = []
        for side, config in (("server", server), ("client", client)):
            path = lab.workdir / f"v2ray-{side}.json"
            path.write_text(json.dumps(config, indent=2))
            os.chmod(path, 0o600)
            paths.append(path)
        with _processes(lab) as started:
            started.append(lab.spawn("server", ["v2ray", "-config", str(paths[0])],
                                     name="v2ray-server"))
            started.append(lab.spawn("client", ["v2ray", "-config", str(paths[1])],
                                     name="v2ray-client"))
            lab.wait_tcp("server", plan.SERVER, self.port, START_TIMEOUT)
            lab.wait_tcp("client", "127.0.0.1", self.socks_port, START_TIMEOUT)
            yield Route(proxy=f"socks5h://127.0.0.1:{self.socks_port}",
                        server=Destination(plan.SERVER, self.port))


def real_peers() -> list[Transport]:
    """Direct access and every real peer, in the order the matrix shows them."""
    return [Direct(), WireGuardGo(), OpenVpn(), ShadowsocksLibev(), V2rayVless()]
