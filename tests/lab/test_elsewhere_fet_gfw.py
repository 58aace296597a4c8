"""fet_gfw against elsewhere's Shadowsocks: with the Outline prefix "HTTP/1.1 " the first packet
is exempt (its first six bytes are printable), so not one of 120 connections is blocked even
when the censor blocks every fully encrypted first packet it sees. Without a prefix, and with
Shadowsocks 2022 (whose first packet is random from its first byte), the GFW rule blocks about
a quarter, like shadowsocks-libev (test_fet_gfw)."""

from __future__ import annotations

import asyncio

import pytest
from lab_doubles import socks_exchange
from test_fet_gfw import CONNECTIONS, HIGH, LOW

from conftest import CensorStarter
from elsewhere.lab import plan
from elsewhere.lab.elsewhere_transports import (
    ElsewhereShadowsocks,
    ElsewhereSs2022,
    ElsewhereTransport,
)
from elsewhere.lab.topology import Lab
from elsewhere.session import Destination

pytestmark = pytest.mark.lab

BANK = Destination(plan.site("bank.test").address, 80)
REQUEST = b"GET / HTTP/1.1\r\nHost: bank.test\r\n\r\n"
ANSWER_TIMEOUT = 3.0


def many_connections(lab: Lab, transport: ElsewhereTransport) -> list[bytes | None]:
    """CONNECTIONS requests to bank.test through the transport at once; None where no answer."""

    async def many() -> list[bytes | None]:
        return await asyncio.gather(*(
            socks_exchange(lab, transport.socks_port, BANK, REQUEST, ANSWER_TIMEOUT)
            for _ in range(CONNECTIONS)))

    with transport.open(lab):
        return asyncio.run(many())


def test_shadowsocks_with_a_printable_prefix_is_never_blocked_by_fet_gfw(
    lab: Lab, censor: CensorStarter
) -> None:
    # Probability 1: any first packet the rule does not exempt would be blocked.
    running = censor("fet_gfw", fet_probability=1.0, fet_residual_seconds=0.0)
    answers = many_connections(lab, ElsewhereShadowsocks(prefix=b"HTTP/1.1 "))
    assert all(a is not None and a.startswith(b"HTTP/1.1 200") for a in answers)
    assert not [e for e in running.events() if e.get("technique") == "fet_gfw"]


@pytest.mark.parametrize(
    "transport", [ElsewhereShadowsocks(prefix=b""), ElsewhereSs2022()], ids=lambda t: t.name
)
def test_a_random_first_packet_is_blocked_at_about_the_gfw_rate(
    lab: Lab, censor: CensorStarter, transport: ElsewhereTransport
) -> None:
    running = censor("fet_gfw", fet_residual_seconds=0.0)  # independent draws
    answers = many_connections(lab, transport)
    blocked = sum(1 for a in answers if a is None)
    assert all(a.startswith(b"HTTP/1.1 200") for a in answers if a is not None)
    assert LOW <= blocked / CONNECTIONS <= HIGH, f"{blocked} of {CONNECTIONS} blocked"
    assert len(running.decisions("fet_gfw")) == blocked
