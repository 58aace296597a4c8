"""Split rule sets: the shipped ones load, a user's file is read line by line, and a mistake
names the file, the line and what is wrong; the router applies them to names, to addresses
and to addresses whose name full-device mode learnt from DNS."""

from __future__ import annotations

import ipaddress
from pathlib import Path

import pytest

from elsewhere import rulesets
from elsewhere.errors import ConfigError
from elsewhere.router import Router, parse_rule
from elsewhere.session import Destination, Session


def test_the_shipped_russian_set_sends_the_countrys_domains_and_banks_direct() -> None:
    ru = rulesets.load("ru")
    assert {"ru", "xn--p1ai", "su", "gosuslugi.ru", "sberbank.ru", "tinkoff.ru"} <= set(
        ru.suffixes)


def test_a_users_file_with_every_kind_of_rule(tmp_path: Path) -> None:
    path = tmp_path / "mine.txt"
    path.write_text("# mine\ndomain_suffix Bank.Example.  # with a comment\n\n"
                    "domain shop.example\ncidr 203.0.113.7/24\ncidr 2001:db8::/32\n"
                    "cgroup /system.slice/backup.service\n")
    rules = rulesets.load(str(path))
    assert rules.suffixes == ["bank.example"]
    assert rules.domains == ["shop.example"]
    assert rules.networks == [ipaddress.ip_network("203.0.113.0/24"),
                              ipaddress.ip_network("2001:db8::/32")]
    assert rules.cgroups == ["system.slice/backup.service"]


@pytest.mark.parametrize(("line", "what"), [
    ("domian_suffix ru", "unknown rule 'domian_suffix'"),
    ("cidr 10.0.0.300/8", "'10.0.0.300/8' is not a network"),
    ("domain", "domain takes exactly one value"),
    ("domain_suffix a b", "domain_suffix takes exactly one value"),
    ("domain http://x.example/", "is not a domain name"),
])
def test_a_malformed_file_names_the_file_the_line_and_what(
    tmp_path: Path, line: str, what: str
) -> None:
    path = tmp_path / "bad.txt"
    path.write_text(f"domain_suffix ok.example\n# fine\n{line}\n")
    with pytest.raises(ConfigError) as caught:
        rulesets.load(str(path))
    message = str(caught.value)
    assert message.startswith(f"{path}, line 3: ")
    assert what in message
    assert "\n" not in message


def test_a_missing_file_says_so_and_lists_the_shipped_sets() -> None:
    with pytest.raises(ConfigError, match=r"no such file .*shipped sets: ru, doh"):
        rulesets.load("/nonexistent/rules.txt")


def router_for(rules: rulesets.RuleSet) -> Router:
    outbounds = ("proxy", "direct")
    return Router([parse_rule(r, i, outbounds)
                   for i, r in enumerate(rules.router_rules("direct"))], "proxy",
                  frozenset(outbounds))


def test_the_router_sends_names_addresses_and_learnt_names_the_sets_way() -> None:
    rules = rulesets.parse("domain_suffix bank.example\ncidr 198.51.100.0/24\n", "t")
    router = router_for(rules)

    def route(host: str, domain: str | None = None) -> str:
        return router.route(Session("in", Destination(host, 443), "tcp", domain=domain))

    assert route("www.bank.example") == "direct"
    assert route("bank.example.org") == "proxy"
    assert route("198.51.100.9") == "direct"
    assert route("192.0.2.1") == "proxy"
    assert route("192.0.2.1", domain="online.bank.example") == "direct"
    assert route("192.0.2.1", domain="instagram.test") == "proxy"
