"""The direct outbound's address policy on IP literals, checked once per host string."""

from __future__ import annotations

import socket

import pytest

from elsewhere.errors import PolicyError
from elsewhere.outbounds import direct
from elsewhere.outbounds.direct import NAME, DirectOutbound
from elsewhere.policy import AddressPolicy
from elsewhere.session import Destination


def outbound(private: str = "deny") -> DirectOutbound:
    return DirectOutbound("direct", AddressPolicy.from_config(private))


def test_a_public_literal_connects_to_its_canonical_address() -> None:
    out = outbound()
    assert out.literal_address(Destination("2001:db8::0001", 443)) == [
        (socket.AF_INET6, ("2001:db8::1", 443))
    ]
    assert out.literal_address(Destination("93.184.216.34", 80)) == [
        (socket.AF_INET, ("93.184.216.34", 80))
    ]


@pytest.mark.parametrize(
    "host", ["127.0.0.1", "10.1.2.3", "169.254.169.254", "::1", "::ffff:10.0.0.1"]
)
def test_a_private_literal_is_refused_every_time_it_is_asked(host: str) -> None:
    out = outbound()
    for _ in range(2):  # the second answer comes from the kept verdict
        with pytest.raises(PolicyError):
            out.literal_address(Destination(host, 80))
    assert out.verdicts == {host: None}


def test_private_allow_lets_the_literal_through() -> None:
    assert outbound("allow").literal_address(Destination("10.1.2.3", 80)) == [
        (socket.AF_INET, ("10.1.2.3", 80))
    ]


def test_a_name_is_left_to_the_resolver_and_not_kept() -> None:
    out = outbound()
    assert out.verdict("example.com") is NAME
    assert out.literal_address(Destination("example.com", 80)) is None
    assert out.verdicts == {}


def test_the_kept_verdicts_are_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(direct, "VERDICTS", 3)
    out = outbound()
    for n in range(10):
        out.verdict(f"192.0.2.{n}")
    assert 1 <= len(out.verdicts) <= 3
