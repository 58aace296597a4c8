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
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from elsewhere.codecs.shadowsocks import METHODS, Cipher
from elsewhere.codecs.ss2022 import generate_psk
from elsewhere.codecs.trojan import password_hash as trojan_hash
from elsewhere.codecs.vless import parse_uuid
from elsewhere.config import Config, from_mapping
from elsewhere.control.acme import (
    AcmeSettings,
    ChallengeResponder,
    certificate_files,
    ensure,
    keep_renewed,
)
from elsewhere.control.certs import load_certificate_files, self_signed
from elsewhere.control.links import AccessKey, format_access_key
from elsewhere.control.site import ensure_site
from elsewhere.engine import Engine
from elsewhere.errors import ConfigError
from elsewhere.inbounds.shadowsocks import ServerKey, ShadowsocksInbound
from elsewhere.inbounds.ss2022 import Ss2022Inbound
from elsewhere.inbounds.tls import TlsInbound, Users
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


PROTOCOLS = ("ss", "ss2022", "trojan", "vless")
SS2022_METHOD = "2022-blake3-aes-256-gcm"
TLS_TRANSPORTS = ("tcp", "ws")
# the settings that hold each protocol family's port
PORT_SETTING = {"ss": "port", "ss2022": "port_ss2022", "trojan": "port_tls", "vless": "port_tls"}


def random_port() -> int:
    """A high port nobody expects (like Outline's), free for TCP and UDP right now."""
    while True:
        port = secrets.randbelow(40000) + 20000
        try:
            for kind in (socket.SOCK_STREAM, socket.SOCK_DGRAM):
                with socket.socket(socket.AF_INET, kind) as probe:
                    probe.bind(("", port))
        except OSError:
            continue
        return port


def ensure_settings(store: SqliteStore) -> None:
    """Everything share links carry, chosen once and remembered, so keys made before the first
    server run already point where the server will listen: this machine's address, a port per
    protocol family (443 for TLS when we may bind it), the Shadowsocks 2022 identity key and a
    secret WebSocket path."""
    defaults = {
        "host": guess_host,
        "port": lambda: str(random_port()),
        "port_ss2022": lambda: str(random_port()),
        "port_tls": lambda: "443" if os.geteuid() == 0 else str(random_port()),
        "ss2022_method": lambda: SS2022_METHOD,
        "ss2022_psk": lambda: generate_psk(SS2022_METHOD),
        "ws_path": lambda: "/" + secrets.token_urlsafe(12),
    }
    for name, make in defaults.items():
        if store.get_setting(name) is None:
            store.set_setting(name, make())


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
    if protocol is None:
        protocol = "ss2022" if method and method.startswith("2022-") else "ss"
    if protocol not in PROTOCOLS:
        raise ConfigError(f"unknown protocol {protocol!r}; choose one of {', '.join(PROTOCOLS)}")
    if protocol == "ss":
        method = method or DEFAULT_METHOD
        if method not in METHODS:
            raise ConfigError(f"unknown method {method!r}; choose one of {', '.join(METHODS)}")
        return store.add_key(name, "ss", method, new_password(), limit)
    if protocol == "ss2022":
        server_method = store.get_setting("ss2022_method") or SS2022_METHOD
        if method not in (None, server_method):
            raise ConfigError(
                f"this server's Shadowsocks 2022 port uses {server_method}; "
                "every 2022 key on it must use the same method"
            )
        return store.add_key(name, "ss2022", server_method, generate_psk(server_method), limit)
    transport = method or "tcp"
    if transport not in TLS_TRANSPORTS:
        raise ConfigError(f"{protocol} keys go over tcp or ws, not {transport!r}")
    secret = new_password() if protocol == "trojan" else str(uuid.uuid4())
    return store.add_key(name, protocol, transport, secret, limit)


def access_key(store: SqliteStore, record: KeyRecord) -> AccessKey:
    ensure_settings(store)
    host = store.get_setting("host") or "127.0.0.1"
    port = int(store.get_setting(PORT_SETTING[record.protocol]) or 0)
    if record.protocol in ("ss", "ss2022"):
        password = record.secret
        if record.protocol == "ss2022":
            password = f"{store.get_setting('ss2022_psk')}:{record.secret}"
        return AccessKey(
            protocol="ss",
            method=record.method,
            password=password,
            host=host,
            port=port,
            name=record.name,
        )
    extra = {"security": "tls", "sni": store.get_setting("tls_name") or host, "type": record.method}
    if record.method == "ws":
        extra["path"] = store.get_setting("ws_path") or "/"
        extra["host"] = extra["sni"]
    if pin := store.get_setting("tls_pin"):
        extra["pcs"] = pin
        extra["allowInsecure"] = "1"  # older apps know no pcs; they still connect
    return AccessKey(
        protocol=record.protocol,
        method="",
        password=record.secret,
        host=host,
        port=port,
        name=record.name,
        extra=extra,
    )


def share_link(store: SqliteStore, record: KeyRecord) -> str:
    return format_access_key(access_key(store, record))


