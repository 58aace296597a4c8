"""handshake_rate: a client that opens TLS handshakes to one server name in quick succession is
not a browser. Reported from Russia in 2025 (net4people/bbs, Xray-core discussions on XHTTP's
xmux): more than 3 ClientHellos for one SNI from one client within 60 s, each less than about
400 ms after the one before, and that client is cut off from that server for a minute. It is
what a naive "one connection per request" client trips, and why XHTTP's client keeps a small
pool of long-lived connections (xmux: 3)."""

from __future__ import annotations

from collections import deque

from elsewhere.lab.flows import Flow
from elsewhere.lab.packet import Packet
from elsewhere.lab.policy import CensorConfig
from elsewhere.lab.techniques import Action, BaseTechnique, Context, Decision

WINDOW = 60.0  # seconds of history per (client, server name)
GAP = 0.4  # hellos closer than this count as one burst
MOST = 3  # a burst of more than this many trips the rule
BLOCK_SECONDS = 60.0
_COUNTED = "counted:handshake_rate"


class HandshakeRate(BaseTechnique):
    name = "handshake_rate"

    def __init__(self, config: CensorConfig) -> None:
        super().__init__(config)
        self.seen: dict[tuple[str, str], deque[float]] = {}

    def inspect(self, packet: Packet, flow: Flow, upstream: bool, ctx: Context) -> Decision | None:
        if not upstream or not packet.payload or _COUNTED in flow.logged:
            return None
        hello = flow.client_hello()
        if hello is None or not hello.server_name:
            return None
        flow.logged.add(_COUNTED)
        client = flow.client[0]
        times = self.seen.setdefault((client, hello.server_name.lower()), deque())
        now = ctx.now
        while times and now - times[0] > WINDOW:
            times.popleft()
        times.append(now)
        burst = 1
        for earlier, later in zip(reversed(list(times)[:-1]), reversed(times), strict=False):
            if later - earlier >= GAP:
                break
            burst += 1
        if burst <= MOST:
            return None
        reason = f"{burst} TLS handshakes to {hello.server_name} under {GAP * 1000:.0f} ms apart"
        ctx.block_server(flow.server, BLOCK_SECONDS, self.name, reason, client=client)
        return self.decide(Action.BLOCK, reason)


def technique(config: CensorConfig) -> HandshakeRate:
    return HandshakeRate(config)
