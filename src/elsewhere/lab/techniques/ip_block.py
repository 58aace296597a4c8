"""ip_block: drop every packet towards blocked addresses (null routing; the oldest technique,
RFC 9505, "IP address blocking")."""

from __future__ import annotations

from elsewhere.lab.flows import Flow
from elsewhere.lab.packet import Packet
from elsewhere.lab.plan import in_networks
from elsewhere.lab.policy import CensorConfig
from elsewhere.lab.techniques import Action, BaseTechnique, Context, Decision


class IpBlock(BaseTechnique):
    name = "ip_block"

    def inspect(self, packet: Packet, flow: Flow, upstream: bool, ctx: Context) -> Decision | None:
        if upstream and in_networks(packet.dst, self.config.blocked_networks):
            return self.decide(Action.BLOCK, f"address {packet.dst} is blocked")
        return None


def technique(config: CensorConfig) -> IpBlock:
    return IpBlock(config)