@dataclass
class ServerSettings:
    listen: str
    port: int
    host: str
    idle_timeout: float
    port_ss2022: int = 0
    port_tls: int = 0
    allow_private: bool = False
    cert: str | None = None
    key: str | None = None
    acme: AcmeSettings | None = None
    http_port: int = 80  # where the ACME http-01 answers are served
    data: Path | None = None
    site: Path | None = None  # this server's own decoy site; None: the packaged one
    site_created: bool = False


def prepare_server(
    store: SqliteStore,
    port: int | None,
    host: str | None,
    listen: str | None,
    *,
    port_ss2022: int | None = None,
    port_tls: int | None = None,
    data: Path | None = None,
    cert: tuple[str, str] | None = None,
    domain: str | None = None,
    acme: AcmeSettings | None = None,
) -> tuple[ServerSettings, list[KeyRecord]]:
    """First run: pick ports, remember the host, create a first key, the decoy site the TLS
    port shows strangers (data/site, never regenerated once there) and (unless certificate
    files or a domain with certbot's or Caddy's files are given) a self-signed certificate
    whose pin goes into Trojan and VLESS links. Later runs: reuse all of it."""
    for name, value in (
        ("port", port),
        ("port_ss2022", port_ss2022),
        ("port_tls", port_tls),
        ("host", host),
        ("listen", listen),
    ):
        if value is not None:
            store.set_setting(name, str(value))
    ensure_settings(store)
    created = []
    if not store.list_keys():
        created.append(add_key(store, "first"))
    settings = ServerSettings(
        listen=store.get_setting("listen") or "0.0.0.0",
        port=int(store.get_setting("port") or 0),
        host=store.get_setting("host") or "127.0.0.1",
        idle_timeout=float(store.get_setting("idle_timeout") or 300),
        port_ss2022=int(store.get_setting("port_ss2022") or 0),
        port_tls=int(store.get_setting("port_tls") or 0),
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
        return files
    cert, key, pin = self_signed(data, [store.get_setting("tls_name") or host])
    store.set_setting("tls_pin", pin)
    return str(cert), str(key)


def key_sets(store: SqliteStore) -> dict[str, list[KeyRecord]]:
    sets: dict[str, list[KeyRecord]] = {p: [] for p in PROTOCOLS}
    for record in store.list_keys():
        sets.setdefault(record.protocol, []).append(record)
    return sets


def server_config(settings: ServerSettings, store: SqliteStore) -> Config:
    inbounds: list[dict[str, Any]] = [
        {
            "type": "shadowsocks",
            "tag": "ss",
            "listen": settings.listen,
            "port": settings.port,
            "keys": [],
        },
        {
            "type": "ss2022",
            "tag": "ss2022",
            "listen": settings.listen,
            "port": settings.port_ss2022,
            "method": store.get_setting("ss2022_method"),
            "psk": store.get_setting("ss2022_psk"),
            "users": [],
        },
    ]
    if settings.cert and settings.key:
        inbounds.append(
            {
                "type": "tls",
                "tag": "tls",
                "listen": settings.listen,
                "port": settings.port_tls,
                "cert": settings.cert,
                "key": settings.key,
                "fallback": "decoy",
                "websocket": {"path": store.get_setting("ws_path")},
            }
        )
        if settings.site is not None:
            inbounds[-1]["decoy"] = str(settings.site)
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


def apply_keys(engine: Engine, store: SqliteStore) -> set[str]:
    """Give every inbound the store's current keys; returns the ids it now serves."""
    sets = key_sets(store)
    for inbound in engine.inbounds:
        if isinstance(inbound, ShadowsocksInbound):
            inbound.set_keys(
                [ServerKey(r.id, Cipher.from_password(r.method, r.secret)) for r in sets["ss"]]
            )
        elif isinstance(inbound, Ss2022Inbound):
            inbound.set_users({r.id: r.secret for r in sets["ss2022"]})
        elif isinstance(inbound, TlsInbound):
            inbound.set_users(
                Users(
                    trojan={trojan_hash(r.secret): r.id for r in sets["trojan"]},
                    vless={parse_uuid(r.secret): r.id for r in sets["vless"]},
                )
            )
    return {r.id for records in sets.values() for r in records}


async def run_server(
    store: SqliteStore,
    settings: ServerSettings,
    ready: Callable[[Engine], None] | None = None,
    stop: asyncio.Event | None = None,
) -> None:
    """Serve until `stop` is set (or forever): keys come from the store, and keys added or
    revoked by `elsewhere keys` in another process take effect within two seconds."""
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
    engine = Engine(server_config(settings, store), meter=meter, over_limit=flusher.over_limit)
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
                for gone in known - current:
                    closed = engine.close_user(gone)
                    log.info("key %s revoked; closed %d open connections", gone, closed)
                known = current
    finally:
        await flusher.close()
        if renewals is not None:
            renewals.cancel()
        if responder_server is not None:
            responder_server.close()


def proxy_outbound(key: AccessKey) -> dict[str, Any]:
    """The outbound that carries a client's traffic to the server of `key`."""
    if key.protocol == "ss":
        kind = "ss2022" if key.method.startswith("2022-") else "shadowsocks"
        return {"type": kind, "tag": "proxy", "key": format_access_key(key)}
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
