"""The nftables document of full-device mode, read as data: what is diverted, what the kill
switch lets out, and that it replaces our tables in one transaction."""

from __future__ import annotations

import ipaddress
import json
from typing import Any

from elsewhere.device.ruleset import (
    BYPASS_MARK,
    GUARD,
    INTERCEPT,
    TPROXY_MARK,
    Plan,
    document,
    guard_only,
)


def plan(**changes: Any) -> Plan:
    base: dict[str, Any] = dict(tcp_port=7000, udp_port=7001, dns_port=7002,
                                servers=(ipaddress.ip_network("192.0.2.10/32"),))
    return Plan(**{**base, **changes})


def commands(doc: dict[str, Any]) -> list[dict[str, Any]]:
    return doc["nftables"][1:]


def rules(doc: dict[str, Any], table: str, chain: str) -> list[str]:
    return [json.dumps(c["add"]["rule"]["expr"]) for c in commands(doc)
            if "rule" in c.get("add", {}) and c["add"]["rule"]["table"] == table
            and c["add"]["rule"]["chain"] == chain]


def test_our_old_tables_go_and_new_ones_come_in_the_same_transaction() -> None:
    doc = document(plan())
    head = [next(iter(c)) + " " + c[next(iter(c))]["table"]["name"]
            for c in commands(doc)[:4]]
    assert head == [f"add {INTERCEPT}", f"delete {INTERCEPT}", f"add {GUARD}", f"delete {GUARD}"]


def test_dns_is_diverted_before_anything_is_exempted_and_tcp_last() -> None:
    chain = rules(document(plan()), INTERCEPT, "divert_tcp")
    assert f'"mark"}}}}, {BYPASS_MARK}]' in chain[0]  # our own sockets first
    assert '"redirect": {"port": 7002}' in chain[1] and '"udp"' in chain[1]
    assert '"redirect": {"port": 7002}' in chain[2] and '"tcp"' in chain[2]
    assert '"@servers4"' in chain[3]
    assert chain[-1].endswith('{"redirect": {"port": 7000}}]')


def test_udp_is_marked_for_the_loop_through_lo_and_handed_to_tproxy() -> None:
    doc = document(plan())
    marking = rules(doc, INTERCEPT, "mark_udp")
    assert f'"value": {TPROXY_MARK}' in marking[-1]
    handing = rules(doc, INTERCEPT, "tproxy_udp")
    assert handing == [json.dumps([
        {"match": {"op": "==", "left": {"meta": {"key": "nfproto"}}, "right": "ipv4"}},
        {"match": {"op": "==", "left": {"meta": {"key": "mark"}}, "right": TPROXY_MARK}},
        {"match": {"op": "==", "left": {"meta": {"key": "l4proto"}}, "right": "udp"}},
        {"tproxy": {"family": "ip", "addr": "127.0.0.1", "port": 7001}},
        {"accept": None},
    ])]


def test_ipv6_is_diverted_only_when_tunnelled() -> None:
    assert not [r for r in rules(document(plan()), INTERCEPT, "divert_tcp") if "ipv6" in r]
    tunnelled = rules(document(plan(ipv6="tunnel")), INTERCEPT, "tproxy_udp")
    assert len(tunnelled) == 2 and '"addr": "::1"' in tunnelled[1]


def test_the_kill_switch_drops_by_default_and_lets_out_only_ours_and_the_servers() -> None:
    doc = document(plan(direct=(ipaddress.ip_network("10.1.0.0/16"),
                                ipaddress.ip_network("10.1.2.0/24"))))
    chain = next(c["add"]["chain"] for c in commands(doc)
                 if "chain" in c.get("add", {}) and c["add"]["chain"]["table"] == GUARD)
    assert (chain["hook"], chain["policy"]) == ("output", "drop")
    accepted = rules(doc, GUARD, "out")
    assert any(f"{BYPASS_MARK}" in r and "accept" in r for r in accepted)
    sets = {c["add"]["set"]["name"]: c["add"]["set"].get("elem")
            for c in commands(doc) if "set" in c.get("add", {})
            and c["add"]["set"]["table"] == GUARD}
    assert sets["servers4"] == ["192.0.2.10"]
    assert sets["direct4"] == [{"prefix": {"addr": "10.1.0.0", "len": 16}}]  # overlap merged
    assert sets["servers6"] is None


def test_without_a_kill_switch_ipv6_is_still_refused() -> None:
    doc = document(plan(kill_switch=False))
    assert not [c for c in commands(doc) if c.get("add", {}).get("chain", {}).get("table") == GUARD]
    assert rules(doc, INTERCEPT, "block_ipv6")[-1].endswith('"admin-prohibited"}}]')


def test_after_a_stop_only_the_kill_switch_is_left() -> None:
    names = {c["add"]["table"]["name"] for c in commands(guard_only(plan()))
             if "table" in c.get("add", {})}
    deleted = {c["delete"]["table"]["name"] for c in commands(guard_only(plan()))
               if "delete" in c}
    assert names == {INTERCEPT, GUARD} and deleted == {INTERCEPT, GUARD}
    assert rules(guard_only(plan()), INTERCEPT, "divert_tcp") == []
