"""The common roles built from a store or an access key, so that nobody has to write a config
file: the server (keys from the store, usage written back) and the client (a local proxy port
through one access key)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import secrets
import socket
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from elsewhere.codecs.shadowsocks import METHODS, Cipher
from elsewhere.config import Config, from_mapping
from elsewhere.control.links import AccessKey, format_access_key
from elsewhere.engine import Engine
from elsewhere.errors import ConfigError
from elsewhere.inbounds.shadowsocks import ServerKey, ShadowsocksInbound
from elsewhere.store.base import KeyRecord
from elsewhere.store.sqlite import SqliteStore
from elsewhere.store.usage import UsageFlusher, UsageMeter

log = logging.getLogger("elsewhere")

DEFAULT_METHOD = "chacha20-ietf-poly1305"  # what Outline hands out: fast on phones without AES
STORE_FILE = "elsewhere.db"
RELOAD_INTERVAL = 2.0


def data_dir(explicit: str | None) -> Path:
    if explicit:
        return Path(explicit).expanduser()
    if env := os.environ.get("ELSEWHERE_HOME"):
        return Path(env).expanduser()
    base = os.environ.get("XDG_DATA_HOME") or os.path.join(os.path.expanduser("~"), ".local/share")
    return Path(base) / "elsewhere"


def open_store(directory: Path) -> SqliteStore:
    return SqliteStore(directory / STORE_FILE)


def new_password() -> str:
    return secrets.token_urlsafe(16)


def guess_host() -> str:
    """An address of this machine that others might reach; the operator should confirm it
    with --host (we never ask an outside service)."""
    try:
        infos = socket.getaddrinfo(socket.gethostname(), None, socket.AF_INET)
    except OSError:
        infos = []
    for info in infos:
        addr = str(info[4][0])
        if not addr.startswith("127."):
            return addr
    return "127.0.0.1"


def add_key(
    store: SqliteStore, name: str, method: str = DEFAULT_METHOD, limit: int | None = None
) -> KeyRecord:
    if method not in METHODS:
        raise ConfigError(f"unknown method {method!r}; choose one of {', '.join(METHODS)}")
    return store.add_key(name, "ss", method, new_password(), limit)


def ensure_address(store: SqliteStore) -> tuple[str, int]:
    """The host and port share links carry: chosen once (a random high port, like Outline's,
    and this machine's address) and remembered, so keys made before the first server run
    already point where the server will listen."""
    if store.get_setting("port") is None:
        store.set_setting("port", str(secrets.randbelow(40000) + 20000))
    if store.get_setting("host") is None:
        store.set_setting("host", guess_host())
    return store.get_setting("host") or "127.0.0.1", int(store.get_setting("port") or 0)


def access_key(store: SqliteStore, record: KeyRecord) -> AccessKey:
    host, port = ensure_address(store)
    return AccessKey(
        protocol="ss",
        method=record.method,
        password=record.secret,
        host=host,
        port=port,
        name=record.name,
    )


def share_link(store: SqliteStore, record: KeyRecord) -> str:
    return format_access_key(access_key(store, record))


@dataclass
class ServerSettings:
    listen: str
    port: int
    host: str
    idle_timeout: float
    allow_private: bool = False


def prepare_server(
    store: SqliteStore, port: int | None, host: str | None, listen: str | None
) -> tuple[ServerSettings, list[KeyRecord]]:
    """First run: pick a port, remember the host, create a first key. Later runs: reuse."""
    if port is not None:
        store.set_setting("port", str(port))
    if host is not None:
        store.set_setting("host", host)
    ensure_address(store)
    if listen is not None:
        store.set_setting("listen", listen)
    created = []
    if not store.list_keys():
        created.append(add_key(store, "first"))
    settings = ServerSettings(
        listen=store.get_setting("listen") or "0.0.0.0",
        port=int(store.get_setting("port") or 0),
        host=store.get_setting("host") or "127.0.0.1",
        idle_timeout=float(store.get_setting("idle_timeout") or 300),
    )
    return settings, created


def server_keys(store: SqliteStore) -> list[ServerKey]:
    return [
        ServerKey(r.id, Cipher.from_password(r.method, r.secret))
        for r in store.list_keys()
        if r.protocol == "ss"
    ]


def server_config(settings: ServerSettings) -> Config:
    return from_mapping(
        {
            "inbounds": [
                {
                    "type": "shadowsocks",
                    "tag": "ss",
                    "listen": settings.listen,
                    "port": settings.port,
                    "keys": [],
                }
            ],
            "outbounds": [
                {
                    "type": "direct",
                    "tag": "direct",
                    "private": "allow" if settings.allow_private else "deny",
                }
            ],
            "timeouts": {"idle": settings.idle_timeout},
        }
    )


async def run_server(
    store: SqliteStore,
    settings: ServerSettings,
    ready: Callable[[Engine], None] | None = None,
    stop: asyncio.Event | None = None,
) -> None:
    """Serve until `stop` is set (or forever): keys come from the store, and keys added or
    revoked by `elsewhere keys` in another process take effect within two seconds."""
    meter = UsageMeter()
    flusher = UsageFlusher(meter, store)
    await flusher.start()
    engine = Engine(server_config(settings), meter=meter, over_limit=flusher.over_limit)
    inbound = engine.inbounds[0]
    assert isinstance(inbound, ShadowsocksInbound)
    known = {k.id for k in server_keys(store)}
    inbound.set_keys(server_keys(store))
    generation = store.generation()
    stop = stop or asyncio.Event()
    try:
        async with engine:
            if ready is not None:
                ready(engine)
            while not stop.is_set():
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), RELOAD_INTERVAL)
                now = await asyncio.to_thread(store.generation)
                if now == generation:
                    continue
                generation = now
                keys = await asyncio.to_thread(server_keys, store)
                inbound.set_keys(keys)
                current = {k.id for k in keys}
                for gone in known - current:
                    closed = engine.close_user(gone)
                    log.info("key %s revoked; closed %d open connections", gone, closed)
                known = current
    finally:
        await flusher.close()


def proxy_outbound(key: AccessKey) -> dict[str, Any]:
    """The outbound that carries a client's traffic to the server of `key`."""
    if key.protocol == "ss":
        return {"type": "shadowsocks", "tag": "proxy", "key": format_access_key(key)}
    from elsewhere.control.links_tls import outbound_options

    return {**outbound_options(key), "tag": "proxy"}


def client_config(key: AccessKey, listen: str, port: int, rules: list[dict[str, Any]]) -> Config:
    return from_mapping(
        {
            "inbounds": [{"type": "mixed", "tag": "mixed", "listen": listen, "port": port}],
            "outbounds": [
                proxy_outbound(key),
                {"type": "direct", "tag": "direct", "private": "allow"},
                {"type": "block", "tag": "block"},
            ],
            "rules": rules,
            "route": {"final": "proxy"},
        }
    )
