"""Keys in sing-box's form: the public-key pin as sing-box's own documentation computes it (with
openssl), kept across a renewal with the same key; outbounds for each kind of key, pinned where
a pin is known, insecure only where the link asks for it and there is nothing to pin."""

from __future__ import annotations

import base64
import hashlib
import subprocess
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from elsewhere.control.certs import public_key_pin, self_signed
from elsewhere.control.links import parse_access_key
from elsewhere.control.singbox import PROXY_PORT, outbound, profile
from elsewhere.errors import ConfigError

UUID = "b831381d-6324-4d53-ad4f-8cda48b30811"
PIN = base64.b64encode(hashlib.sha256(b"a key").digest()).decode()
VLESS_WS = (
    f"vless://{UUID}@203.0.113.7:8443?encryption=none&security=tls&sni=203.0.113.7&type=ws"
    "&host=203.0.113.7&path=%2Fsecret&pcs=" + "AB" * 32 + "&allowInsecure=1#carol"
)
TROJAN = "trojan://pass%2Fword@vpn.example:443?security=tls&sni=vpn.example&type=tcp#dave"


def openssl_pin(cert: Path) -> str:
    """sing-box's documented recipe (docs/configuration/shared/tls.md)."""
    script = (
        f"openssl x509 -in {cert} -pubkey -noout | openssl pkey -pubin -outform der"
        " | openssl dgst -sha256 -binary | openssl enc -base64"
    )
    return subprocess.run(["sh", "-c", script], capture_output=True, text=True, check=True).stdout


def test_the_public_key_pin_is_what_sing_boxs_recipe_computes(tmp_path: Path) -> None:
    cert, _, _ = self_signed(tmp_path, ["203.0.113.7"])
    assert public_key_pin(cert) == openssl_pin(cert).strip()


def test_a_renewal_that_keeps_the_key_keeps_the_public_key_pin(tmp_path: Path) -> None:
    now = datetime(2026, 6, 1, tzinfo=UTC)
    cert, _, whole = self_signed(tmp_path, ["localhost"], now=now, days=60)
    before = public_key_pin(cert)
    cert, _, renewed = self_signed(tmp_path, ["localhost"], now=now + timedelta(days=45))
    assert renewed != whole  # the share links' pcs= changes with every certificate
    assert public_key_pin(cert) == before


def test_a_vless_ws_key_with_a_pin_is_checked_by_the_pin_alone() -> None:
    out = outbound(parse_access_key(VLESS_WS), PIN)
    assert out == {
        "type": "vless",
        "tag": "proxy",
        "server": "203.0.113.7",
        "server_port": 8443,
        "uuid": UUID,
        "packet_encoding": "",
        "tls": {
            "enabled": True,
            "server_name": "203.0.113.7",
            "certificate_public_key_sha256": [PIN],
        },
        "transport": {"type": "ws", "path": "/secret", "headers": {"Host": "203.0.113.7"}},
    }


def test_without_a_pin_only_the_link_asking_for_it_skips_the_check() -> None:
    assert outbound(parse_access_key(VLESS_WS))["tls"]["insecure"] is True
    tls = outbound(parse_access_key(TROJAN))["tls"]  # a real certificate (--domain, --acme)
    assert tls == {"enabled": True, "server_name": "vpn.example"}


def test_a_trojan_key_has_its_password_and_no_transport() -> None:
    out = outbound(parse_access_key(TROJAN), tag="dave")
    assert out["type"] == "trojan" and out["password"] == "pass/word" and out["tag"] == "dave"
    assert "transport" not in out and "uuid" not in out


def test_shadowsocks_keys_keep_method_and_password() -> None:
    ss2022 = parse_access_key(
        "ss://2022-blake3-aes-128-gcm:c2VydmVyLWtleS0xNi1ieXQ%3D%3Auc2VyLWtleS0xNi1ieXRl"
        "@198.51.100.1:8388#bob"
    )
    out = outbound(ss2022)
    assert out["type"] == "shadowsocks" and out["method"] == "2022-blake3-aes-128-gcm"
    assert out["password"] == ss2022.password and ":" in out["password"]


def test_the_profile_is_a_local_proxy_through_the_key() -> None:
    config = profile(parse_access_key(VLESS_WS), PIN)
    (inbound,) = config["inbounds"]
    assert inbound["type"] == "mixed" and inbound["listen"] == "127.0.0.1"
    assert inbound["listen_port"] == PROXY_PORT
    assert config["outbounds"][0]["tag"] == "carol" == config["route"]["final"]


def test_a_reality_key_gets_one_line_saying_to_import_its_link() -> None:
    reality = parse_access_key(
        f"vless://{UUID}@203.0.113.7:8443?encryption=none&security=reality&sni=www.example.com"
        "&fp=chrome&pbk=SbVKOEMjK0sIlbwg4akyBg5mL5KZwwB-ed4eEE7YnRc&sid=ab&type=tcp"
        "&flow=xtls-rprx-vision#erin"
    )
    with pytest.raises(ConfigError, match="security=reality: import its link"):
        outbound(reality)
