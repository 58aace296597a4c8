import pytest
from hypothesis import given
from hypothesis import strategies as st

from elsewhere.control.links import AccessKey, format_access_key, parse_access_key, schemes
from elsewhere.control.links_tls import outbound_options
from elsewhere.errors import ConfigError

schemes()  # the protocols register their schemes on first use: once, outside hypothesis's deadline

UUID = "b831381d-6324-4d53-ad4f-8cda48b30811"


def test_a_v2rayng_style_vless_ws_link_is_read_whole() -> None:
    key = parse_access_key(
        f"vless://{UUID}@example.com:443?encryption=none&security=tls&sni=cdn.example.com"
        "&fp=chrome&type=ws&host=cdn.example.com&path=%2Fsecret#My%20VPN"
    )
    assert (key.protocol, key.password, key.host, key.port, key.name) == (
        "vless",
        UUID,
        "example.com",
        443,
        "My VPN",
    )
    options = outbound_options(key)
    assert options == {
        "type": "vless",
        "server": "example.com",
        "port": 443,
        "security": "tls",
        "network": "ws",
        "uuid": UUID,
        "sni": "cdn.example.com",
        "path": "/secret",
        "host": "cdn.example.com",
        "fp": "chrome",
    }


def test_trojan_link_with_pin_and_ipv6() -> None:
    key = parse_access_key("trojan://p%40ss@[2001:db8::1]:8443?security=tls&pcs=AB12#t")
    assert key.password == "p@ss" and key.host == "2001:db8::1"
    assert outbound_options(key)["pin"] == "AB12"
    assert format_access_key(key).startswith("trojan://p%40ss@[2001:db8::1]:8443?security=tls")


@pytest.mark.parametrize(
    ("link", "words"),
    [
        ("vless://" + "x" * 40 + "@h:443", "not a UUID"),
        (f"vless://{UUID}@h:443?flow=xtls-rprx-splice", "flow"),  # only Vision is read
        (f"vless://{UUID}@h:443?type=grpc", "grpc"),
        ("trojan://@h:443", "empty secret"),
        ("trojan://secret@h", "port"),
        (f"vless://{UUID}@h:443?security=reality", "security=reality needs pbk="),
    ],
)
def test_keys_we_cannot_serve_are_one_clear_error(link: str, words: str) -> None:
    with pytest.raises(ConfigError, match=words):
        parse_access_key(link)


secrets = st.text(st.characters(min_codepoint=33, max_codepoint=0x2FF), min_size=1, max_size=30)


@given(
    secret=secrets,
    port=st.integers(1, 65535),
    name=st.text(max_size=20),
    path=st.from_regex(r"/[a-z0-9/?=]{0,12}", fullmatch=True),
    network=st.sampled_from(["tcp", "ws", "httpupgrade"]),
)
def test_trojan_links_round_trip(
    secret: str, port: int, name: str, path: str, network: str
) -> None:
    key = AccessKey(
        protocol="trojan",
        method="",
        password=secret,
        host="vpn.example",
        port=port,
        name=name,
        extra={"security": "tls", "type": network, "path": path, "sni": "a.b"},
    )
    again = parse_access_key(format_access_key(key))
    assert (again.password, again.port, again.name) == (secret, port, name)
    assert dict(again.extra) == dict(key.extra)
