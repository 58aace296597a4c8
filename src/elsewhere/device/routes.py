"""Policy routing for full-device mode's UDP, over netlink (pyroute2): packets marked
TPROXY_MARK in the output path are routed by table ROUTE_TABLE, whose one route says every
address is local, so they come back in through `lo` where nftables' tproxy takes them. Ours
are found again by their protocol number (ROUTE_PROTO), so a crash leaves nothing another
start or `--off` cannot find and remove. pyroute2 runs its own event loop: call these from a
thread when one is running."""

from __future__ import annotations

import socket
from typing import Any

from pyroute2 import IPRoute
from pyroute2.netlink.exceptions import NetlinkError

from elsewhere.device.errors import DeviceError
from elsewhere.device.ruleset import TPROXY_MARK

ROUTE_TABLE = 0x1E57
RULE_PRIORITY = 0x1E57  # before `main` (32766), after `local` (0)
ROUTE_PROTO = 231  # "static"-like, unassigned in /etc/iproute2/rt_protos: ours to find
SCOPE_HOST = 254
DEFAULT_RULES = {0, 32766, 32767}  # local, main, default: what every namespace starts with

FAMILIES = {4: socket.AF_INET, 6: socket.AF_INET6}
ANY = {4: "0.0.0.0/0", 6: "::/0"}


def install(versions: tuple[int, ...] = (4,)) -> None:
    """The rule and the table for each IP version; DeviceError when netlink refuses."""
    with IPRoute() as ipr:
        lo = ipr.link_lookup(ifname="lo")[0]
        for version in versions:
            family = FAMILIES[version]
            try:
                ipr.route("add", family=family, dst=ANY[version], table=ROUTE_TABLE,
                          type="local", oif=lo, proto=ROUTE_PROTO, scope=SCOPE_HOST)
                ipr.rule("add", family=family, fwmark=TPROXY_MARK, table=ROUTE_TABLE,
                         priority=RULE_PRIORITY, protocol=ROUTE_PROTO)
            except NetlinkError as exc:
                raise DeviceError(f"cannot add the IPv{version} policy route for UDP: "
                                  f"{exc.args[-1]}") from None


def remove() -> int:
    """Every rule and route of ours, in both families; returns how many were removed."""
    removed = 0
    with IPRoute() as ipr:
        for family in FAMILIES.values():
            for rule in ipr.get_rules(family=family):
                if rule.get("FRA_PROTOCOL") == ROUTE_PROTO:
                    ipr.rule("del", family=family, priority=rule.get("FRA_PRIORITY"),
                             fwmark=rule.get("FRA_FWMARK"), table=rule.get("FRA_TABLE"),
                             protocol=ROUTE_PROTO)
                    removed += 1
            for route in ipr.get_routes(family=family, table=ROUTE_TABLE):
                if route["proto"] == ROUTE_PROTO:
                    ipr.route("del", family=family, dst=ANY[4 if family == socket.AF_INET
                                                            else 6],
                              table=ROUTE_TABLE, type="local", proto=ROUTE_PROTO,
                              scope=route["scope"], oif=route.get("RTA_OIF"))
                    removed += 1
    return removed


def foreign_rules() -> list[str]:
    """Policy rules neither the kernel's defaults nor ours: another VPN's (wg-quick, sing-box,
    Tailscale, Mullvad all add some), described for a person."""
    found = []
    with IPRoute() as ipr:
        for version, family in FAMILIES.items():
            for rule in ipr.get_rules(family=family):
                priority = rule.get("FRA_PRIORITY") or 0
                if rule.get("FRA_PROTOCOL") == ROUTE_PROTO or priority in DEFAULT_RULES:
                    continue
                found.append(f"IPv{version} policy rule {priority}: {_describe(rule)}")
    return found


def _describe(rule: Any) -> str:
    parts = []
    if (mark := rule.get("FRA_FWMARK")) is not None:
        parts.append(f"fwmark {mark:#x}")
    if (table := rule.get("FRA_TABLE")) is not None:
        parts.append(f"lookup {table}")
    return " ".join(parts) or "(no fwmark)"


def lan_networks() -> list[str]:
    """The networks directly on a link of this machine (not loopback): "the LAN"."""
    nets = []
    with IPRoute() as ipr:
        for version, family in FAMILIES.items():
            for route in ipr.get_routes(family=family, table=254):
                dst = route.get("RTA_DST")
                if dst is None or route["scope"] != 253:  # 253: RT_SCOPE_LINK
                    continue
                if version == 6 and dst.startswith("fe80"):
                    continue
                nets.append(f"{dst}/{route['dst_len']}")
    return nets
