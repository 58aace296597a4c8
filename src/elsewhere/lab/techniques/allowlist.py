"""allowlist: only listed networks are reachable. A TCP handshake to anything else completes,
and the first data packet (the ClientHello) is lost along with the rest of the flow — what
Russian mobile operators' "white lists" (2025, net4people/bbs#516, #650) and Iran's shutdowns
(#626: the handshake completes, nothing after it) looked like from a client."""

from __future__ import annotations

from elsewhere.lab.flows import Flow
from elsewhere.lab.packet import Packet
from elsewhere.lab.plan import in_networks
from elsewhere.lab.policy import CensorConfig
from elsewhere.lab.techniques import Action, BaseTechnique, Context, Decision


class Allowlist(BaseTechnique):
    name = "allowlist"

    def inspect(self, packet: Packet, flow: Flow, upstream: bool, ctx: Context) -> Decision | None:
        if not (upstream and packet.payload):
            return None
        if in_networks(flow.server[0], self.config.allowlist):
            return None
        return self.decide(Action.BLOCK, f"{flow.server[0]} is not on the allowlist")


def technique(config: CensorConfig) -> Allowlist:
    return Allowlist(config)
