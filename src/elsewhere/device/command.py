"""`elsewhere vpn`: the command line of full-device mode (control/cli.py registers it)."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from typing import Any

from elsewhere.errors import ConfigError

Add = Callable[..., argparse.ArgumentParser]


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("key", nargs="?", help="access key: ss://…, trojan://… or vlessr://…")
    p.add_argument("--off", action="store_true",
                   help="undo everything (rules, routes, kill switch), also after a crash")
    p.add_argument("--netns", metavar="NAME",
                   help="confine it to the network namespace NAME (ip netns) instead of the "
                   "whole machine")
    p.add_argument("--dns", metavar="ADDRESS", default=None,
                   help="the resolver asked through the tunnel (default 1.1.1.1)")
    p.add_argument("--rules", action="append", default=[], metavar="SET",
                   help="a split rule set sent direct: a shipped one (ru) or a file "
                   "(domain_suffix/domain/cidr/cgroup lines); repeatable")
    p.add_argument("--direct", action="append", default=[], metavar="DOMAIN",
                   help="reach this domain (and its subdomains) directly; repeatable")
    p.add_argument("--no-kill-switch", action="store_true",
                   help="let traffic out directly when elsewhere is not running")
    p.add_argument("--allow-lan", action="store_true",
                   help="reach the local networks (printers, the router) directly")
    p.add_argument("--ipv6", choices=["block", "tunnel"], default="block",
                   help="block IPv6 (default) or send it through the tunnel too")
    p.add_argument("--no-strict-dns", action="store_true",
                   help="let programs use DNS over TLS/HTTPS resolvers of their own")
    p.add_argument("--no-status", action="store_true", help="no live status line")


def run(args: argparse.Namespace, run_async: Callable[[Any], Any]) -> int:
    from elsewhere.device import netns

    if args.netns:
        netns.enter(args.netns)  # first, before any thread or socket exists
    from elsewhere.device import vpn

    if args.off:
        vpn.off()
        where = f" in namespace {args.netns}" if args.netns else ""
        print(f"elsewhere vpn: off{where}; traffic goes out directly again", file=sys.stderr)
        return 0
    if not args.key:
        raise ConfigError("give an access key (ss://…, trojan://…, vless://…) or --off")
    from elsewhere.control.links import parse_access_key

    settings = vpn.VpnSettings(
        key=parse_access_key(args.key),
        dns=args.dns or vpn.DEFAULT_DNS,
        rule_sets=list(args.rules),
        direct=list(args.direct),
        kill_switch=not args.no_kill_switch,
        allow_lan=args.allow_lan,
        ipv6=args.ipv6,
        strict_dns=not args.no_strict_dns,
        resolv_conf=netns.resolv_conf(args.netns),
    )
    vpn.server_addresses(settings.key.host)  # a typo in the host: one line, before anything
    run_async(vpn.run(settings, status=not args.no_status))
    return 0
