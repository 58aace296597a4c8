"""The relay role (issue 9): a machine inside the censored country that the censor lets through
(a domestic address), in front of the real exit abroad. It is the server role with another
final outbound: the same inbounds, keys from its own store, stealth toward strangers, and every
session, TCP and UDP, carried to the exit over the client transport the exit's link names
(outbounds.exit). Nothing leaves it directly unless the operator names domains for that.

    elsewhere relay 'ss://…@exit.example:8388'     # on the domestic machine
    elsewhere keys add alice                       # links that point at the relay

Accounting: every user's key lives on the relay, where usage is counted and limits apply;
the exit sees one client, the relay's own key. One exit key per relay key would tell the exit
who is who, and every key would have to be made twice; an operator who wants the exit to
count per user runs one relay per exit key instead. A relay's exit may itself be a relay
(relay → relay → exit): chains are made of links, nothing else."""

from __future__ import annotations

import argparse
import asyncio
import shlex
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

from elsewhere import __version__
from elsewhere.config import Config, from_mapping
from elsewhere.control import roles
from elsewhere.control.links import AccessKey, parse_access_key
from elsewhere.control.status import human_bytes
from elsewhere.engine import Engine
from elsewhere.errors import ConfigError
from elsewhere.outbounds.exit import ExitOutbound, parse_check
from elsewhere.protocols.base import ServerSettings, server_inbounds
from elsewhere.store.base import KeyRecord
from elsewhere.store.sqlite import SqliteStore

if TYPE_CHECKING:
    from elsewhere.control.acme import AcmeSettings

EXIT_TAG = "exit"
EXIT_SETTING = "exit_link"  # remembered, so `elsewhere relay` alone restarts it
CHECK_SETTING = "exit_check"
PREFIX = f'outbound "{EXIT_TAG}": the exit link: '  # ExitOutbound's own wording, said once
RELAY_KEY_NAME = "relay"  # the key `elsewhere server` prints the relay command with, if any
TLS_PORT_SETTING = "port_tls"  # the TLS inbound's (protocols.tls)


def relay_config(
    settings: ServerSettings,
    store: SqliteStore,
    exit_link: str,
    check: str | None = None,
    direct: list[str] | None = None,
) -> Config:
    """The server's inbounds; the exit as the final outbound; `direct` domains (and their
    subdomains) reached from here, never private addresses."""
    outbound: dict[str, Any] = {"type": "exit", "tag": EXIT_TAG, "link": exit_link}
    if check:
        outbound["check"] = check
    outbounds = [outbound]
    rules: list[dict[str, Any]] = []
    if direct:
        outbounds.append({"type": "direct", "tag": "direct", "private": "deny"})
        rules.append({"domain_suffix": direct, "outbound": "direct"})
    base = roles.server_config(settings, store)
    return from_mapping(
        {
            "inbounds": [dict(inbound) for inbound in base.inbounds],
            "outbounds": outbounds,
            "rules": rules,
            "route": {"final": EXIT_TAG},
            "timeouts": {"idle": base.idle_timeout},
        }
    )


def exit_of(engine: Engine) -> ExitOutbound:
    outbound = engine.outbounds[EXIT_TAG]
    assert isinstance(outbound, ExitOutbound)
    return outbound


def check_exit_link(text: str) -> AccessKey:
    """The exit link as a person pasted it; one line if it is not one we can use (its
    scheme, its fields, or the outbound it makes: an unknown cipher, a bad pin...)."""
    try:
        ExitOutbound(EXIT_TAG, {"link": text})
        return parse_access_key(text)
    except ConfigError as exc:
        raise ConfigError(f"the exit link: {str(exc).removeprefix(PREFIX)}") from None


def status_line(engine: Engine) -> str:
    exit_ = exit_of(engine)
    up, down = engine.traffic()
    return (
        f"{exit_.health.line(exit_.where)} · {engine.stats.active} open · "
        f"↑ {human_bytes(up)} ↓ {human_bytes(down)}"
    )


async def show_status(engine: Engine, out: TextIO = sys.stderr) -> None:
    """The relay's status line: redrawn in place on a terminal, else a line whenever what it
    says about the exit changes (that is what an operator reading a log needs)."""
    last = ""
    tty = out.isatty()
    while True:
        line = status_line(engine)
        if tty:
            out.write("\r\x1b[2K" + line)
            out.flush()
        elif line.split(" · ")[0] != last.split(" · ")[0]:
            out.write(line + "\n")
            out.flush()
        last = line
        await asyncio.sleep(1.0)


