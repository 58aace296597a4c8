"""The Shadowsocks client's request address (SIP004: SOCKS5-style ATYP address), kept per host
and port."""

from __future__ import annotations

import pytest

from elsewhere.codecs.address import encode_address
from elsewhere.outbounds import shadowsocks
from elsewhere.outbounds.shadowsocks import ShadowsocksOutbound, key_from_options
from elsewhere.session import Destination


def outbound() -> ShadowsocksOutbound:
    options = {"server": "127.0.0.1", "port": 8388, "method": "aes-256-gcm", "password": "pw"}
    return ShadowsocksOutbound("proxy", key_from_options("proxy", options))


@pytest.mark.parametrize(
    "destination",
    [Destination("192.0.2.7", 443), Destination("2001:db8::1", 80), Destination("пример.рф", 80)],
)
def test_the_kept_header_is_the_address_encoding(destination: Destination) -> None:
    out = outbound()
    first = out.header(destination)
    assert first == encode_address(destination)
    assert out.header(Destination(destination.host, destination.port)) is first


def test_another_port_is_another_header() -> None:
    out = outbound()
    assert out.header(Destination("example.com", 80)) != out.header(Destination("example.com", 81))


def test_the_kept_headers_are_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(shadowsocks, "HEADERS", 3)
    out = outbound()
    for port in range(1, 11):
        assert out.header(Destination("example.com", port))[-2:] == port.to_bytes(2, "big")
    assert 1 <= len(out.headers) <= 3
