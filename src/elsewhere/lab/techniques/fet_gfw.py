"""fet_gfw: the Great Firewall's rule for fully encrypted traffic (Wu et al., "How the Great
Firewall of China Detects and Blocks Fully Encrypted Traffic", USENIX Security 2023, §4).

The first data packet a client sends over TCP is exempt when any of these holds:
  Ex1  its average number of set bits per byte is ≤ 3.4 or ≥ 4.6;
  Ex2  its first six bytes are printable ASCII (0x20-0x7e);
  Ex3  more than half of its bytes are printable;
  Ex4  it holds a run of more than 20 printable bytes;
  Ex5  it starts like TLS ([\\x16-\\x17]\\x03[\\x00-\\x09]) or HTTP ("GET ", "PUT ", "POST",
       "HEAD").
Otherwise the GFW blocked the connection with probability ≈ 0.26 and then, for 180 s, every
connection from that client to that server and port ("residual censorship")."""

from __future__ import annotations

import re

from elsewhere.lab.flows import Flow
from elsewhere.lab.packet import Packet
from elsewhere.lab.policy import CensorConfig
from elsewhere.lab.techniques import Action, BaseTechnique, Context, Decision

POPCOUNT_LOW = 3.4  # Ex1
POPCOUNT_HIGH = 4.6
PRINTABLE = bytes(range(0x20, 0x7F))
PRINTABLE_PREFIX = re.compile(rb"[\x20-\x7e]{6}")  # Ex2
PRINTABLE_SHARE = 0.5  # Ex3
PRINTABLE_RUN = re.compile(rb"[\x20-\x7e]{21}")  # Ex4: more than 20
TLS_START = re.compile(rb"[\x16\x17]\x03[\x00-\x09]")  # Ex5
HTTP_STARTS = (b"GET ", b"PUT ", b"POST", b"HEAD")


def bits_per_byte(payload: bytes) -> float:
    return int.from_bytes(payload, "big").bit_count() / len(payload)


def exemption(payload: bytes) -> str | None:
    """Which exemption spares `payload` ("Ex1".."Ex5"), or None when it looks fully encrypted."""
    if not payload:
        return "empty"
    popcount = bits_per_byte(payload)
    if popcount <= POPCOUNT_LOW or popcount >= POPCOUNT_HIGH:
        return "Ex1"
    if PRINTABLE_PREFIX.match(payload):
        return "Ex2"
    printable = len(payload) - len(payload.translate(None, PRINTABLE))
    if printable > PRINTABLE_SHARE * len(payload):
        return "Ex3"
    if PRINTABLE_RUN.search(payload):
        return "Ex4"
    if TLS_START.match(payload) or payload.startswith(HTTP_STARTS):
        return "Ex5"
    return None


class FetGfw(BaseTechnique):
    name = "fet_gfw"

    def inspect(self, packet: Packet, flow: Flow, upstream: bool, ctx: Context) -> Decision | None:
        if not (upstream and packet.is_tcp and packet.payload and flow.upstream_payloads == 1
                and flow.opens_here):
            return None
        if exemption(packet.payload) is not None:
            return None
        reason = f"fully encrypted first packet ({bits_per_byte(packet.payload):.2f} bits/byte)"
        if ctx.rng.random() >= self.config.fet_probability:
            ctx.note(self.name, flow, reason + ", spared by chance")
            return None
        if self.config.fet_residual_seconds > 0:
            ctx.block_server(flow.server, self.config.fet_residual_seconds, self.name,
                             "residual block after " + reason, client=flow.client[0])
        return self.decide(Action.BLOCK, reason)


def technique(config: CensorConfig) -> FetGfw:
    return FetGfw(config)