def relay_key(records: list[KeyRecord]) -> KeyRecord | None:
    """The server key a relay should use: one named "relay", else the first Shadowsocks 2022
    key (no per-connection handshake beyond the exit's; replay-safe), else the first key."""
    active = [r for r in records if not r.revoked]
    for wanted in (
        lambda r: r.name == RELAY_KEY_NAME,
        lambda r: r.protocol == "ss2022",
        lambda r: True,
    ):
        found = next((r for r in active if wanted(r)), None)
        if found is not None:
            return found
    return None


def relay_command(link: str, check: str | None = None) -> str:
    """The one line that starts a relay for the exit behind `link`."""
    words = ["elsewhere", "relay", link, *(["--check", check] if check else [])]
    return shlex.join(words)


def server_relay_command(
    store: SqliteStore, settings: ServerSettings, records: list[KeyRecord]
) -> str | None:
    """What `elsewhere server` prints for starting a relay in front of it. A Shadowsocks link
    gets a check against this server's own TLS port: only a round trip shows a wrong key."""
    record = relay_key(records)
    if record is None:
        return None
    link = roles.share_link(store, record)
    check = None
    tls_port = settings.ports.get(TLS_PORT_SETTING)
    if record.protocol in ("ss", "ss2022") and settings.cert and tls_port:
        host = settings.host
        check = f"[{host}]:{tls_port}" if ":" in host else f"{host}:{tls_port}"
    return relay_command(link, check)


# the command


def prepare_from_flags(
    store: SqliteStore,
    args: argparse.Namespace,
    directory: Path,
    acme: AcmeSettings | None = None,
) -> tuple[ServerSettings, list[KeyRecord]]:
    """roles.prepare_server from the flags a server and a relay share (where they listen,
    what their links say, their TLS files)."""
    files = (args.cert, args.key) if args.cert or args.key else None
    if files is not None and not (args.cert and args.key):
        raise ConfigError("give both --cert and --key (fullchain.pem and privkey.pem)")
    return roles.prepare_server(
        store,
        args.port,
        args.host,
        args.listen,
        ports={
            inbound.port_setting: getattr(args, inbound.port_setting)
            for inbound in server_inbounds().values()
            if inbound.port_setting != "port"
        },
        data=directory,
        cert=files,
        domain=args.domain,
        acme=acme,
    )


def cmd_relay(args: argparse.Namespace) -> int:
    from elsewhere.control.cli import _print_key, run_async

    directory = roles.data_dir(args.data_dir)
    store = roles.open_store(directory)
    try:
        link = args.exit or store.get_setting(EXIT_SETTING)
        if not link:
            raise ConfigError(
                "give the exit's link: elsewhere relay 'ss://…' (elsewhere server prints it)"
            )
        exit_key = check_exit_link(link)
        check = args.check if args.check is not None else store.get_setting(CHECK_SETTING)
        if check:
            parse_check(check, EXIT_TAG)
        settings, created = prepare_from_flags(store, args, directory)
        if args.idle_timeout:
            settings.idle_timeout = args.idle_timeout
        store.set_setting(EXIT_SETTING, link)
        if args.check is not None:
            store.set_setting(CHECK_SETTING, args.check)
        config = relay_config(settings, store, link, check, args.direct)
        keys = store.list_keys()
        if created:
            print(f"created {directory / roles.STORE_FILE} with a first key")

        def ready(engine: Engine) -> None:
            print(f"elsewhere relay {__version__}: every session goes to the exit "
                  f"{exit_key.destination} ({format_scheme(exit_key)})")
            for inbound in engine.inbounds:
                print(f"  {inbound.describe()}")
            print(f"share link host: {settings.host} (change with --host)")
            for record in keys:
                _print_key(store, record, qr=len(keys) <= 2)
            sys.stdout.flush()
            exit_of(engine).announce = False  # the status line below says it
            exit_of(engine).start_watching()
            engine.spawn(show_status(engine))

        run_async(roles.run_server(store, settings, ready, config=config))
    finally:
        store.close()
    return 0


def format_scheme(key: AccessKey) -> str:
    kind = key.extra.get("type", "tcp") if key.protocol != "ss" else key.method
    return f"{key.protocol}, {kind}"
