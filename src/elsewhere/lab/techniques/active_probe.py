"""active_probe: a server whose clients open with a fully-encrypted-looking first packet becomes
a suspect; the prober connects to it from the censor, replays that packet (as sent and with
bytes changed) and sends random probes of chosen lengths, and the server is blocked when its
reactions give it away (Alice et al., "How China Detects and Blocks Shadowsocks", IMC 2020;
Ensafi et al., "Examining How the Great Firewall Discovers Hidden Circumvention Servers",
IMC 2015). How reactions are judged lives in elsewhere.lab.prober."""

from __future__ import annotations

from elsewhere.lab.flows import Flow
from elsewhere.lab.packet import Packet
from elsewhere.lab.policy import CensorConfig
from elsewhere.lab.techniques import BaseTechnique, Context, Decision
from elsewhere.lab.techniques.fet_gfw import exemption

MIN_SUSPECT_BYTES = 16  # shorter first packets carry too little to replay meaningfully


class ActiveProbe(BaseTechnique):
    name = "active_probe"

    def inspect(self, packet: Packet, flow: Flow, upstream: bool, ctx: Context) -> Decision | None:
        if not (upstream and packet.is_tcp and flow.upstream_payloads == 1
                and flow.opens_here):
            return None
        payload = packet.payload
        if len(payload) < MIN_SUSPECT_BYTES or exemption(payload) is not None:
            return None
        ctx.note(self.name, flow, "fully encrypted first packet: server becomes a suspect")
        ctx.request_probe(flow.server, payload)
        return None


def technique(config: CensorConfig) -> ActiveProbe:
    return ActiveProbe(config)
