"""The active prober: how a censor tests a suspected server, and how it reads the reactions.

Probes follow Alice et al., "How China Detects and Blocks Shadowsocks" (IMC 2020, §4): replays
of a real client's first packet, as sent and with bytes changed, and random probes whose lengths
cluster around the sizes that matter to Shadowsocks AEAD (7-8, 11-12, 15-16, 22-23, 32-33,
40-41, 47-51, 221). A server that answers noise, answers a replay, or closes once it has read a
certain number of bytes tells the prober what it is; one that meets every probe with the same
silence (or, for TLS, behaves like any web server) tells it nothing.

`plan_probes` and `judge` are pure; `probe_server` does the I/O."""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from dataclasses import dataclass
from typing import Literal

ProbeKind = Literal["replay", "replay-changed", "random"]
Outcome = Literal["data", "fin", "rst", "timeout", "refused"]

RANDOM_LENGTHS = (1, 2, 5, 7, 8, 11, 12, 15, 16, 22, 23, 32, 33, 40, 41, 47, 48, 49, 50, 51,
                  64, 100, 221, 500)
CHANGED_POSITIONS = (0, 16, 33)  # a byte of the salt/IV, and inside the first length chunk
REPLY_KEPT = 64  # bytes of a reply kept for the log and for judging
CLOSING: tuple[Outcome, ...] = ("fin", "rst")


@dataclass(frozen=True, slots=True)
class Probe:
    kind: ProbeKind
    payload: bytes


@dataclass(frozen=True, slots=True)
class Reaction:
    kind: ProbeKind
    length: int
    outcome: Outcome
    seconds: float
    reply: bytes = b""

    def as_dict(self) -> dict[str, object]:
        return {"kind": self.kind, "length": self.length, "outcome": self.outcome,
                "seconds": round(self.seconds, 3), "reply": self.reply[:16].hex()}


@dataclass(frozen=True, slots=True)
class Judgement:
    flagged: bool
    reason: str


def plan_probes(first_payload: bytes, rng: random.Random) -> list[Probe]:
    """The probes sent to a suspect: replays of `first_payload`, then random bytes."""
    probes = [Probe("replay", first_payload)]
    for position in CHANGED_POSITIONS:
        if position < len(first_payload):
            changed = bytearray(first_payload)
            changed[position] ^= 0xFF
            probes.append(Probe("replay-changed", bytes(changed)))
    probes += [Probe("random", rng.randbytes(length)) for length in RANDOM_LENGTHS]
    return probes


async def send_probe(host: str, port: int, probe: Probe, timeout: float) -> Reaction:
    """One connection, one probe, and what the server did within `timeout` seconds."""
    start = time.monotonic()
    outcome: Outcome
    reply = b""
    writer: asyncio.StreamWriter | None = None
    try:
        reader, opened = await asyncio.wait_for(asyncio.open_connection(host, port), timeout)
        writer = opened
        opened.write(probe.payload)
        await opened.drain()
        reply = await asyncio.wait_for(reader.read(REPLY_KEPT), timeout)
        outcome = "data" if reply else "fin"
    except ConnectionRefusedError:
        outcome = "refused"
    except ConnectionResetError:
        outcome = "rst"
    except TimeoutError:
        outcome = "timeout"
    except OSError:
        outcome = "rst"
    finally:
        if writer is not None:
            writer.close()
            with contextlib.suppress(OSError, TimeoutError):
                await asyncio.wait_for(writer.wait_closed(), timeout)
    return Reaction(probe.kind, len(probe.payload), outcome, time.monotonic() - start, reply)


async def probe_server(
    host: str, port: int, first_payload: bytes, rng: random.Random, timeout: float
) -> list[Reaction]:
    """Send every planned probe at once (each on its own connection); gather the reactions."""
    probes = plan_probes(first_payload, rng)
    return list(await asyncio.gather(*(send_probe(host, port, p, timeout) for p in probes)))


def web_like(reply: bytes) -> bool:
    """An answer any web server gives to nonsense: an HTTP response or a TLS alert record."""
    return reply.startswith(b"HTTP/") or (len(reply) >= 2 and reply[0] == 0x15 and reply[1] == 3)


def judge(reactions: list[Reaction]) -> Judgement:
    """Whether the reactions give the server away, and why."""
    randoms = sorted((r for r in reactions if r.kind == "random"), key=lambda r: r.length)
    replays = [r for r in reactions if r.kind != "random"]
    if any(r.outcome == "refused" for r in reactions):
        return Judgement(False, "the port refused connections")
    for r in replays:
        if r.outcome == "data" and not web_like(r.reply):
            return Judgement(True, f"answered a {r.kind} of {r.length} bytes with data")
    for r in randoms:
        if r.outcome == "data" and not web_like(r.reply):
            return Judgement(True, f"answered {r.length} random bytes with data")
    closing = [r for r in randoms if r.outcome in CLOSING]
    waiting = [r for r in randoms if r.outcome == "timeout"]
    if closing and waiting:
        threshold = min(r.length for r in closing)
        if all(r.length < threshold for r in waiting):
            return Judgement(True, f"closes once it has read {threshold} bytes, waits below")
        return Judgement(True, "reacts differently to probes of different lengths")
    random_outcomes = {r.outcome for r in randoms}
    for r in replays:
        if r.outcome not in random_outcomes and not (r.outcome == "data" and web_like(r.reply)):
            return Judgement(True, f"treats a {r.kind} ({r.outcome}) unlike noise")
    if random_outcomes == {"timeout"}:
        return Judgement(False, "every probe met the same silence")
    return Judgement(False, "reacted to every probe the same way")
