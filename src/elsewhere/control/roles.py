"""The common roles built from a store or an access key, so that nobody has to write a config
file: the server (keys from the store, usage written back) and the client (a local proxy port
through one access key)."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import os
import socket
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from elsewhere.config import Config, from_mapping
from elsewhere.control.acme import (
    AcmeSettings,
    ChallengeResponder,
    certificate_files,
    ensure,
    keep_renewed,
)
from elsewhere.control.certs import load_certificate_files, public_key_pin, self_signed
from elsewhere.control.links import AccessKey, format_access_key, outbound_options
from elsewhere.engine import Engine
from elsewhere.errors import ConfigError
from elsewhere.protocols.base import ServerSettings, protocols, server_inbounds
from elsewhere.store.base import KeyRecord
from elsewhere.store.sqlite import SqliteStore
from elsewhere.store.usage import UsageFlusher, UsageMeter
from elsewhere.web.site import ensure_site

log = logging.getLogger("elsewhere")

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


def port_settings() -> list[str]:
    """The store settings that hold the server inbounds' ports ("port", "port_tls", ...)."""
    return [inbound.port_setting for inbound in server_inbounds().values()]


def _port_text(make: Callable[[], int]) -> str:
    return str(make())


def ensure_settings(store: SqliteStore) -> None:
    """Everything share links carry, chosen once and remembered, so keys made before the first
    server run already point where the server will listen: this machine's address, a port per
    server inbound (443 for TLS when we may bind it) and whatever else the registered
    protocols need (the Shadowsocks 2022 identity key, a secret WebSocket path...)."""
    defaults: dict[str, Callable[[], str]] = {"host": guess_host}
    for inbound in server_inbounds().values():
        defaults[inbound.port_setting] = functools.partial(_port_text, inbound.default_port)
        defaults.update(inbound.settings)
    for protocol in protocols().values():
        defaults.update(protocol.settings)
    for name, make in defaults.items():
        if store.get_setting(name) is None:
            store.set_setting(name, make())


def link_setting_words() -> dict[str, str]:
    """The settings share links carry, and what a person calls each: a change to any of them
    makes the links handed out before stop working."""
    ports = {i.port_setting: i.flag for i in server_inbounds().values()}
    tls = {"tls_name": "TLS name", "tls_pin": "TLS certificate", "ws_path": "WebSocket path"}
    return {"host": "host", **ports, **tls}


def link_settings(store: SqliteStore) -> dict[str, str | None]:
    return {name: store.get_setting(name) for name in link_setting_words()}


def changed_links(before: dict[str, str | None], store: SqliteStore) -> list[str]:
    """What changed since `before` (link_settings) that links handed out then carry."""
    words, now = link_setting_words(), link_settings(store)
    return [words[n] for n, v in before.items() if v is not None and now.get(n) != v]


def settle(store: SqliteStore, data: Path) -> list[str]:
    """Decide now what the first `elsewhere server` would, when no server has run yet: its
    ports, its host (guessed from this machine's addresses), the WebSocket path and, unless a
    server run chose a certificate, the self-signed one whose pins the TLS links carry. So a
    link printed before the first server run works with the server as it will run. Returns what
    was decided, to tell the person; nothing once settled."""
    decided = []
    if store.get_setting("host") is None:
        store.set_setting("host", guess_host())
        decided.append(f"host {store.get_setting('host')} (a guess from this machine's addresses)")
    inbounds = server_inbounds().values()
    fresh = [i for i in inbounds if store.get_setting(i.port_setting) is None]
    ensure_settings(store)
    if fresh:
        ports = ", ".join(f"{i.flag} {store.get_setting(i.port_setting)}" for i in fresh)
        decided.append(f"ports {ports}")
    # a server run chose its certificate (and made the decoy site), even before "tls" was kept
    chosen = ("tls", "tls_pin", "tls_name")
    if all(store.get_setting(name) is None for name in chosen) and not (data / "site").exists():
        certificate(store, data, store.get_setting("host") or "127.0.0.1", None, None)
        decided.append("a self-signed certificate")
    return decided


def add_key(
    store: SqliteStore,
    name: str,
    method: str | None = None,
    limit: int | None = None,
    protocol: str | None = None,
) -> KeyRecord:
    """A new key. The protocol follows from the method where it can (2022-… is Shadowsocks
    2022); Trojan and VLESS keys keep their transport (tcp or ws) in the method field."""
    ensure_settings(store)
    known = protocols()
    if protocol is None:
        claimed = [p for p in known.values() if method and p.claims(method)]
        defaults = [p for p in known.values() if p.default]
        protocol = (claimed or defaults or list(known.values()))[0].name
    kind = known.get(protocol)
    if kind is None:
        raise ConfigError(f"unknown protocol {protocol!r}; choose one of {', '.join(known)}")
    method, secret = kind.new_key(store, method)
    return store.add_key(name, kind.name, method, secret, limit)


def access_key(store: SqliteStore, record: KeyRecord) -> AccessKey:
    ensure_settings(store)
    kind = protocols().get(record.protocol)
    if kind is None:
        raise ConfigError(
            f"key {record.name} ({record.id}) is of protocol {record.protocol!r}, "
            "which this version of elsewhere does not know"
        )
    return kind.access_key(store, record)


def share_link(store: SqliteStore, record: KeyRecord) -> str:
    return format_access_key(access_key(store, record))


