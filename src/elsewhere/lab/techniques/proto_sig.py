"""proto_sig: block flows whose first packets carry a known protocol's fixed shape.

- WireGuard (whitepaper §5.4): message type 1/2/3/4 followed by three zero bytes; handshake
  initiation is exactly 148 bytes, response 92, cookie reply 64; data ≥ 32 and a multiple of 16.
  Blocked in Russia since 2021 (net4people/bbs#76, #274).
- OpenVPN (openvpn ssl_pkt.h): opcode in the top 5 bits of the first byte, key id in the low 3;
  a session starts with P_CONTROL_HARD_RESET_CLIENT_V2/V3 (7/10, key id 0); over TCP the packet
  is prefixed by its 16-bit length (Xue et al., "OpenVPN is Open to VPN Fingerprinting", USENIX
  Security 2022).
- SOCKS5 (RFC 1928 §3): a greeting of version 5, N methods, then exactly N method bytes.
- Plain HTTP (RFC 9112): a request whose Host header names a blocked site.
"""

from __future__ import annotations

import re

from elsewhere.lab.flows import Flow
from elsewhere.lab.packet import Packet
from elsewhere.lab.policy import CensorConfig
from elsewhere.lab.techniques import Action, BaseTechnique, Context, Decision, name_matches

WIREGUARD_SIZES = {1: 148, 2: 92, 3: 64}  # handshake initiation, response, cookie reply
WIREGUARD_DATA = 4
WIREGUARD_DATA_MIN = 32  # 16-byte header + 16-byte tag for an empty keepalive
OPENVPN_HARD_RESET_CLIENT_V2 = 7
OPENVPN_HARD_RESET_SERVER_V2 = 8
OPENVPN_HARD_RESET_CLIENT_V3 = 10
OPENVPN_RESET_OPCODES = (OPENVPN_HARD_RESET_CLIENT_V2, OPENVPN_HARD_RESET_CLIENT_V3)
OPENVPN_MIN_RESET = 14  # opcode, session id (8), ack count (1), packet id (4)
OPENVPN_MAX_RESET = 1500
SOCKS5_VERSION = 5
HTTP_REQUEST = re.compile(
    rb"^(?:GET|POST|HEAD|PUT|DELETE|OPTIONS|CONNECT|PATCH) \S+ HTTP/1\.[01]\r\n"
)
HTTP_HOST = re.compile(rb"\r\nhost:[ \t]*([^\r\n:]+)", re.IGNORECASE)


def wireguard(payload: bytes) -> str | None:
    if len(payload) < 4 or payload[1:4] != b"\0\0\0":
        return None
    kind = payload[0]
    if WIREGUARD_SIZES.get(kind) == len(payload):
        return f"WireGuard message type {kind} of {len(payload)} bytes"
    if kind == WIREGUARD_DATA and len(payload) >= WIREGUARD_DATA_MIN and len(payload) % 16 == 0:
        return "WireGuard transport data"
    return None


def openvpn(payload: bytes, over_tcp: bool) -> str | None:
    if over_tcp:
        if len(payload) < 3:
            return None
        declared = int.from_bytes(payload[:2], "big")
        if declared > len(payload) - 2:
            return None
        packet = payload[2 : 2 + declared]
    else:
        packet = payload
    if not OPENVPN_MIN_RESET <= len(packet) <= OPENVPN_MAX_RESET:
        return None
    opcode, key_id = packet[0] >> 3, packet[0] & 0x07
    if key_id == 0 and opcode in OPENVPN_RESET_OPCODES:
        carrier = "TCP" if over_tcp else "UDP"
        return f"OpenVPN P_CONTROL_HARD_RESET_CLIENT (opcode {opcode}) over {carrier}"
    return None


def socks5(payload: bytes) -> str | None:
    if len(payload) >= 3 and payload[0] == SOCKS5_VERSION and len(payload) == 2 + payload[1]:
        return "SOCKS5 greeting"
    return None


def http_host(payload: bytes, blocked: tuple[str, ...]) -> str | None:
    if not HTTP_REQUEST.match(payload):
        return None
    host = HTTP_HOST.search(payload)
    if host is None:
        return None
    name = host.group(1).decode("latin-1").strip()
    return f"HTTP Host {name}" if name_matches(name, blocked) else None


class ProtoSig(BaseTechnique):
    name = "proto_sig"

    def inspect(self, packet: Packet, flow: Flow, upstream: bool, ctx: Context) -> Decision | None:
        if not (upstream and packet.payload):
            return None
        if packet.is_udp:
            found = wireguard(packet.payload) or openvpn(packet.payload, over_tcp=False)
            return self.decide(Action.BLOCK, found) if found else None
        if flow.upstream_payloads != 1 or not flow.opens_here:  # TCP: the first segment
            return None
        payload = packet.payload
        found = openvpn(payload, over_tcp=True) or socks5(payload)
        if found:
            return self.decide(Action.BLOCK, found)
        found = http_host(payload, self.config.blocked_names)
        return self.decide(Action.RESET, found) if found else None


def technique(config: CensorConfig) -> ProtoSig:
    return ProtoSig(config)
