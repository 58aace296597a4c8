"""The nftables ruleset of full-device mode, as a libnftables JSON document (`nft -j -f`),
built from a Plan by pure functions. Two tables, each replaced whole in one transaction:

- `inet elsewhere` diverts the machine's traffic to the engine's transparent inbounds, the way
  sing-box's auto_redirect does: DNS (port 53, UDP and TCP) is redirected to the local
  resolver; TCP is redirected (`redirect`, the engine reads SO_ORIGINAL_DST); UDP is marked in
  the output path so that policy routing (device/routes.py) loops it back through `lo`, where
  `tproxy` hands it to the UDP inbound with its destination intact. The engine's own sockets
  (BYPASS_MARK), the servers' addresses, the direct networks and cgroups of the split rules,
  the LAN when allowed, and the machine's own addresses are left alone.
- `inet elsewhere_guard` is the kill switch: an output filter whose policy is drop, letting out
  only loopback, the engine's own sockets, the servers and what the split rules send direct.
  It holds whether or not the engine runs (kill -9 included) until `elsewhere vpn --off`.

The kernel does all per-packet work; Python sees streams and datagrams."""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

INTERCEPT = "elsewhere"
GUARD = "elsewhere_guard"
TABLES = (INTERCEPT, GUARD)
FAMILY = "inet"
TPROXY_MARK = 0x1E57  # packets to loop back through lo for tproxy (device/routes.py)
BYPASS_MARK = 0x1E58  # the engine's own sockets (SO_MARK): never diverted, always let out
GUARD_PASSED = 0x1E59  # conntrack mark of a flow the kill switch let out
PRIORITY_NAT = -100  # dstnat
PRIORITY_MANGLE = -150
PRIORITY_FILTER = 0
DNS_PORT = 53
DOT_PORT = 853  # DNS over TLS (RFC 7858) and over QUIC (RFC 9250)

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
IPv6Mode = Literal["tunnel", "block"]
Rule = list[dict[str, Any]]


@dataclass(frozen=True)
class Plan:
    """What the kernel is to do; ports are the engine's inbounds' (on loopback)."""

    tcp_port: int
    udp_port: int
    dns_port: int
    servers: tuple[Network, ...]
    direct: tuple[Network, ...] = ()  # split rules' networks: never diverted
    cgroups: tuple[str, ...] = ()  # split rules' cgroup v2 paths: never diverted
    lan: tuple[Network, ...] = ()  # on-link networks reached directly (--allow-lan)
    ipv6: IPv6Mode = "block"
    strict_dns: bool = True  # DoT/DoQ refused, so programs fall back to port 53
    kill_switch: bool = True


def _match(left: Any, right: Any, op: str = "==") -> dict[str, Any]:
    return {"match": {"op": op, "left": left, "right": right}}


def _meta(key: str) -> dict[str, Any]:
    return {"meta": {"key": key}}


def _payload(protocol: str, name: str) -> dict[str, Any]:
    return {"payload": {"protocol": protocol, "field": name}}


def _daddr(version: int) -> dict[str, Any]:
    return _payload("ip" if version == 4 else "ip6", "daddr")


def _marked(mark: int) -> dict[str, Any]:
    return _match({"&": [_meta("mark"), mark]}, mark)


RETURN: dict[str, Any] = {"return": None}
ACCEPT: dict[str, Any] = {"accept": None}


def _set_name(base: str, version: int) -> str:
    return f"{base}{version}"


def _elements(networks: Iterable[Network]) -> list[Any]:
    elements: list[Any] = []
    for net in networks:
        if net.prefixlen == net.max_prefixlen:
            elements.append(str(net.network_address))
        else:
            elements.append({"prefix": {"addr": str(net.network_address), "len": net.prefixlen}})
    return elements


def _sets(table: str, sets: dict[str, Sequence[Network]]) -> list[dict[str, Any]]:
    commands = []
    for base, networks in sets.items():
        for version in (4, 6):
            chosen = [n for n in networks if n.version == version]
            body: dict[str, Any] = {
                "family": FAMILY, "table": table, "name": _set_name(base, version),
                "type": "ipv4_addr" if version == 4 else "ipv6_addr",
                "flags": ["interval"],
            }
            if chosen:
                body["elem"] = _elements(collapse(chosen))
            commands.append({"add": {"set": body}})
    return commands


def collapse(networks: Iterable[Network]) -> list[Network]:
    """Overlapping networks merged (an interval set refuses overlaps)."""
    networks = list(networks)
    v4 = [n for n in networks if isinstance(n, ipaddress.IPv4Network)]
    v6 = [n for n in networks if isinstance(n, ipaddress.IPv6Network)]
    return [*ipaddress.collapse_addresses(v4), *ipaddress.collapse_addresses(v6)]


def _in_set(base: str, version: int) -> dict[str, Any]:
    return _match(_daddr(version), "@" + _set_name(base, version))