def prepare_server(
    store: SqliteStore,
    port: int | None,
    host: str | None,
    listen: str | None,
    *,
    ports: Mapping[str, int | None] | None = None,
    data: Path | None = None,
    cert: tuple[str, str] | None = None,
    domain: str | None = None,
    acme: AcmeSettings | None = None,
) -> tuple[ServerSettings, list[KeyRecord]]:
    """First run: pick ports, remember the host, create a first key, the decoy site the TLS
    port shows strangers (data/site, never regenerated once there) and (unless certificate
    files or a domain with certbot's or Caddy's files are given) a self-signed certificate
    whose pin goes into Trojan and VLESS links. Later runs: reuse all of it. `port` is the
    first server inbound's port (Shadowsocks'); `ports` the others', by port setting."""
    given = {"port": port, **(ports or {}), "host": host, "listen": listen}
    for name, value in given.items():
        if value is not None:
            store.set_setting(name, str(value))
    ensure_settings(store)
    created = []
    if not store.list_keys():
        created.append(add_key(store, "first"))
    settings = ServerSettings(
        listen=store.get_setting("listen") or "0.0.0.0",
        host=store.get_setting("host") or "127.0.0.1",
        idle_timeout=float(store.get_setting("idle_timeout") or 300),
        ports={
            inbound.port_setting: int(store.get_setting(inbound.port_setting) or 0)
            for inbound in server_inbounds().values()
        },
    )
    settings.data = data
    if data is not None:
        # every server shows strangers a site of its own: one shared page would find them all
        settings.site, settings.site_created = ensure_site(data)
    if acme is not None:
        # the certificate is obtained when the server starts (run_server), over http-01
        files = certificate_files(data or Path("."), acme.domains[0])
        settings.cert, settings.key, settings.acme = str(files.cert), str(files.key), acme
        store.set_setting("tls_name", acme.domains[0])
        store.set_setting("tls_pin", None)
        store.set_setting("tls_key_pin", None)
        store.set_setting("tls", "acme")
    elif data is not None:
        settings.cert, settings.key = certificate(store, data, settings.host, cert, domain)
    return settings, created


def certificate(
    store: SqliteStore,
    data: Path,
    host: str,
    files: tuple[str, str] | None,
    domain: str | None,
) -> tuple[str, str]:
    """The TLS certificate files, remembering the SNI and (for a self-signed one) the pin."""
    if files is None and domain is not None:
        found = load_certificate_files(domain)
        files = (str(found.cert), str(found.key))
        store.set_setting("tls_name", domain)
    if files is not None:
        store.set_setting("tls_pin", None)
        store.set_setting("tls_key_pin", None)
        store.set_setting("tls", "given")
        return files
    cert, key, pin = self_signed(data, [store.get_setting("tls_name") or host])
    store.set_setting("tls_pin", pin)
    store.set_setting("tls_key_pin", public_key_pin(cert))
    store.set_setting("tls", "self-signed")
    return str(cert), str(key)


def key_sets(store: SqliteStore) -> dict[str, list[KeyRecord]]:
    sets: dict[str, list[KeyRecord]] = {p: [] for p in protocols()}
    for record in store.list_keys():
        sets.setdefault(record.protocol, []).append(record)
    return sets


def server_config(settings: ServerSettings, store: SqliteStore) -> Config:
    inbounds = [
        config
        for inbound in server_inbounds().values()
        if (config := inbound.config(settings, store)) is not None
    ]
    return from_mapping(
        {
            "inbounds": inbounds,
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


def apply_keys(engine: Engine, store: SqliteStore) -> dict[str, str]:
    """Give every server inbound the store's current keys; returns those it now serves, id to
    name."""
    sets = key_sets(store)
    registered = server_inbounds()
    for inbound in engine.inbounds:
        if (kind := registered.get(inbound.tag)) is not None:
            kind.give_keys(inbound, sets)
    return {r.id: r.name for records in sets.values() for r in records}


async def run_server(
    store: SqliteStore,
    settings: ServerSettings,
    ready: Callable[[Engine], None] | None = None,
    stop: asyncio.Event | None = None,
    config: Config | None = None,
) -> None:
    """Serve until `stop` is set (or forever): keys come from the store, and keys added or
    revoked by `elsewhere keys` in another process take effect within two seconds. `config`
    replaces server_config's (a relay: the same inbounds, its exit as the outbound)."""
    renewals: asyncio.Task[None] | None = None
    responder_server: asyncio.Server | None = None
    if settings.acme is not None:
        responder = ChallengeResponder()
        responder_server = await responder.serve(settings.listen, settings.http_port)
        data = settings.data or Path(".")
        await ensure(settings.acme, data, responder)
        renewals = asyncio.get_running_loop().create_task(
            keep_renewed(settings.acme, data, responder)
        )
    meter = UsageMeter()
    flusher = UsageFlusher(meter, store)
    await flusher.start()
    config = config or server_config(settings, store)
    engine = Engine(config, meter=meter, over_limit=flusher.over_limit)
    known = apply_keys(engine, store)
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
                current = await asyncio.to_thread(apply_keys, engine, store)
                for gone in known.keys() - current.keys():
                    closed = engine.close_user(gone)
                    log.info("key %s revoked; closed %d open connections", gone, closed)
                for added in sorted(current.keys() - known.keys()):
                    # so that whoever added it knows when a link of it starts to work
                    log.info("key %s (%s) added; served from now on", current[added], added)
                known = current
    finally:
        await flusher.close()
        if renewals is not None:
            renewals.cancel()
        if responder_server is not None:
            responder_server.close()


def proxy_outbound(key: AccessKey) -> dict[str, Any]:
    """The outbound that carries a client's traffic to the server of `key`."""
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
