"""dns_poison: forged DNS answers for blocked names, as the GFW injects them (Anonymous, "Towards
a Comprehensive Picture of the Great Firewall's DNS Censorship", FOCI 2014; OONI's
dns_consistency test). The GFW races the real answer; the lab drops the query instead so the
forged answer is the only one and the test is deterministic."""

from __future__ import annotations

from elsewhere.errors import ProtocolError
from elsewhere.lab import dns
from elsewhere.lab.flows import Flow
from elsewhere.lab.packet import Packet, build_udp
from elsewhere.lab.policy import CensorConfig
from elsewhere.lab.techniques import Action, BaseTechnique, Context, Decision, name_matches

DNS_PORT = 53


class DnsPoison(BaseTechnique):
    name = "dns_poison"

    def inspect(self, packet: Packet, flow: Flow, upstream: bool, ctx: Context) -> Decision | None:
        if not (upstream and packet.is_udp and packet.dport == DNS_PORT and packet.payload):
            return None
        try:
            query = dns.parse_query(packet.payload)
        except ProtocolError:
            return None
        if query.qtype != dns.TYPE_A or not name_matches(query.name, self.config.blocked_names):
            return None
        forged = dns.encode_answer(query, (self.config.sinkhole,))
        reply = build_udp(packet.dst, packet.dport, packet.src, packet.sport, forged)
        return self.decide(Action.DROP, f"forged A {query.name} -> {self.config.sinkhole}",
                           (reply,))


def technique(config: CensorConfig) -> DnsPoison:
    return DnsPoison(config)
