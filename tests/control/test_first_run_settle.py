"""Commands that print links before the first `elsewhere server` settle first what that run
would (issue 18): ports, host and certificate, once; the server's first run then changes none of
it, and a later run that does change what links carry says so."""

from __future__ import annotations

from pathlib import Path

import pytest

from elsewhere.control import cli, roles
from elsewhere.control.certs import self_signed
from elsewhere.control.links import parse_access_key
from ports import free_port


def test_settling_decides_once_what_the_first_server_run_would(tmp_path: Path) -> None:
    store = roles.open_store(tmp_path)
    try:
        decided = roles.settle(store, tmp_path)
        assert [d.split()[0] for d in decided] == ["host", "ports", "a"]
        assert store.get_setting("tls") == "self-signed"
        assert store.get_setting("tls_pin") and store.get_setting("tls_key_pin")
        assert (tmp_path / "certificates" / "self-signed" / "cert.pem").is_file()
        assert roles.settle(store, tmp_path) == []
        before = roles.link_settings(store)
        roles.prepare_server(store, None, store.get_setting("host"), None, data=tmp_path)
        assert roles.changed_links(before, store) == []
        assert roles.link_settings(store) == before
    finally:
        store.close()


def test_a_server_run_that_chose_a_certificate_is_not_second_guessed(tmp_path: Path) -> None:
    cert, key, _ = self_signed(tmp_path / "elsewhere", ["vpn.example"])
    store = roles.open_store(tmp_path)
    try:
        roles.prepare_server(
            store, None, "vpn.example", None, data=tmp_path, cert=(str(cert), str(key))
        )
        assert roles.settle(store, tmp_path) == []
        assert store.get_setting("tls_pin") is None and store.get_setting("tls_key_pin") is None
        assert not (tmp_path / "certificates").exists()
    finally:
        store.close()


def test_a_server_run_that_moves_the_tls_port_says_the_old_links_are_stale(tmp_path: Path) -> None:
    store = roles.open_store(tmp_path)
    try:
        roles.settle(store, tmp_path)
        before = roles.link_settings(store)
        tls = free_port()
        roles.prepare_server(store, None, None, None, ports={"port_tls": tls}, data=tmp_path)
        assert roles.changed_links(before, store) == ["--port-tls"]
    finally:
        store.close()


def test_keys_add_before_any_server_run_settles_in_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    home = ["--data-dir", str(tmp_path)]
    assert (
        cli.main(
            ["keys", "add", "carol", "--protocol", "vless", "--method", "ws", "--no-qr", *home]
        )
        == 0
    )
    out, err = capsys.readouterr()
    assert err.count("\n") == 1 and "no server has run here yet" in err
    assert "a self-signed certificate" in err and "elsewhere server --host" in err
    link = next(w for w in out.split() if w.startswith("vless://"))
    key = parse_access_key(link)
    store = roles.open_store(tmp_path)
    try:
        assert key.port == int(store.get_setting("port_tls") or 0)
        assert key.extra["pcs"] == store.get_setting("tls_pin")
        assert f"(certificate_public_key_sha256): {store.get_setting('tls_key_pin')}" in out
    finally:
        store.close()
    assert cli.main(["keys", "add", "dave", "--protocol", "trojan", "--no-qr", *home]) == 0
    assert capsys.readouterr().err == ""  # settled already: nothing more to say
