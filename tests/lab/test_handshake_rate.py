"""handshake_rate, fed raw packets: a burst of more than 3 TLS handshakes to one name, each
under 400 ms after the one before, cuts that client off from that server for a minute; spaced
handshakes, other clients and other names do not count."""

from __future__ import annotations

import pytest

from elsewhere.lab import plan
from elsewhere.lab.censor import CensorEngine, Verdict
from elsewhere.lab.clienthello import python_default_hello
from elsewhere.lab.packet import TCP_ACK, TCP_PSH, TCP_SYN, build_tcp
from elsewhere.lab.policy import CensorConfig
from elsewhere.lab.techniques import MARK_BLOCK, MARK_RESET

pytestmark = pytest.mark.lab

ISN = 1000


def handshake(
    e: CensorEngine, sport: int, now: float, name: str = "abroad.test", client: str = plan.CLIENT
) -> Verdict:
    syn = build_tcp(client, sport, plan.SERVER, 443, b"", seq=ISN, flags=TCP_SYN)
    if blocked(e.judge(syn, now)):
        return e.judge(syn, now)
    hello = build_tcp(
        client,
        sport,
        plan.SERVER,
        443,
        python_default_hello(name),
        seq=ISN + 1,
        flags=TCP_ACK | TCP_PSH,
    )
    return e.judge(hello, now)


def blocked(verdict: Verdict) -> bool:
    return verdict.kind == "drop" or (
        verdict.kind == "mark" and bool(verdict.mark & (MARK_BLOCK | MARK_RESET))
    )


def engine() -> CensorEngine:
    return CensorEngine(CensorConfig(techniques=("handshake_rate",), seed=1))


def test_a_fourth_handshake_in_a_quick_burst_is_blocked_and_the_client_with_it() -> None:
    e = engine()
    for i in range(3):
        assert not blocked(handshake(e, 40000 + i, now=i * 0.1))
    assert blocked(handshake(e, 40003, now=0.3))
    # the client stays cut off from that server for a minute, whatever it sends
    assert blocked(handshake(e, 40004, now=30.0, name="other.test"))
    assert not blocked(handshake(e, 40005, now=61.0, name="other.test"))
    # another client was never blocked
    assert not blocked(handshake(e, 40006, now=1.0, client="10.77.1.3"))


def test_handshakes_spaced_wider_than_400_ms_do_not_trip_it() -> None:
    e = engine()
    for i in range(20):
        assert not blocked(handshake(e, 41000 + i, now=i * 0.5))


def test_a_pool_of_three_opened_at_once_and_reused_passes() -> None:
    e = engine()
    for i in range(3):  # XHTTP's xmux: 3 connections at the start, then none
        assert not blocked(handshake(e, 42000 + i, now=0.01 * i))
    assert not blocked(handshake(e, 42003, now=5.0))  # one replaced later


def test_bursts_to_different_names_are_counted_apart() -> None:
    e = engine()
    for i in range(6):
        name = ("a.test", "b.test")[i % 2]
        assert not blocked(handshake(e, 43000 + i, now=0.05 * i, name=name))