def _cgroup(path: str) -> dict[str, Any]:
    level = path.count("/") + 1
    return _match({"socket": {"key": "cgroupv2", "level": level}}, path)


def _exempt_rules(plan: Plan, verdict: dict[str, Any]) -> list[Rule]:
    """Traffic full-device mode leaves alone: ours, to the servers, the split rules' direct
    networks and cgroups, the LAN."""
    rules: list[Rule] = [[_marked(BYPASS_MARK), verdict]]
    for version in (4, 6):
        for base in ("servers", "direct", "lan"):
            rules.append([_in_set(base, version), verdict])
    rules += [[_cgroup(path), verdict] for path in plan.cgroups]
    return rules


def _intercept(plan: Plan) -> list[dict[str, Any]]:
    table = INTERCEPT
    commands: list[dict[str, Any]] = [
        {"add": {"table": {"family": FAMILY, "name": table}}},
        *_sets(table, {"servers": plan.servers, "direct": plan.direct, "lan": plan.lan}),
    ]

    def chain(name: str, kind: str, hook: str, priority: int) -> None:
        commands.append({"add": {"chain": {
            "family": FAMILY, "table": table, "name": name, "type": kind, "hook": hook,
            "prio": priority, "policy": "accept",
        }}})

    def rule(chain_name: str, expr: Rule) -> None:
        commands.append({"add": {"rule": {
            "family": FAMILY, "table": table, "chain": chain_name, "expr": expr,
        }}})

    families = ["ipv4", "ipv6"] if plan.ipv6 == "tunnel" else ["ipv4"]
    # nat: DNS to the local resolver (whatever address it was sent to, 127.0.0.53 included),
    # then every other new TCP connection to the redirect inbound
    chain("divert_tcp", "nat", "output", PRIORITY_NAT)
    rule("divert_tcp", [_marked(BYPASS_MARK), RETURN])
    for nfproto in families:
        for proto in ("udp", "tcp"):
            rule("divert_tcp", [
                _match(_meta("nfproto"), nfproto),
                _match(_payload(proto, "dport"), DNS_PORT),
                {"redirect": {"port": plan.dns_port}},
            ])
    for expr in _exempt_rules(plan, RETURN)[1:]:
        rule("divert_tcp", expr)
    rule("divert_tcp", [_match({"fib": {"result": "type", "flags": ["daddr"]}}, "local"), RETURN])
    for nfproto in families:
        rule("divert_tcp", [
            _match(_meta("nfproto"), nfproto),
            _match(_meta("l4proto"), "tcp"),
            {"redirect": {"port": plan.tcp_port}},
        ])
    # route: mark the UDP to divert, so that policy routing sends it back in through lo
    chain("mark_udp", "route", "output", PRIORITY_MANGLE)
    rule("mark_udp", [_match(_meta("l4proto"), "udp", "!="), RETURN])
    rule("mark_udp", [_match(_payload("udp", "dport"), DNS_PORT), RETURN])  # nat has it
    for expr in _exempt_rules(plan, RETURN):
        rule("mark_udp", expr)
    rule("mark_udp", [_match({"fib": {"result": "type", "flags": ["daddr"]}}, "local"), RETURN])
    for nfproto in families:
        rule("mark_udp", [
            _match(_meta("nfproto"), nfproto),
            {"mangle": {"key": _meta("mark"), "value": TPROXY_MARK}},
        ])
    # prerouting: the looped-back UDP goes to the tproxy inbound, destination untouched
    chain("tproxy_udp", "filter", "prerouting", PRIORITY_MANGLE)
    for nfproto, address, family in (("ipv4", "127.0.0.1", "ip"), ("ipv6", "::1", "ip6")):
        if nfproto not in families:
            continue
        rule("tproxy_udp", [
            _match(_meta("nfproto"), nfproto),
            _match(_meta("mark"), TPROXY_MARK),
            _match(_meta("l4proto"), "udp"),
            {"tproxy": {"family": family, "addr": address, "port": plan.udp_port}},
            ACCEPT,
        ])
    return commands


