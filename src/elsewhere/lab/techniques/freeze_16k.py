"""freeze_16k: Russia's 2025 rule — a TCP connection to an address of a foreign hosting provider
goes silent once the server has sent about 16 KB, unless the ClientHello names an allowlisted
site (net4people/bbs#490, "[Russia] Censor has a new method of blocking", 2025).

The counting happens in the kernel (connbytes on the reply direction), so bulk traffic never
reaches Python; the censor only reads ClientHellos to exempt allowlisted names."""

from __future__ import annotations

from elsewhere.lab.flows import Flow
from elsewhere.lab.packet import Packet
from elsewhere.lab.plan import in_networks
from elsewhere.lab.policy import CensorConfig
from elsewhere.lab.techniques import (
    MARK_EXEMPT,
    Action,
    BaseTechnique,
    Context,
    Decision,
    name_matches,
)


class Freeze16k(BaseTechnique):
    name = "freeze_16k"

    def inspect(self, packet: Packet, flow: Flow, upstream: bool, ctx: Context) -> Decision | None:
        if not (upstream and packet.is_tcp and packet.payload):
            return None
        if not in_networks(flow.server[0], self.config.foreign_hosting):
            return None
        hello = flow.client_hello()
        if hello is None or not hello.server_name:
            return None
        if name_matches(hello.server_name, self.config.freeze_allowed_names):
            return self.decide(Action.EXEMPT, f"SNI {hello.server_name} is allowlisted")
        return None

    def rules(self) -> list[str]:
        return [
            f"-A CENSOR -s {network} -p tcp -m connmark ! --mark {MARK_EXEMPT:#x}/{MARK_EXEMPT:#x}"
            f" -m connbytes --connbytes {self.config.freeze_bytes}: --connbytes-dir reply"
            f" --connbytes-mode bytes -m comment --comment {self.name} -j DROP"
            for network in self.config.foreign_hosting
        ]


def technique(config: CensorConfig) -> Freeze16k:
    return Freeze16k(config)
