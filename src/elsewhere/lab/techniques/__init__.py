"""The censor's techniques: one module per technique, each with one entry point,
`technique(config) -> Technique`. The censor asks every switched-on technique about each queued
packet; a technique answers with a Decision or None. Adding a technique is adding a module here
and its name to NAMES.

Verdicts reach the kernel as packet marks that the censor's iptables chain turns into
connection marks, so the rest of a blocked flow is dropped in the kernel without Python."""

from __future__ import annotations

import enum
import importlib
import random
from dataclasses import dataclass
from typing import Protocol

from elsewhere.errors import ConfigError
from elsewhere.lab.flows import Endpoint, Flow
from elsewhere.lab.packet import Packet
from elsewhere.lab.policy import CensorConfig

NAMES: tuple[str, ...] = (
    "dns_poison", "sni_block", "sni_throttle", "ip_block", "proto_sig", "fet_gfw",
    "active_probe", "freeze_16k", "allowlist", "udp_hostile", "fingerprint", "cooldown",
    "handshake_rate",
)

# Packet mark bits (the censor sets them on a queued packet, iptables saves them on the conntrack).
MARK_BLOCK = 0x1  # drop this flow from now on
MARK_RESET = 0x2  # answer with a TCP RST, then as MARK_BLOCK
MARK_EXEMPT = 0x4  # spared by the 16 KB freeze (allowlisted SNI)
MARK_THROTTLE = 0x8  # lose a share of packets
MARK_JUDGED = 0x10  # already seen by the censor: do not queue this packet again


class Action(enum.Enum):
    BLOCK = "block"  # drop this packet and the rest of the flow
    RESET = "reset"  # TCP: reset the client, then BLOCK; UDP: BLOCK
    DROP = "drop"  # drop this one packet only (a forged answer replaces it)
    THROTTLE = "throttle"
    EXEMPT = "exempt"

    @property
    def stops_flow(self) -> bool:
        return self in (Action.BLOCK, Action.RESET)


@dataclass(frozen=True, slots=True)
class Decision:
    technique: str
    action: Action
    reason: str
    inject: tuple[bytes, ...] = ()  # raw IPv4 packets the censor sends (forged answers)


class Context(Protocol):
    """What a technique may use besides the packet: settings, time, seeded randomness, and the
    censor's shared memory of blocked servers and pending probes."""

    config: CensorConfig
    now: float
    rng: random.Random

    def block_server(
        self, server: Endpoint, seconds: float, technique: str, reason: str,
        client: str | None = None,
    ) -> None:
        """Block new flows to `server` (from `client` only, if given) for `seconds`."""

    def request_probe(self, server: Endpoint, first_payload: bytes) -> None:
        """Ask the prober to probe `server`, replaying `first_payload` among random probes."""

    def note(self, technique: str, flow: Flow, reason: str) -> None:
        """Log that `technique` recognised something in `flow` without acting on it."""


class Technique(Protocol):
    name: str

    def inspect(self, packet: Packet, flow: Flow, upstream: bool, ctx: Context) -> Decision | None:
        """Look at one queued packet of `flow`; decide, or return None to let it pass."""

    def notice(self, decision: Decision, flow: Flow, ctx: Context) -> None:
        """Hear about a decision any technique made (cooldown uses this)."""

    def rules(self) -> list[str]:
        """iptables rules (`-A CENSOR ...`) this technique needs in the kernel."""


class BaseTechnique:
    """Defaults for the optional parts of Technique."""

    name = "base"

    def __init__(self, config: CensorConfig) -> None:
        self.config = config

    def decide(self, action: Action, reason: str, inject: tuple[bytes, ...] = ()) -> Decision:
        return Decision(self.name, action, reason, inject)

    def notice(self, decision: Decision, flow: Flow, ctx: Context) -> None:
        return None

    def rules(self) -> list[str]:
        return []


def load(name: str, config: CensorConfig) -> Technique:
    """The technique called `name`, configured; ConfigError lists the known names."""
    if name not in NAMES:
        raise ConfigError(f"unknown censor technique {name!r}; known: {', '.join(NAMES)}")
    module = importlib.import_module(f"{__name__}.{name}")
    technique: Technique = module.technique(config)
    return technique


def name_matches(name: str, blocked: tuple[str, ...]) -> bool:
    """`name` is a blocked name or a subdomain of one (as DNS and SNI block lists work)."""
    name = name.lower().rstrip(".")
    return any(name == b or name.endswith("." + b) for b in blocked)
