"""The full-device role (`elsewhere vpn LINK`, `elsewhere vpn --off`): an engine with the
transparent inbounds (DNS, TCP redirect, UDP tproxy) and the access key's outbound, the kernel
rules that divert every program to it, the kill switch, split rules. Start order: check what
is in the way, clean what a crash left, start the engine (its ports go into the rules), then
routes and one nftables transaction. On a clean stop the diversion goes and the kill switch
stays (unless it was turned off): nothing leaks until the person says `--off`."""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import socket
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TextIO

from elsewhere import rulesets
from elsewhere.config import Config, from_mapping
from elsewhere.control.links import AccessKey
from elsewhere.device import nft, preflight, routes
from elsewhere.device.errors import DeviceError
from elsewhere.device.lock import single_instance
from elsewhere.device.resolvers import system_resolvers
from elsewhere.device.ruleset import BYPASS_MARK, IPv6Mode, Network, Plan, document, guard_only
from elsewhere.device.ruleset import removal as nft_removal
from elsewhere.engine import Engine
from elsewhere.inbounds.dns import DnsInbound
from elsewhere.inbounds.redirect import RedirectInbound
from elsewhere.inbounds.tproxy_udp import TproxyUdpInbound

log = logging.getLogger("elsewhere")

DEFAULT_DNS = "1.1.1.1"  # asked through the tunnel; the server's side sends the query
READY = "vpn on:"  # the line that says every program now goes through the tunnel
DOH_PORTS = (443, 853)


@dataclass
class VpnSettings:
    key: AccessKey
    dns: str = DEFAULT_DNS
    rule_sets: list[str] = field(default_factory=list)
    direct: list[str] = field(default_factory=list)  # domain suffixes from the command line
    kill_switch: bool = True
    allow_lan: bool = False
    ipv6: IPv6Mode = "block"
    strict_dns: bool = True
    resolv_conf: str = "/etc/resolv.conf"


def server_addresses(host: str) -> list[str]:
    """The server's addresses, looked up once before the rules exist (after, the lookup itself
    would be diverted)."""
    try:
        return [str(ipaddress.ip_address(host))]
    except ValueError:
        pass
    try:
        infos = socket.getaddrinfo(host, None, type=socket.SOCK_STREAM)
    except socket.gaierror as exc:
        raise DeviceError(f"cannot look up the server {host}: {exc.strerror}") from None
    return sorted({str(info[4][0]) for info in infos})


def engine_config(
    settings: VpnSettings, split: rulesets.RuleSet, server_host: str
) -> Config:
    from elsewhere.control.roles import proxy_outbound

    hosts = ["127.0.0.1", *(["::1"] if settings.ipv6 == "tunnel" else [])]
    rules: list[dict[str, Any]] = []
    if ipaddress_or_none(server_host) is None:
        # the outbound's own lookup of the server comes back through our resolver: it must
        # be asked directly, or the tunnel would wait for itself
        rules.append({"domain": [server_host], "outbound": "direct"})
    if settings.strict_dns:
        rules += rulesets.load("doh").router_rules("block", DOH_PORTS)
    rules += split.router_rules("direct")
    return from_mapping({
        "inbounds": [
            {"type": "dns", "tag": "dns", "listen": hosts, "port": 0,
             "upstream": settings.dns, "direct_upstream": system_resolvers(settings.resolv_conf),
             "ipv6": settings.ipv6 == "tunnel"},
            {"type": "redirect", "tag": "redirect", "listen": hosts, "port": 0, "names": "dns"},
            {"type": "tproxy_udp", "tag": "tproxy", "listen": hosts, "port": 0, "names": "dns"},
        ],
        "outbounds": [
            proxy_outbound(settings.key),
            {"type": "direct", "tag": "direct", "private": "allow", "mark": BYPASS_MARK},
            {"type": "block", "tag": "block"},
        ],
        "rules": rules,
        "route": {"final": "proxy"},
    })


