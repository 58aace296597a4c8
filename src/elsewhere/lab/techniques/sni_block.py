"""sni_block: reset (or silently drop) TLS connections whose ClientHello names a blocked server,
read from the reassembled stream (OONI web_connectivity "connection reset" after ClientHello;
Censored Planet Hyperquack; the GFW injects RSTs for SNIs on its list)."""

from __future__ import annotations

from elsewhere.lab.flows import Flow
from elsewhere.lab.packet import Packet
from elsewhere.lab.policy import CensorConfig
from elsewhere.lab.techniques import Action, BaseTechnique, Context, Decision, name_matches


class SniBlock(BaseTechnique):
    name = "sni_block"

    def inspect(self, packet: Packet, flow: Flow, upstream: bool, ctx: Context) -> Decision | None:
        if not (upstream and packet.payload):
            return None
        hello = flow.client_hello()
        if hello is None or not hello.server_name:
            return None
        if not name_matches(hello.server_name, self.config.blocked_names):
            return None
        action = Action.RESET if self.config.sni_action == "reset" else Action.BLOCK
        return self.decide(action, f"SNI {hello.server_name}")


def technique(config: CensorConfig) -> SniBlock:
    return SniBlock(config)
