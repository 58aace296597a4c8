"""The operator's store (DESIGN.md §2.6): access keys, their data limits and usage, and a few
server-wide settings, behind one small interface that SQLite and PostgreSQL both implement."""

from __future__ import annotations

import re
import secrets
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

from elsewhere.errors import ConfigError

# A key's protocol is a name elsewhere.protocols registers ("ss", "vless", ...); the store only
# checks that it is one.
KeyProtocol = str
PROTOCOL_NAME = re.compile(r"[a-z][a-z0-9-]{0,31}")

# 8 hex digits: short enough to type, 2**32 ids make a collision among an operator's keys rare
# (and the stores retry on one).
KEY_ID_BYTES = 4
KEY_ID_PATTERN = re.compile(r"[0-9a-f]{8}")
MAX_NAME_LENGTH = 64


@dataclass(frozen=True, slots=True)
class KeyRecord:
    """One access key as the store holds it. `revoked` is the revocation time or None; traffic
    counters are totals since the key was made."""

    id: str
    name: str
    protocol: KeyProtocol
    method: str
    # repr=False: a record printed to a log must not carry the secret (DESIGN.md §4 Safety).
    secret: str = field(repr=False)
    created: float
    revoked: float | None
    data_limit: int | None
    bytes_up: int
    bytes_down: int

    @property
    def active(self) -> bool:
        return self.revoked is None

    @property
    def bytes_total(self) -> int:
        return self.bytes_up + self.bytes_down

    @property
    def over_limit(self) -> bool:
        """True once the key has used all of its data limit (a limit of 0 allows nothing)."""
        return self.data_limit is not None and self.bytes_total >= self.data_limit


@runtime_checkable
class Store(Protocol):
    """Keys, limits, usage and settings. Every write is one atomic transaction; a person's
    mistake (unknown key, duplicate name, negative limit) raises ConfigError with one line.

    Keys are never deleted, only revoked, so usage arriving after a revocation is still kept.
    A key is named on the command line by its id or by the name of an active key."""

    def add_key(
        self,
        name: str,
        protocol: str,
        method: str,
        secret: str,
        data_limit: int | None = None,
    ) -> KeyRecord: ...

    def get_key(self, id_or_name: str) -> KeyRecord: ...

    def list_keys(self, include_revoked: bool = False) -> list[KeyRecord]: ...

    def revoke_key(self, id_or_name: str) -> KeyRecord: ...

    def set_limit(self, id_or_name: str, data_limit: int | None) -> KeyRecord: ...

    def add_usage(self, batch: Mapping[str, tuple[int, int]]) -> None:
        """Add (bytes up, bytes down) per key id, all in one transaction; ids of keys the store
        does not know are dropped (they cannot be retried into existence)."""
        ...

    def usage(self, id_or_name: str) -> tuple[int, int]: ...

    def generation(self) -> int:
        """A counter bumped by every key change (add, revoke, limit), in the same transaction, so
        a running server polls this one number to notice changes made by another process."""
        ...

    def get_setting(self, name: str, default: str | None = None) -> str | None: ...

    def set_setting(self, name: str, value: str | None) -> None:
        """Store a server-wide value (port, host, certificate pin); None removes it."""
        ...

    def settings(self) -> dict[str, str]: ...

    def close(self) -> None: ...


def new_key_id() -> str:
    return secrets.token_hex(KEY_ID_BYTES)


def check_name(name: str) -> str:
    """The name as stored (surrounding blanks dropped), or ConfigError saying what is wrong."""
    if not isinstance(name, str):
        raise ConfigError(f"a key name must be text, not {type(name).__name__}")
    name = name.strip()
    if not name:
        raise ConfigError("a key name cannot be empty; give the key a name like 'alice-phone'")
    if len(name) > MAX_NAME_LENGTH:
        raise ConfigError(
            f"key name {name[:20]!r}... is too long; keep it to {MAX_NAME_LENGTH} characters"
        )
    if not name.isprintable():
        raise ConfigError(f"key name {name!r} contains control characters; use plain text")
    # A name that reads as an id would make `elsewhere keys revoke <x>` ambiguous.
    if KEY_ID_PATTERN.fullmatch(name.lower()):
        raise ConfigError(
            f"key name {name!r} looks like a key id (8 hex digits); pick another name"
        )
    return name


def check_protocol(protocol: str) -> KeyProtocol:
    if not isinstance(protocol, str) or not PROTOCOL_NAME.fullmatch(protocol):
        raise ConfigError(f"{protocol!r} is not a protocol name (like ss or vless)")
    return protocol


def check_limit(data_limit: int | None) -> int | None:
    if data_limit is None:
        return None
    if isinstance(data_limit, bool) or not isinstance(data_limit, int):
        raise ConfigError(f"a data limit is a whole number of bytes, not {data_limit!r}")
    if data_limit < 0:
        raise ConfigError(
            f"a data limit cannot be negative ({data_limit}); use 0 to allow no "
            "data or remove the limit"
        )
    return data_limit


def check_secret(secret: str) -> str:
    if not isinstance(secret, str) or not secret:
        raise ConfigError("a key needs a non-empty secret")
    return secret


def check_usage(batch: Mapping[str, tuple[int, int]]) -> list[tuple[int, int, str]]:
    """The batch as (up, down, id) rows without empty entries; a negative count is a bug in the
    caller, not a person's mistake, so it raises ValueError."""
    rows = []
    for key_id, (up, down) in batch.items():
        if up < 0 or down < 0:
            raise ValueError(f"negative usage for key {key_id}: up={up} down={down}")
        if up or down:
            rows.append((up, down, key_id))
    return rows
