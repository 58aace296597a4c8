"""sni_throttle: let TLS to a blocked SNI through, but lose a share of its packets, as Russia
throttled twitter.com in 2021 (Xue et al., "Throttling Twitter: An Emerging Censorship Technique
in Russia", IMC 2021). The censor marks the flow; the kernel drops the share."""

from __future__ import annotations

from elsewhere.lab.flows import Flow
from elsewhere.lab.packet import Packet
from elsewhere.lab.policy import CensorConfig
from elsewhere.lab.techniques import (
    MARK_THROTTLE,
    Action,
    BaseTechnique,
    Context,
    Decision,
    name_matches,
)


class SniThrottle(BaseTechnique):
    name = "sni_throttle"

    def inspect(self, packet: Packet, flow: Flow, upstream: bool, ctx: Context) -> Decision | None:
        hello = flow.client_hello() if upstream and packet.payload else None
        if hello is None or not hello.server_name:
            return None
        if not name_matches(hello.server_name, self.config.blocked_names):
            return None
        return self.decide(Action.THROTTLE, f"SNI {hello.server_name}")

    def rules(self) -> list[str]:
        return [
            f"-A CENSOR -m connmark --mark {MARK_THROTTLE:#x}/{MARK_THROTTLE:#x} "
            f"-m statistic --mode random --probability {self.config.throttle_drop:.4f} "
            f"-m comment --comment {self.name} -j DROP"
        ]


def technique(config: CensorConfig) -> SniThrottle:
    return SniThrottle(config)
