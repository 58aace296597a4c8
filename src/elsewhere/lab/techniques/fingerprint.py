"""fingerprint: reset TLS connections whose ClientHello has a blocked JA3 or JA4 fingerprint.
Censors and CDNs single out tool-made handshakes this way (Frolov and Wustrow, "The use of TLS
in Censorship Circumvention", NDSS 2019, on how censors single out non-browser TLS stacks;
JA3 by Salesforce, JA4 by FoxIO). The block list takes JA3/JA4 strings and the named sets of
lab/fingerprints.py (`python`, `utls-chrome`, `utls-firefox`, `chrome`, `firefox`); by default
the 2026-06 wave's: Python's own `ssl` hellos, computed at start from this very interpreter, and
uTLS's Chrome preset (what Xray and sing-box send for fp=chrome), while Firefox's passed."""

from __future__ import annotations

import ssl

from elsewhere.lab import fingerprints
from elsewhere.lab.clienthello import ja3, ja4, parse_client_hello, python_default_hello
from elsewhere.lab.flows import Flow
from elsewhere.lab.packet import Packet
from elsewhere.lab.policy import CensorConfig
from elsewhere.lab.techniques import Action, BaseTechnique, Context, Decision

# OpenSSL pads a ClientHello that would be 256-511 bytes long (RFC 7685), so the extension list
# depends on the SNI's length: sample enough lengths to meet every variant.
SNI_LENGTHS = range(1, 200, 3)


def python_fingerprints() -> frozenset[str]:
    """JA3 and JA4 of `ssl.create_default_context()` hellos, for every padding variant."""
    found: set[str] = set()
    labels = ".".join(["a" * 9] * 40)  # DNS labels stay under 63 bytes
    context = ssl.create_default_context()
    for length in SNI_LENGTHS:
        name = labels[:length].strip(".") + ".test"
        hello = parse_client_hello(python_default_hello(name, context))
        found.update((ja3(hello), ja4(hello)))
    return frozenset(found)


class Fingerprint(BaseTechnique):
    name = "fingerprint"

    def __init__(self, config: CensorConfig) -> None:
        super().__init__(config)
        listed = config.blocked_fingerprints or fingerprints.WAVE_2026_06
        self.blocked = fingerprints.resolve(listed)

    def inspect(self, packet: Packet, flow: Flow, upstream: bool, ctx: Context) -> Decision | None:
        hello = flow.client_hello() if upstream and packet.payload else None
        if hello is None:
            return None
        for name, value in (("JA4", ja4(hello)), ("JA3", ja3(hello))):
            if value in self.blocked:
                return self.decide(Action.RESET, f"{name} {value} is blocked")
        return None


def technique(config: CensorConfig) -> Fingerprint:
    return Fingerprint(config)
