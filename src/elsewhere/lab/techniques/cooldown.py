"""cooldown: after any technique stops a flow, block that server and port for a while — the
GFW's "penalty box" / residual censorship (Rambert et al., "Chinese Wall or Swiss Cheese?",
WWW 2021: 90 s after a keyword; Wu et al. 2023: 180 s after fully encrypted traffic), and
Russia's TSPU blocking servers once detected."""

from __future__ import annotations

from elsewhere.lab.flows import Flow
from elsewhere.lab.packet import Packet
from elsewhere.lab.policy import CensorConfig
from elsewhere.lab.techniques import BaseTechnique, Context, Decision


class Cooldown(BaseTechnique):
    name = "cooldown"

    def inspect(self, packet: Packet, flow: Flow, upstream: bool, ctx: Context) -> Decision | None:
        return None  # the censor's server block list does the blocking

    def notice(self, decision: Decision, flow: Flow, ctx: Context) -> None:
        if decision.action.stops_flow and decision.technique != self.name:
            ctx.block_server(flow.server, self.config.cooldown_seconds, self.name,
                             f"cool-down after {decision.technique}: {decision.reason}")


def technique(config: CensorConfig) -> Cooldown:
    return Cooldown(config)
