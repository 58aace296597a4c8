"""udp_hostile: UDP that is neither DNS nor a recognised protocol (QUIC v1 long header, STUN,
DTLS) and looks encrypted gets a few packets through, then the flow dies — how Iran and Russia
treat unknown UDP (net4people/bbs#182, Iran 2022: "UDP is mostly blocked"; #489, Iran 2025:
"unidentified UDP blocked on most ISPs")."""

from __future__ import annotations

from elsewhere.lab.flows import Flow
from elsewhere.lab.packet import Packet
from elsewhere.lab.policy import CensorConfig
from elsewhere.lab.techniques import Action, BaseTechnique, Context, Decision
from elsewhere.lab.techniques.fet_gfw import exemption

DNS_PORT = 53
QUIC_V1 = b"\x00\x00\x00\x01"  # RFC 9000 §17.2: long header, version 1
STUN_MAGIC = b"\x21\x12\xa4\x42"  # RFC 8489 §5
DTLS_HANDSHAKE = (0x16, 0xFE)  # content type 22, DTLS 1.x major version


def known_udp(payload: bytes, ports: tuple[int, int]) -> str | None:
    if DNS_PORT in ports:
        return "DNS"
    if len(payload) >= 5 and payload[0] & 0xC0 == 0xC0 and payload[1:5] == QUIC_V1:
        return "QUIC"
    if len(payload) >= 8 and payload[4:8] == STUN_MAGIC:
        return "STUN"
    if len(payload) >= 2 and (payload[0], payload[1]) == DTLS_HANDSHAKE:
        return "DTLS"
    return None


class UdpHostile(BaseTechnique):
    name = "udp_hostile"

    def inspect(self, packet: Packet, flow: Flow, upstream: bool, ctx: Context) -> Decision | None:
        if not (packet.is_udp and upstream and flow.first_payload):
            return None
        if known_udp(flow.first_payload, (packet.sport, packet.dport)):
            return None
        if exemption(flow.first_payload) is not None:
            return None
        if flow.upstream_packets > self.config.udp_hostile_packets:
            return self.decide(Action.BLOCK, f"unknown encrypted UDP after "
                               f"{self.config.udp_hostile_packets} packets")
        return None


def technique(config: CensorConfig) -> UdpHostile:
    return UdpHostile(config)
