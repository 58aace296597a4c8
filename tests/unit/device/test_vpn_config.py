"""The engine `elsewhere vpn` builds: its transparent inbounds, the direct outbound that marks
its sockets, and the router that sends the server's own name and the split rules direct and
the public DoH/DoT resolvers nowhere (strict DNS)."""

from __future__ import annotations

from elsewhere import rulesets
from elsewhere.control.links import parse_access_key
from elsewhere.device.ruleset import BYPASS_MARK
from elsewhere.device.vpn import VpnSettings, engine_config
from elsewhere.engine import Engine
from elsewhere.session import Destination, Session

LINK = "ss://YWVzLTI1Ni1nY206c2VjcmV0@vpn.example.net:8388#test"


def engine(strict: bool = True) -> Engine:
    settings = VpnSettings(key=parse_access_key(LINK), strict_dns=strict,
                           resolv_conf="/nonexistent")
    split = rulesets.parse("domain_suffix bank.example\ncidr 198.51.100.0/24\n", "t")
    return Engine(engine_config(settings, split, "vpn.example.net"))


def route(built: Engine, host: str, port: int = 443, domain: str | None = None) -> str:
    return built.router.route(Session("redirect", Destination(host, port), "tcp", domain=domain))


def test_the_inbounds_are_the_transparent_ones_and_direct_marks_its_sockets() -> None:
    built = engine()
    assert [i.tag for i in built.inbounds] == ["dns", "redirect", "tproxy"]
    assert built.outbounds["direct"].mark == BYPASS_MARK  # type: ignore[attr-defined]


def test_the_servers_own_name_and_the_split_rules_go_direct_the_rest_through_the_tunnel() -> None:
    built = engine()
    assert route(built, "vpn.example.net", 53) == "direct"  # its lookup cannot wait for itself
    assert route(built, "online.bank.example") == "direct"
    assert route(built, "203.0.113.5", domain="www.bank.example") == "direct"
    assert route(built, "198.51.100.20") == "direct"
    assert route(built, "203.0.113.5", domain="instagram.test") == "proxy"


def test_strict_dns_blocks_the_public_doh_resolvers_by_name_and_address() -> None:
    built = engine()
    assert route(built, "dns.google") == "block"
    assert route(built, "1.1.1.1", 853) == "block"
    assert route(built, "8.8.8.8", 80) == "proxy"  # only their DoH/DoT ports
    assert route(engine(strict=False), "dns.google") == "proxy"