def ipaddress_or_none(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        return ipaddress.ip_address(text)
    except ValueError:
        return None


def plan_for(
    engine: Engine, settings: VpnSettings, servers: list[str], split: rulesets.RuleSet
) -> Plan:
    def port(kind: type) -> int:
        return int(next(i for i in engine.inbounds if isinstance(i, kind)).port)  # type: ignore[attr-defined]

    lan: list[Network] = []
    if settings.allow_lan:
        lan = [ipaddress.ip_network(n, strict=False) for n in routes.lan_networks()]
    return Plan(
        tcp_port=port(RedirectInbound),
        udp_port=port(TproxyUdpInbound),
        dns_port=port(DnsInbound),
        servers=tuple(ipaddress.ip_network(s) for s in servers),
        direct=tuple(split.networks),
        cgroups=tuple(split.cgroups),
        lan=tuple(lan),
        ipv6=settings.ipv6,
        strict_dns=settings.strict_dns,
        kill_switch=settings.kill_switch,
    )


def turn_on(plan: Plan) -> None:
    """Routes, then the ruleset in one transaction; on failure nothing of ours stays."""
    routes.remove()
    try:
        routes.install((4, 6) if plan.ipv6 == "tunnel" else (4,))
        nft.apply(document(plan))
    except BaseException:
        turn_off()
        raise


def turn_off() -> None:
    """Every table, rule and route of ours gone; a no-op when there are none."""
    nft.apply({"nftables": [{"metainfo": {"json_schema_version": 1}}, *nft_removal()]})
    routes.remove()


def leave_guard(plan: Plan) -> None:
    """The diversion gone, the kill switch kept."""
    nft.apply(guard_only(plan))
    routes.remove()


def off() -> None:
    preflight.require_net_admin()
    nft.nft_path()
    turn_off()


async def run(
    settings: VpnSettings,
    ready: Callable[[Engine, Plan], None] | None = None,
    out: TextIO = sys.stderr,
    status: bool = True,
) -> None:
    """Serve until cancelled (Ctrl-C, SIGTERM)."""
    preflight.require_net_admin()  # before anything is touched, /run included
    with single_instance():
        await _run(settings, ready, out, status)


async def _run(
    settings: VpnSettings,
    ready: Callable[[Engine, Plan], None] | None,
    out: TextIO,
    status: bool,
) -> None:
    from elsewhere.device.status import show as show_status

    # pyroute2 runs an event loop of its own: every netlink call goes to a thread
    await asyncio.to_thread(preflight.check)
    split = rulesets.combined(settings.rule_sets, settings.direct)
    if split.cgroups:
        nft.require_cgroup2(split.cgroups)
    servers = await asyncio.to_thread(server_addresses, settings.key.host)
    await asyncio.to_thread(turn_off)  # whatever a crashed run left
    engine = Engine(engine_config(settings, split, settings.key.host))
    async with engine:
        plan = await asyncio.to_thread(plan_for, engine, settings, servers, split)
        await asyncio.to_thread(turn_on, plan)
        clean = False
        try:
            where = f"{settings.key.host}:{settings.key.port}"
            guard = "kill switch on" if settings.kill_switch else "no kill switch"
            print(f"{READY} every program's traffic goes through {where} "
                  f"({settings.key.protocol}); DNS through the tunnel; {guard}; "
                  "elsewhere vpn --off undoes it", file=out, flush=True)
            if ready is not None:
                ready(engine, plan)
            if status:
                await show_status(engine, settings.key.protocol, where, out)
            else:
                await asyncio.Event().wait()
        except asyncio.CancelledError:
            clean = True
            raise
        finally:
            if settings.kill_switch:
                await asyncio.to_thread(leave_guard, plan)
                if clean:
                    print("\nelsewhere vpn stopped; the kill switch stays on (nothing leaves "
                          "but toward the server): elsewhere vpn --off", file=out, flush=True)
            else:
                await asyncio.to_thread(turn_off)
