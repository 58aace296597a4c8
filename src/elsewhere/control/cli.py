"""The `elsewhere` command: run a config, run a server from its store, manage keys, connect a
client with an access key, or watch the whole chain work on this machine (`demo`). A person's
mistake ends in one line on stderr and exit status 2, never a traceback."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import re
import signal
import sys
from collections.abc import Callable, Coroutine, Sequence
from typing import Any

from elsewhere import __version__
from elsewhere.config import load
from elsewhere.control.links import schemes
from elsewhere.errors import ConfigError
from elsewhere.protocols.base import protocols, server_inbounds

log = logging.getLogger("elsewhere")

SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kmgt]?i?b?)?\s*$", re.IGNORECASE)
SIZE_UNITS = {
    "": 1,
    "k": 10**3,
    "m": 10**6,
    "g": 10**9,
    "t": 10**12,
    "ki": 2**10,
    "mi": 2**20,
    "gi": 2**30,
    "ti": 2**40,
}


def parse_size(text: str) -> int | None:
    """`10GB`, `1.5 GiB`, `500M`, `none` -> bytes (None = no limit)."""
    if text.strip().lower() in ("none", "unlimited", "off"):
        return None
    match = SIZE.match(text)
    unit = (match.group(2) or "").lower().rstrip("b") if match else ""
    if match is None or unit not in SIZE_UNITS:
        raise ConfigError(f'"{text}" is not a size: write it like 500MB, 10GB or 1.5GiB, or none')
    return int(float(match.group(1)) * SIZE_UNITS[unit])


def run_async(main: Coroutine[Any, Any, Any]) -> Any:
    """Run on uvloop where installed, and turn Ctrl-C / SIGTERM into a clean stop."""

    async def guarded() -> Any:
        loop = asyncio.get_running_loop()
        task = asyncio.current_task()
        assert task is not None
        for sig in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.add_signal_handler(sig, task.cancel)
        try:
            return await main
        except asyncio.CancelledError:
            return None

    from elsewhere import allocator

    allocator.tune()
    try:
        import uvloop
    except ImportError:  # pragma: no cover - pinned on Linux
        return asyncio.run(guarded())
    return uvloop.run(guarded())


# commands


def cmd_run(args: argparse.Namespace) -> int:
    from elsewhere.engine import Engine

    config = load(args.config)

    async def main() -> None:
        engine = Engine(config)
        async with engine:
            for inbound in engine.inbounds:
                print(f"listening: {inbound.describe()}", file=sys.stderr, flush=True)
            await asyncio.Event().wait()

    run_async(main())
    return 0


def _print_key(store: Any, record: Any, qr: bool) -> None:
    from elsewhere.control import roles
    from elsewhere.control.links import format_access_key
    from elsewhere.control.qr import qr_text

    key = roles.access_key(store, record)
    link = format_access_key(key)
    limit = "" if record.data_limit is None else f", limit {_human(record.data_limit)}"
    print(f"key {record.name} ({record.id}, {record.method}{limit}):")
    print(f"  {link}")
    if "pcs" in key.extra and (pin := store.get_setting("tls_key_pin")):
        # the link's pcs= is Xray's pin; sing-box (Hiddify, the sing-box apps) reads only this
        print(
            f"  sing-box/Hiddify pin (certificate_public_key_sha256): {pin}"
            f"  profile: elsewhere keys show {record.name} --sing-box"
        )
    if qr:
        print(qr_text(link))


def _settled(args: argparse.Namespace) -> Any:
    """The store, with what the first server run decides decided (roles.settle), said in one
    line on stderr (stdout keeps only links and profiles)."""
    from elsewhere.control import roles

    directory = roles.data_dir(args.data_dir)
    store = roles.open_store(directory)
    try:
        decided = roles.settle(store, directory)
    except BaseException:
        store.close()
        raise
    if decided:
        print(
            "elsewhere: no server has run here yet, so this settled what its first run would: "
            f"{', '.join(decided)}; `elsewhere server --host …` changes them and prints the "
            "new links",
            file=sys.stderr,
        )
    return store


def _human(n: int) -> str:
    from elsewhere.control.status import human_bytes

    return human_bytes(n)


def cmd_server(args: argparse.Namespace) -> int:
    from elsewhere.control import roles
    from elsewhere.control.relay import prepare_from_flags, server_relay_command

    directory = roles.data_dir(args.data_dir)
    store = roles.open_store(directory)
    try:
        acme = None
        if args.acme:
            from elsewhere.control.acme import LETS_ENCRYPT, AcmeSettings

            acme = AcmeSettings(
                (args.acme,),
                directory=args.acme_directory or LETS_ENCRYPT,
                email=args.acme_email,
                ca_file=args.acme_ca,
            )
        before = roles.link_settings(store)
        settings, created = prepare_from_flags(store, args, directory, acme)
        settings.http_port = args.http_port
        settings.allow_private = args.allow_private
        if args.idle_timeout:
            settings.idle_timeout = args.idle_timeout
        keys = store.list_keys()
        changed = roles.changed_links(before, store)
        if created:
            print(f"created {directory / roles.STORE_FILE} with a first key")
        if settings.site_created:
            print(f"created {settings.site}: the web site strangers see on the TLS port")

        def ready(engine: Any) -> None:
            print(f"elsewhere server {__version__}:")
            for inbound in engine.inbounds:
                print(f"  {inbound.describe()}")
            print(f"share link host: {settings.host} (change with --host)")
            if store.get_setting("tls") == "self-signed":
                print(
                    "TLS certificate: self-signed, pinned in the links, and not every app checks "
                    "the pin (docs/links.md); --domain or --acme gives one that every app checks"
                )
            if changed and keys and not created:
                print(
                    f"changed since links were printed: {', '.join(changed)}; links handed "
                    "out before no longer work: hand out these"
                )
            for record in keys:
                _print_key(store, record, qr=len(keys) <= 2)
            if len(keys) > 2:
                print("elsewhere keys show NAME prints a key's QR code")
            relay = server_relay_command(store, settings, keys)
            if relay is not None:
                print("a relay inside the country for this server (on a machine there):")
                print(f"  {relay}")
            sys.stdout.flush()

        run_async(roles.run_server(store, settings, ready))
    finally:
        store.close()
    return 0


def _cmd_relay(args: argparse.Namespace) -> int:
    from elsewhere.control.relay import cmd_relay

    return cmd_relay(args)


def _store(args: argparse.Namespace) -> Any:
    from elsewhere.control import roles

    return roles.open_store(roles.data_dir(args.data_dir))


def cmd_keys_add(args: argparse.Namespace) -> int:
    from elsewhere.control import roles

    store = _settled(args)
    try:
        limit = parse_size(args.limit) if args.limit else None
        if args.dest or args.sni:
            from elsewhere.protocols import reality

            if args.method != reality.METHOD:
                raise ConfigError("--dest and --sni are REALITY's: add --method reality")
            reality.set_dest(store, args.dest, args.sni)
        method = args.method
        if args.cdn:  # XHTTP through a CDN: the protocol keeps it in the method (xhttp:HOST)
            method = f"{method or 'xhttp'}:{args.cdn}"
        record = roles.add_key(store, args.name, method, limit, protocol=args.protocol)
        _print_key(store, record, qr=not args.no_qr)
    finally:
        store.close()
    return 0


def cmd_keys_list(args: argparse.Namespace) -> int:
    from elsewhere.control import roles

    store = _settled(args) if args.links else _store(args)
    try:
        records = store.list_keys(include_revoked=args.all)
        if not records:
            print("no keys yet: elsewhere keys add NAME")
        for r in records:
            state = "revoked" if r.revoked else "active"
            limit = "no limit" if r.data_limit is None else f"limit {_human(r.data_limit)}"
            print(
                f"{r.id}  {r.name:<16} {state:<8} {r.method:<24} "
                f"↑ {_human(r.bytes_up)} ↓ {_human(r.bytes_down)}  {limit}"
            )
            if args.links and not r.revoked:
                print(f"    {roles.share_link(store, r)}")
    finally:
        store.close()
    return 0


def cmd_keys_show(args: argparse.Namespace) -> int:
    store = _settled(args)
    try:
        record = store.get_key(args.key)
        if args.sing_box:
            import json

            from elsewhere.control import roles, singbox

            key = roles.access_key(store, record)
            pin = store.get_setting("tls_key_pin") if "pcs" in key.extra else None
            print(json.dumps(singbox.profile(key, pin), indent=2, ensure_ascii=False))
        else:
            _print_key(store, record, qr=True)
    finally:
        store.close()
    return 0


def cmd_keys_revoke(args: argparse.Namespace) -> int:
    store = _store(args)
    try:
        record = store.revoke_key(args.key)
        print(f"revoked {record.name} ({record.id}); a running server drops it within seconds")
    finally:
        store.close()
    return 0


def cmd_keys_limit(args: argparse.Namespace) -> int:
    store = _store(args)
    try:
        record = store.set_limit(args.key, parse_size(args.size))
        limit = "none" if record.data_limit is None else _human(record.data_limit)
        print(f"{record.name} ({record.id}): data limit {limit}")
    finally:
        store.close()
    return 0


def cmd_client(args: argparse.Namespace) -> int:
    from elsewhere import rulesets
    from elsewhere.control import roles
    from elsewhere.control.links import parse_access_key
    from elsewhere.control.status import show_status
    from elsewhere.engine import Engine

    key = parse_access_key(args.key)
    rules = rulesets.combined(args.rules, args.direct or []).router_rules("direct")
    config = roles.client_config(key, args.listen, args.port, rules)

    async def main() -> None:
        engine = Engine(config)
        async with engine:
            where = engine.inbounds[0].describe()
            print(f"elsewhere client {__version__}: proxy on {where}", file=sys.stderr)
            print(
                f"point your browser or system proxy at {where.split()[-1]} (SOCKS5 or HTTP)",
                file=sys.stderr,
                flush=True,
            )
            server = f"{key.host}:{key.port}"
            if args.no_status:
                await asyncio.Event().wait()
            else:
                await show_status(engine, server)

    run_async(main())
    return 0


def cmd_vpn(args: argparse.Namespace) -> int:
    from elsewhere.device.command import run

    return run(args, run_async)


def cmd_demo(args: argparse.Namespace) -> int:
    from elsewhere.control.demo import demo

    return int(run_async(demo(exit_after=args.exit)) or 0)


def cmd_lab(args: argparse.Namespace) -> int:
    from pathlib import Path

    from elsewhere.lab.errors import LabError
    from elsewhere.lab.run import run_lab

    def names(text: str | None) -> list[str] | None:
        return [n.strip() for n in text.split(",") if n.strip()] if text else None

    try:
        run_lab(
            names(args.techniques),
            names(args.transports),
            json_path=Path(args.json) if args.json else None,
            quick=args.quick,
        )
    except LabError as exc:  # the lab could not be built or a process did not come up
        print(f"elsewhere lab: {str(exc).splitlines()[0]}", file=sys.stderr)
        return 1
    return 0


# parser


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="elsewhere",
        description="A censorship-resistant VPN: a server abroad, a local proxy at home.",
    )
    parser.add_argument("--version", action="version", version=f"elsewhere {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log every session")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    def add(
        name: str, func: Callable[[argparse.Namespace], int], help: str, parent: Any = sub
    ) -> argparse.ArgumentParser:
        p: argparse.ArgumentParser = parent.add_parser(name, help=help, description=help)
        p.set_defaults(func=func)
        return p

    def data_dir(p: argparse.ArgumentParser) -> None:
        p.add_argument(
            "--data-dir",
            help="where the key store lives (default: $ELSEWHERE_HOME or ~/.local/share/elsewhere)",
        )

    p = add("run", cmd_run, "run the engine from a TOML config file")
    p.add_argument("--config", "-c", required=True, help="path of the config file")

    def listening(p: argparse.ArgumentParser) -> None:
        # what a server and a relay share: where they listen, what their links say, TLS files
        data_dir(p)
        for inbound in server_inbounds().values():
            p.add_argument(inbound.flag, dest=inbound.port_setting, type=int, help=inbound.help)
        p.add_argument("--host", help="address or name clients use to reach it (remembered)")
        p.add_argument("--listen", help="local address to bind (default 0.0.0.0, remembered)")
        p.add_argument("--cert", help="TLS certificate chain file (fullchain.pem)")
        p.add_argument("--key", help="TLS private key file (privkey.pem)")
        p.add_argument(
            "--domain",
            help="use certbot's or Caddy's certificate for this domain "
            "(default: a self-signed one, pinned in the share links)",
        )
        p.add_argument(
            "--idle-timeout", type=float, help="seconds before a silent connection closes"
        )

    p = add("server", cmd_server, "run a server for every key in the store")
    listening(p)
    p.add_argument(
        "--acme",
        metavar="DOMAIN",
        help="get (and renew) a certificate for DOMAIN "
        "over ACME http-01; port 80 must reach this server",
    )
    p.add_argument("--acme-directory", help="ACME directory URL (default: Let's Encrypt)")
    p.add_argument("--acme-email", help="contact address for the ACME account")
    p.add_argument("--acme-ca", help="CA file to trust the ACME server's own HTTPS (test CAs)")
    p.add_argument(
        "--http-port", type=int, default=80, help="port for the ACME http-01 answers (default 80)"
    )
    p.add_argument(
        "--allow-private",
        action="store_true",
        help="let users reach this server's loopback and private networks",
    )

    p = add(
        "relay",
        _cmd_relay,
        "run a relay inside the country in front of an exit abroad: the keys in this store, "
        "every session carried to the exit",
    )
    p.add_argument(
        "exit",
        nargs="?",
        metavar="EXIT_LINK",
        help="the exit's access key (ss://, vless://, trojan://), e.g. the one `elsewhere "
        "server` prints; remembered, so later runs need none",
    )
    p.add_argument(
        "--check",
        metavar="HOST:PORT",
        help="an HTTPS server the exit can reach, to prove the whole path (default: the "
        "exit's own TLS port for vless/trojan links; none for ss links); none to skip",
    )
    p.add_argument(
        "--direct",
        action="append",
        metavar="DOMAIN",
        help="reach this domain (and its subdomains) from the relay itself, not through the "
        "exit; repeatable (default: everything goes to the exit)",
    )
    listening(p)

    keys = add("keys", lambda a: 0, "add, list, show, limit or revoke access keys")
    keys_sub = keys.add_subparsers(dest="keys_command", metavar="ACTION", required=True)
    p = add("add", cmd_keys_add, "create a key and print its link and QR code", keys_sub)
    p.add_argument("name", help="who the key is for")
    known = protocols()
    p.add_argument(
        "--protocol",
        choices=list(known),
        help="; ".join(f"{name}: {kind.help}" for name, kind in known.items()),
    )
    p.add_argument(
        "--method",
        help="; ".join(f"{name}: {kind.method_help}" for name, kind in known.items()),
    )
    p.add_argument(
        "--cdn",
        metavar="HOST",
        help="for --method xhttp: the CDN in front of this server; the link dials HOST:443",
    )
    p.add_argument("--limit", help="data limit, e.g. 50GB (default: none)")
    p.add_argument("--dest", help="REALITY: the real TLS 1.3 site strangers see, host[:443] "
                   "(remembered for the server)")
    p.add_argument("--sni", help="REALITY: the names dest answers to, comma-separated "
                   "(default: dest's host)")
    p.add_argument("--no-qr", action="store_true", help="print only the link")
    data_dir(p)
    p = add("list", cmd_keys_list, "list keys with their usage", keys_sub)
    p.add_argument("--all", action="store_true", help="include revoked keys")
    p.add_argument("--links", action="store_true", help="print each key's share link")
    data_dir(p)
    p = add("show", cmd_keys_show, "print a key's link and QR code", keys_sub)
    p.add_argument("key", help="key id or name")
    p.add_argument(
        "--sing-box",
        action="store_true",
        help="print a sing-box profile (JSON) instead: a local proxy on 127.0.0.1:1080 through "
        "this key, with the certificate pin sing-box and Hiddify check",
    )
    data_dir(p)
    p = add("revoke", cmd_keys_revoke, "revoke a key (a running server drops it)", keys_sub)
    p.add_argument("key", help="key id or name")
    data_dir(p)
    p = add("limit", cmd_keys_limit, "set a key's data limit", keys_sub)
    p.add_argument("key", help="key id or name")
    p.add_argument("size", help="e.g. 50GB, or none")
    data_dir(p)

    p = add("client", cmd_client, "connect with an access key and open a local proxy port")
    p.add_argument("key", help=f"access key: {' or '.join(f'{s}://…' for s in schemes())}")
    p.add_argument("--listen", default="127.0.0.1", help="local address (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=1080, help="local proxy port (default 1080)")
    p.add_argument(
        "--direct",
        action="append",
        metavar="DOMAIN",
        help="reach this domain (and its subdomains) directly; repeatable",
    )
    p.add_argument(
        "--rules",
        action="append",
        default=[],
        metavar="SET",
        help="a split rule set sent direct: a shipped one (ru) or a file; repeatable",
    )
    p.add_argument("--no-status", action="store_true", help="no live status line")

    p = add("vpn", cmd_vpn, "full-device mode (Linux, root): every program through the tunnel")
    from elsewhere.device.command import add_arguments as vpn_arguments

    vpn_arguments(p)

    p = add("demo", cmd_demo, "start a server and a client here and fetch a page through them")
    p.add_argument("--exit", action="store_true", help="exit after the page was fetched")

    p = add(
        "lab",
        cmd_lab,
        "run every transport against every censor technique in a censor lab on this "
        "machine (network namespaces; needs root) and print the survival matrix",
    )
    p.add_argument(
        "--techniques",
        metavar="LIST",
        help="comma-separated techniques, a+b for a combination, none for no censorship "
        "(default: every technique)",
    )
    p.add_argument(
        "--transports",
        metavar="LIST",
        help="comma-separated transports, e.g. direct,elsewhere-ss-prefix,openvpn "
        "(default: all; a Debian peer that is not installed is skipped)",
    )
    p.add_argument("--json", metavar="PATH", help="also write the matrix as JSON to PATH")
    p.add_argument(
        "--quick",
        action="store_true",
        help="direct and elsewhere's transports against the common techniques only",
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(message)s",
        datefmt="%H:%M:%S",
    )
    try:
        return int(args.func(args))
    except ConfigError as exc:
        print(f"elsewhere: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