def _guard(plan: Plan) -> list[dict[str, Any]]:
    table = GUARD
    commands: list[dict[str, Any]] = [
        {"add": {"table": {"family": FAMILY, "name": table}}},
        *_sets(table, {"servers": plan.servers, "direct": plan.direct, "lan": plan.lan}),
        {"add": {"chain": {
            "family": FAMILY, "table": table, "name": "out", "type": "filter",
            "hook": "output", "prio": PRIORITY_FILTER, "policy": "drop",
        }}},
    ]

    def rule(expr: Rule) -> None:
        commands.append({"add": {"rule": {
            "family": FAMILY, "table": table, "chain": "out", "expr": expr,
        }}})

    # loopback, and what was diverted: the output hook's oif is the route before NAT or a
    # mark rerouted the packet, so diverted traffic is told by its new address or its mark
    rule([_match(_meta("oif"), "lo"), ACCEPT])
    # a flow let out once is let out for good on one compare, instead of walking the list
    # (with a route lookup) for every packet of a bulk transfer
    rule([_match({"ct": {"key": "mark"}}, GUARD_PASSED), ACCEPT])
    passed = {"mangle": {"key": {"ct": {"key": "mark"}}, "value": GUARD_PASSED}}
    rule([_match({"fib": {"result": "type", "flags": ["daddr"]}}, "local"), passed, ACCEPT])
    rule([_match(_meta("mark"), TPROXY_MARK), ACCEPT])
    for expr in _exempt_rules(plan, ACCEPT):
        rule([*expr[:-1], passed, ACCEPT])
    # answers to connections others opened to this machine (an SSH session into it); never
    # the start of anything
    rule([_match({"ct": {"key": "direction"}}, "reply"), ACCEPT])
    # refuse rather than drop, so programs give up at once instead of after their timeouts
    rule([_match(_meta("l4proto"), "tcp"), {"reject": {"type": "tcp reset"}}])
    rule([{"reject": {"type": "icmpx", "expr": "admin-prohibited"}}])
    return commands


def _strict(plan: Plan) -> list[dict[str, Any]]:
    """DNS over TLS/QUIC refused in the intercept table (DoH goes to the router's block rule),
    before the diversion would carry it to the tunnel."""
    table = INTERCEPT
    commands: list[dict[str, Any]] = [{"add": {"chain": {
        "family": FAMILY, "table": table, "name": "strict_dns", "type": "filter",
        "hook": "output", "prio": PRIORITY_NAT - 1, "policy": "accept",
    }}}]
    for proto in ("tcp", "udp"):
        commands.append({"add": {"rule": {
            "family": FAMILY, "table": table, "chain": "strict_dns", "expr": [
                _match(_payload(proto, "dport"), DOT_PORT),
                _match({"fib": {"result": "type", "flags": ["daddr"]}}, "local", "!="),
                {"reject": {"type": "icmpx", "expr": "admin-prohibited"}},
            ],
        }}})
    return commands


def _block_ipv6(plan: Plan) -> list[dict[str, Any]]:
    """Without a kill switch, IPv6 that is not tunnelled is still refused, never leaked."""
    table = INTERCEPT
    return [
        {"add": {"chain": {
            "family": FAMILY, "table": table, "name": "block_ipv6", "type": "filter",
            "hook": "output", "prio": PRIORITY_FILTER - 1, "policy": "accept",
        }}},
        *({"add": {"rule": {"family": FAMILY, "table": table, "chain": "block_ipv6",
                            "expr": expr}}} for expr in [
            [_match(_meta("nfproto"), "ipv6"), _match(_meta("oif"), "lo"), ACCEPT],
            [_match(_meta("nfproto"), "ipv6"),
             _match({"fib": {"result": "type", "flags": ["daddr"]}}, "local"), ACCEPT],
            [_match(_meta("nfproto"), "ipv6"), _marked(BYPASS_MARK), ACCEPT],
            [_match(_meta("nfproto"), "ipv6"), _in_set("servers", 6), ACCEPT],
            [_match(_meta("nfproto"), "ipv6"), _in_set("direct", 6), ACCEPT],
            [_match(_meta("nfproto"), "ipv6"), _in_set("lan", 6), ACCEPT],
            [_match(_meta("nfproto"), "ipv6"), _match({"ct": {"key": "direction"}}, "reply"),
             ACCEPT],
            [_match(_meta("nfproto"), "ipv6"),
             {"reject": {"type": "icmpx", "expr": "admin-prohibited"}}],
        ]),
    ]


def removal(tables: Iterable[str] = TABLES) -> list[dict[str, Any]]:
    """Commands that delete `tables` whether or not they exist (add is a no-op when they do)."""
    commands: list[dict[str, Any]] = []
    for name in tables:
        commands.append({"add": {"table": {"family": FAMILY, "name": name}}})
        commands.append({"delete": {"table": {"family": FAMILY, "name": name}}})
    return commands


def document(plan: Plan) -> dict[str, Any]:
    """The whole ruleset: old tables of ours removed and new ones made, in one transaction."""
    commands = removal()
    commands += _intercept(plan)
    if plan.strict_dns:
        commands += _strict(plan)
    if plan.ipv6 == "block" and not plan.kill_switch:
        commands += _block_ipv6(plan)
    if plan.kill_switch:
        commands += _guard(plan)
    return {"nftables": [{"metainfo": {"json_schema_version": 1}}, *commands]}


def guard_only(plan: Plan) -> dict[str, Any]:
    """Just the kill switch, for after the engine stopped: nothing leaks until --off."""
    return {"nftables": [{"metainfo": {"json_schema_version": 1}}, *removal(), *_guard(plan)]}
