"""fet_gfw catches plain Shadowsocks at about the rate Wu et al. measured, keeps blocking a
server:port after a hit, and never touches a first packet an exemption covers."""

from __future__ import annotations

import asyncio
import random

import pytest
from lab_doubles import (
    CensorStarter,
    TcpDouble,
    echo,
    echoed,
    encrypted_looking,
    exchange,
    sent_unanswered,
    socks_exchange,
)

from elsewhere.lab import plan
from elsewhere.lab.peers import ShadowsocksLibev
from elsewhere.lab.topology import Lab
from elsewhere.session import Destination

pytestmark = pytest.mark.lab

CONNECTIONS = 120
# 120 draws at p = 0.263: mean 31.6, sd 4.8; the band is about ±3.5 sd around the paper's rate.
LOW, HIGH = 0.12, 0.41


def test_shadowsocks_libev_without_a_prefix_is_blocked_at_about_the_gfw_rate(
    lab: Lab, censor: CensorStarter
) -> None:
    # No residual block here, so every connection is an independent draw.
    running = censor("fet_gfw", fet_residual_seconds=0.0)
    peer = ShadowsocksLibev()
    bank = Destination(plan.site("bank.test").address, 80)
    request = b"GET / HTTP/1.1\r\nHost: bank.test\r\n\r\n"

    async def many() -> list[bytes | None]:
        return await asyncio.gather(*(
            socks_exchange(lab, peer.socks_port, bank, request, timeout=3.0)
            for _ in range(CONNECTIONS)))

    with peer.open(lab):
        answers = asyncio.run(many())
    blocked = sum(1 for a in answers if a is None)
    assert all(a.startswith(b"HTTP/1.1 200") for a in answers if a is not None)
    assert LOW <= blocked / CONNECTIONS <= HIGH, f"{blocked} of {CONNECTIONS} blocked"
    decisions = running.decisions("fet_gfw")
    assert len(decisions) == blocked  # the censor's count and the client's count agree


def test_after_a_block_the_server_port_stays_blocked_and_other_ports_do_not(
    lab: Lab, censor: CensorStarter
) -> None:
    running = censor("fet_gfw", fet_probability=1.0, fet_residual_seconds=60.0)
    payload = encrypted_looking(random.Random(11))
    with TcpDouble(lab, 9101, echo), TcpDouble(lab, 9102, echo):
        assert sent_unanswered(lab, 9101, payload)  # the first encrypted packet: blocked
        residual = exchange(lab, 9101, b"GET / HTTP/1.1\r\n\r\n")  # residual: even this
        assert residual is None, "\n".join(map(str, running.events()))
        assert echoed(lab, 9102, b"GET / HTTP/1.1\r\n\r\n")


def test_a_first_packet_with_a_printable_prefix_is_never_blocked(
    lab: Lab, censor: CensorStarter
) -> None:
    running = censor("fet_gfw", fet_probability=1.0)
    rng = random.Random(12)
    with TcpDouble(lab, 9103, echo):
        for _ in range(20):
            payload = b"HTTP/1.1 " + encrypted_looking(rng)  # Ex2: six printable bytes first
            assert echoed(lab, 9103, payload)
    assert not running.decisions()
