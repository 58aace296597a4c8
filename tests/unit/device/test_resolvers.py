"""The machine's own resolvers, asked only for names sent direct: systemd-resolved's stub is
replaced by the resolvers it forwards to (its own queries would come back to us)."""

from __future__ import annotations

from pathlib import Path

from elsewhere.device.resolvers import system_resolvers


def test_a_plain_resolv_conf_is_taken_as_it_is(tmp_path: Path) -> None:
    conf = tmp_path / "resolv.conf"
    conf.write_text("# ISP\nnameserver 192.0.2.53\nnameserver fe80::1%eth0\nsearch lan\n"
                    "nameserver not-an-address\n")
    assert system_resolvers(conf, tmp_path / "none") == ["192.0.2.53", "fe80::1"]


def test_systemd_resolveds_stub_is_replaced_by_its_upstreams(tmp_path: Path) -> None:
    conf = tmp_path / "resolv.conf"
    conf.write_text("nameserver 127.0.0.53\noptions edns0 trust-ad\n")
    upstream = tmp_path / "upstream.conf"
    upstream.write_text("nameserver 198.51.100.1\nnameserver 198.51.100.2\n")
    assert system_resolvers(conf, upstream) == ["198.51.100.1", "198.51.100.2"]


def test_without_a_resolv_conf_there_are_none(tmp_path: Path) -> None:
    assert system_resolvers(tmp_path / "missing") == []
