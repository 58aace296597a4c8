"""How the prober reads a suspect's reactions (Alice et al., IMC 2020): silence tells nothing,
a byte-count threshold or an answer to noise gives the server away."""

from __future__ import annotations

import random

import pytest

from elsewhere.lab.prober import RANDOM_LENGTHS, Outcome, Reaction, judge, plan_probes

pytestmark = pytest.mark.lab

FIRST = bytes(range(256))[:120]


def reactions(random_outcome: dict[int, Outcome] | Outcome, replay: Outcome = "timeout",
              reply: bytes = b"") -> list[Reaction]:
    def outcome(length: int) -> Outcome:
        return random_outcome if isinstance(random_outcome, str) else random_outcome[length]

    made = [Reaction("replay", len(FIRST), replay, 1.0, reply if replay == "data" else b"")]
    made += [Reaction("random", n, outcome(n), 1.0, reply if outcome(n) == "data" else b"")
             for n in RANDOM_LENGTHS]
    return made


def test_the_plan_replays_the_first_packet_as_sent_and_changed_then_sends_noise() -> None:
    probes = plan_probes(FIRST, random.Random(1))
    assert probes[0].payload == FIRST
    changed = [p for p in probes if p.kind == "replay-changed"]
    assert changed and all(p.payload != FIRST and len(p.payload) == len(FIRST) for p in changed)
    assert sorted(len(p.payload) for p in probes if p.kind == "random") == sorted(RANDOM_LENGTHS)


def test_a_server_that_meets_every_probe_with_silence_is_not_flagged() -> None:
    verdict = judge(reactions("timeout"))
    assert not verdict.flagged and "silence" in verdict.reason


def test_a_server_that_closes_after_fifty_bytes_is_flagged_with_the_threshold() -> None:
    verdict = judge(reactions({n: "fin" if n >= 50 else "timeout" for n in RANDOM_LENGTHS},
                              replay="fin"))
    assert verdict.flagged and "50 bytes" in verdict.reason


def test_a_server_that_answers_noise_or_a_replay_is_flagged() -> None:
    assert judge(reactions("data", reply=b"\x8a\x11garbage")).flagged
    assert judge(reactions("timeout", replay="data", reply=b"\x01\x02")).flagged


def test_a_server_that_answers_like_any_web_server_is_not_flagged() -> None:
    alert = b"\x15\x03\x03\x00\x02\x02\x46"
    assert not judge(reactions("data", replay="data", reply=alert)).flagged
    assert not judge(reactions("data", replay="data", reply=b"HTTP/1.1 400 Bad Request")).flagged


def test_a_server_that_treats_a_replay_unlike_noise_is_flagged() -> None:
    verdict = judge(reactions("timeout", replay="rst"))
    assert verdict.flagged and "replay" in verdict.reason
