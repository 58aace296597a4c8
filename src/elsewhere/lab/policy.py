"""What the censor blocks and how hard: the techniques switched on and every knob they read.
A frozen value that travels to the censor process as JSON."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, fields, replace
from typing import Any

from elsewhere.errors import ConfigError
from elsewhere.lab import plan

# Wu et al., USENIX Security 2023, §4: the GFW blocked about 26.3 % of connections whose first
# payload met its fully-encrypted rule, and then the (client, server, port) for 180 s.
FET_BLOCK_PROBABILITY = 0.263
FET_RESIDUAL_SECONDS = 180.0
# net4people/bbs#490: TCP to foreign hosting goes silent after roughly 15-20 KB downstream.
FREEZE_BYTES = 16 * 1024
QUEUE_WINDOW = 24  # packets per connection (both ways) the censor sees; the rest stays in-kernel


@dataclass(frozen=True, slots=True)
class CensorConfig:
    techniques: tuple[str, ...] = ()
    seed: int | None = None  # seeds every random choice the censor makes
    queue_window: int = QUEUE_WINDOW
    # dns_poison, sni_block, sni_throttle, proto_sig (plain HTTP Host)
    blocked_names: tuple[str, ...] = plan.BLOCKED_NAMES
    sinkhole: str = plan.SINKHOLE
    sni_action: str = "reset"  # or "drop"
    throttle_drop: float = 0.3  # share of a throttled flow's packets dropped
    # ip_block
    blocked_networks: tuple[str, ...] = plan.BLOCKED_ADDRESSES
    # fet_gfw
    fet_probability: float = FET_BLOCK_PROBABILITY
    fet_residual_seconds: float = FET_RESIDUAL_SECONDS
    # active_probe
    probe_timeout: float = 1.0  # seconds the prober waits for a reaction to each probe
    probe_block_seconds: float = 600.0
    # freeze_16k
    foreign_hosting: tuple[str, ...] = plan.FOREIGN_HOSTING
    freeze_bytes: int = FREEZE_BYTES
    freeze_allowed_names: tuple[str, ...] = plan.FREEZE_ALLOWED_NAMES
    # allowlist
    allowlist: tuple[str, ...] = plan.ALLOWLIST
    # udp_hostile
    udp_hostile_packets: int = 3  # unknown encrypted datagrams let through per flow
    # fingerprint: JA3/JA4 strings and named sets (lab/fingerprints.py); empty means the
    # 2026-06 wave's list: Python's ssl hellos and uTLS's Chrome
    blocked_fingerprints: tuple[str, ...] = ()
    # cooldown
    cooldown_seconds: float = 60.0

    def with_techniques(self, *names: str) -> CensorConfig:
        return replace(self, techniques=tuple(names))

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2)

    @classmethod
    def from_json(cls, text: str) -> CensorConfig:
        raw: dict[str, Any] = json.loads(text)
        known = {f.name for f in fields(cls)}
        unknown = set(raw) - known
        if unknown:
            raise ConfigError(f"unknown censor settings: {', '.join(sorted(unknown))}")
        values: dict[str, Any] = {k: tuple(v) if isinstance(v, list) else v for k, v in raw.items()}
        return cls(**values)
