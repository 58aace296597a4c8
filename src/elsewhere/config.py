"""The config file (TOML): inbounds, outbounds, rules and timeouts. Validation here gives a
person one line that says what is wrong and where; the protocol modules check their own
options when the engine builds them."""

from __future__ import annotations

import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from elsewhere.errors import ConfigError

DEFAULT_IDLE_TIMEOUT = 300.0


@dataclass(frozen=True)
class Config:
    inbounds: tuple[Mapping[str, Any], ...]
    outbounds: tuple[Mapping[str, Any], ...]
    rules: tuple[Mapping[str, Any], ...] = ()
    final: str | None = None
    idle_timeout: float = DEFAULT_IDLE_TIMEOUT
    data_dir: str | None = None
    extra: Mapping[str, Any] = field(default_factory=dict)

    @property
    def final_outbound(self) -> str:
        return self.final if self.final is not None else str(self.outbounds[0]["tag"])


def _tagged(items: Any, kind: str) -> tuple[dict[str, Any], ...]:
    if not isinstance(items, list) or not all(isinstance(i, dict) for i in items):
        raise ConfigError(f"[[{kind}]] must be a list of tables")
    out = []
    seen: set[str] = set()
    for index, item in enumerate(items):
        if "type" not in item:
            raise ConfigError(f"{kind} {index + 1} has no type")
        item = dict(item)
        item.setdefault(
            "tag", item["type"] if item["type"] not in seen else f"{item['type']}-{index}"
        )
        if item["tag"] in seen:
            raise ConfigError(f'{kind}: tag "{item["tag"]}" is used twice')
        seen.add(item["tag"])
        out.append(item)
    return tuple(out)


def from_mapping(data: Mapping[str, Any]) -> Config:
    known = {"inbounds", "outbounds", "rules", "route", "timeouts", "data_dir"}
    unknown = set(data) - known
    if unknown:
        raise ConfigError(f"unknown section {sorted(unknown)[0]!r}; sections are {sorted(known)}")
    inbounds = _tagged(data.get("inbounds", []), "inbounds")
    outbounds = _tagged(data.get("outbounds", []), "outbounds")
    if not inbounds:
        raise ConfigError('no [[inbounds]]: add at least one, e.g. type = "mixed"')
    if not outbounds:
        outbounds = ({"type": "direct", "tag": "direct"},)
    tags = {o["tag"] for o in outbounds}
    route = data.get("route", {})
    final = route.get("final")
    if final is not None and final not in tags:
        raise ConfigError(f'[route] final = "{final}" is not an outbound tag ({sorted(tags)})')
    rules = data.get("rules", [])
    if not isinstance(rules, list):
        raise ConfigError("[[rules]] must be a list of tables")
    timeouts = data.get("timeouts", {})
    idle = timeouts.get("idle", DEFAULT_IDLE_TIMEOUT)
    if not isinstance(idle, int | float) or idle <= 0:
        raise ConfigError("[timeouts] idle must be a positive number of seconds")
    return Config(
        inbounds=inbounds,
        outbounds=outbounds,
        rules=tuple(rules),
        final=final,
        idle_timeout=float(idle),
        data_dir=data.get("data_dir"),
    )


def load(path: str | Path) -> Config:
    path = Path(path)
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise ConfigError(f"config file {path} does not exist") from None
    except OSError as exc:
        raise ConfigError(f"cannot read config file {path}: {exc.strerror}") from None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from None
    try:
        return from_mapping(data)
    except ConfigError as exc:
        raise ConfigError(f"{path}: {exc}") from None
