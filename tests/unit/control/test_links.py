"""SIP002 ss:// links: the spec's own examples, Outline keys and prefixes, the legacy form,
round trips, and one clear line for every mistake."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from elsewhere.control.links import AccessKey, format_access_key, parse_access_key, schemes
from elsewhere.control.links_ss import format_ss
from elsewhere.errors import ConfigError
from elsewhere.session import Destination

schemes()  # the protocols register their schemes on first use: once, outside hypothesis's deadline

SIP022_PASSWORD = "YctPZ6U7xPPcU+gp3u+0tx/tRizJN9K8y+uKlW2qjlI="


def key(**fields: object) -> AccessKey:
    values: dict = {
        "protocol": "ss",
        "method": "aes-128-gcm",
        "password": "test",
        "host": "192.168.100.1",
        "port": 8888,
    }
    values.update(fields)
    return AccessKey(**values)


# The examples printed in SIP002, link for link.
SIP002_EXAMPLES = [
    (
        "ss://YWVzLTEyOC1nY206dGVzdA@192.168.100.1:8888#Example1",
        key(name="Example1"),
    ),
    (
        "ss://cmM0LW1kNTpwYXNzd2Q@192.168.100.1:8888/?plugin=obfs-local%3Bobfs%3Dhttp#Example2",
        key(method="rc4-md5", password="passwd", plugin="obfs-local;obfs=http", name="Example2"),
    ),
    (
        "ss://2022-blake3-aes-256-gcm:YctPZ6U7xPPcU%2Bgp3u%2B0tx%2FtRizJN9K8y%2BuKlW2qjlI%3D"
        "@192.168.100.1:8888#Example3",
        key(method="2022-blake3-aes-256-gcm", password=SIP022_PASSWORD, name="Example3"),
    ),
    (
        "ss://2022-blake3-aes-256-gcm:YctPZ6U7xPPcU%2Bgp3u%2B0tx%2FtRizJN9K8y%2BuKlW2qjlI%3D"
        "@192.168.100.1:8888/?plugin=v2ray-plugin%3Bserver#Example3",
        key(
            method="2022-blake3-aes-256-gcm",
            password=SIP022_PASSWORD,
            plugin="v2ray-plugin;server",
            name="Example3",
        ),
    ),
]


@pytest.mark.parametrize(("link", "expected"), SIP002_EXAMPLES)
def test_sip002_examples_parse_and_are_written_back_identically(
    link: str, expected: AccessKey
) -> None:
    assert parse_access_key(link) == expected
    assert format_access_key(expected) == link


def test_unsupported_arguments_are_kept_but_do_not_matter() -> None:
    parsed = parse_access_key(
        "ss://YmYtY2ZiOnRlc3Q@192.168.100.1:8888/?plugin=url-encoded-plugin-argument-value"
        "&unsupported-arguments=should-be-ignored#Dummy+profile+name"
    )
    assert (parsed.method, parsed.password) == ("bf-cfb", "test")
    assert parsed.plugin == "url-encoded-plugin-argument-value"
    assert dict(parsed.extra) == {"unsupported-arguments": "should-be-ignored"}


@pytest.mark.parametrize(
    "userinfo",
    [
        "YWVzLTEyOC1nY206dGVzdA",  # base64url, no padding (SIP002)
        "YWVzLTEyOC1nY206dGVzdA==",  # padded
        "YWVzLTEyOC1nY206dGVzdA%3D%3D",  # padded, and the padding percent-encoded
        "aes-128-gcm:test",  # plain
        "aes-128-gcm:%74%65%73%74",  # plain, percent-encoded
    ],
)
def test_every_user_info_encoding_in_the_wild_is_read(userinfo: str) -> None:
    assert parse_access_key(f"ss://{userinfo}@192.168.100.1:8888") == key()


def test_standard_and_url_safe_base64_alphabets_are_both_read() -> None:
    # "aes-256-gcm:??>>" encodes to characters that differ between the two alphabets.
    standard = "YWVzLTI1Ni1nY206Pz8+Pg=="
    url_safe = "YWVzLTI1Ni1nY206Pz8-Pg"
    for userinfo in (standard, url_safe):
        parsed = parse_access_key(f"ss://{userinfo}@example.com:443")
        assert (parsed.method, parsed.password) == ("aes-256-gcm", "??>>")


def test_outline_key_with_tls_prefix() -> None:
    # Outline's documented TLS ClientHello-looking prefix: byte 0xA8 is written as U+00A8.
    parsed = parse_access_key(
        "ss://Y2hhY2hhMjAtaWV0Zi1wb2x5MTMwNTpPeTVtQnVBSXp6U044Wlo5@203.0.113.7:443/"
        "?outline=1&prefix=%16%03%01%00%C2%A8%01%01"
    )
    assert parsed.method == "chacha20-ietf-poly1305"
    assert parsed.password == "Oy5mBuAIzzSN8ZZ9"
    assert parsed.prefix == b"\x16\x03\x01\x00\xa8\x01\x01"
    assert dict(parsed.extra) == {"outline": "1"}
    assert "prefix=%16%03%01%00%C2%A8%01%01" in format_ss(parsed)


@pytest.mark.parametrize(
    ("written", "prefix"),
    [  # The prefixes the Outline SDK suggests trying, as its README writes them.
        ("POST%20", b"POST "),
        ("HTTP%2F1.1%20", b"HTTP/1.1 "),
        ("%05%C3%9C_%C3%A0%01%20", b"\x05\xdc_\xe0\x01 "),
        ("%16%03%01%40%00%01", b"\x16\x03\x01\x40\x00\x01"),
        ("%13%03%03%3F", b"\x13\x03\x03?"),
    ],
)
def test_outline_prefixes_are_read_as_code_points(written: str, prefix: bytes) -> None:
    link = f"ss://YWVzLTEyOC1nY206dGVzdA@192.168.100.1:8888/?prefix={written}"
    assert parse_access_key(link).prefix == prefix


def test_prefix_written_as_raw_percent_bytes_is_accepted() -> None:
    link = "ss://YWVzLTEyOC1nY206dGVzdA@192.168.100.1:8888/?prefix=%16%03%01%00%A8"
    assert parse_access_key(link).prefix == b"\x16\x03\x01\x00\xa8"


def test_ipv6_host_is_bracketed_in_the_link() -> None:
    link = format_ss(key(host="2001:db8::1", port=443))
    assert "@[2001:db8::1]:443" in link
    parsed = parse_access_key(link)
    assert parsed.destination == Destination("2001:db8::1", 443)


def test_legacy_all_base64_form() -> None:
    # base64("bf-cfb:test@192.168.100.1:8888"), as shadowsocks clients wrote before SIP002.
    parsed = parse_access_key("ss://YmYtY2ZiOnRlc3RAMTkyLjE2OC4xMDAuMTo4ODg4#example-server")
    assert parsed == key(method="bf-cfb", name="example-server")


def test_legacy_form_with_at_in_password_ipv6_and_trailing_newline() -> None:
    # base64("aes-256-gcm:pass@word@[2001:db8::7]:443\n")
    parsed = parse_access_key("ss://YWVzLTI1Ni1nY206cGFzc0B3b3JkQFsyMDAxOmRiODo6N106NDQzCg==#old")
    assert (parsed.password, parsed.host, parsed.port) == ("pass@word", "2001:db8::7", 443)


def test_whitespace_around_a_pasted_key_is_ignored() -> None:
    assert parse_access_key("  ss://YWVzLTEyOC1nY206dGVzdA@192.168.100.1:8888\n") == key()


def test_name_is_percent_encoded() -> None:
    link = format_ss(key(name="Мой сервер #1"))
    assert link.endswith("#%D0%9C%D0%BE%D0%B9%20%D1%81%D0%B5%D1%80%D0%B2%D0%B5%D1%80%20%231")
    assert parse_access_key(link).name == "Мой сервер #1"


def test_aead_user_info_is_base64url_without_padding() -> None:
    link = format_ss(key(password="a?b/c+d"))
    userinfo = link.removeprefix("ss://").split("@")[0]
    assert "=" not in userinfo and "+" not in userinfo and "/" not in userinfo


IPSK = "t+uk/Fup1H9GeQA9M+2omA=="
UPSK = "8fxBYJbztKkTgtkMQi7pPw=="


def test_multi_user_2022_key_percent_encodes_the_colon_between_ipsk_and_upsk() -> None:
    multi = key(method="2022-blake3-aes-128-gcm", password=f"{IPSK}:{UPSK}")
    link = format_ss(multi)
    assert link.startswith(
        "ss://2022-blake3-aes-128-gcm:t%2Buk%2FFup1H9GeQA9M%2B2omA%3D%3D%3A8fxBYJbztKkTgtkMQi7pPw"
    )
    assert parse_access_key(link) == multi


def test_multi_user_2022_key_written_without_percent_encoding_is_read() -> None:
    parsed = parse_access_key(f"ss://2022-blake3-aes-128-gcm:{IPSK}:{UPSK}@192.168.100.1:8888")
    assert (parsed.method, parsed.password) == ("2022-blake3-aes-128-gcm", f"{IPSK}:{UPSK}")


def test_repr_hides_the_password() -> None:
    assert "test" not in repr(key(password="test"))


def test_key_is_hashable_and_its_params_frozen() -> None:
    k = key(extra={"outline": "1"})
    assert hash(k) == hash(key(extra={"outline": "1"}))
    with pytest.raises(TypeError):
        k.extra["outline"] = "2"  # type: ignore[index]


hosts = st.one_of(
    st.ip_addresses().map(str),
    st.from_regex(r"[a-z0-9]([a-z0-9-]{0,20}\.){0,3}[a-z]{2,6}", fullmatch=True),
)
methods = st.sampled_from(
    [
        "chacha20-ietf-poly1305",
        "aes-256-gcm",
        "aes-128-gcm",
        "2022-blake3-aes-128-gcm",
        "2022-blake3-chacha20-poly1305",
    ]
)
param_names = st.text(min_size=1).filter(lambda n: n not in ("plugin", "prefix"))


@settings(max_examples=300)
@given(
    method=methods,
    password=st.text(min_size=1),
    host=hosts,
    port=st.integers(1, 65535),
    name=st.text(),
    prefix=st.binary(max_size=16),
    plugin=st.text(),
    extra=st.dictionaries(param_names, st.text(), max_size=3),
)
def test_any_key_survives_a_round_trip_through_its_link(
    method: str,
    password: str,
    host: str,
    port: int,
    name: str,
    prefix: bytes,
    plugin: str,
    extra: dict[str, str],
) -> None:
    original = AccessKey("ss", method, password, host, port, name, prefix, plugin, extra)
    link = format_access_key(original)
    assert link.isascii() and not any(c.isspace() for c in link)
    assert parse_access_key(link) == original


# Each mistake gets one line that says what is wrong and, where it helps, what a key looks like.
MISTAKES = [
    ("", "not an access key: expected ss://"),
    ("YWVzLTEyOC1nY206dGVzdA@1.2.3.4:8888", "not an access key: expected ss://"),
    ("vmess://eyJhZGQiOiIxLjIuMy40In0=", "vmess:// are not supported: use ss://"),
    ("ss://YWVzLTEyOC1nY206dGVzdA@192.168.100.1", "has no port: expected ss://"),
    ("ss://YWVzLTEyOC1nY206dGVzdA@192.168.100.1:", "port '' is not a number from 1 to 65535"),
    ("ss://YWVzLTEyOC1nY206dGVzdA@192.168.100.1:99999", "'99999' is not a number from 1"),
    ("ss://YWVzLTEyOC1nY206dGVzdA@192.168.100.1:http", "'http' is not a number from 1"),
    ("ss://YWVzLTEyOC1nY206dGVzdA@:8888", "has no host"),
    ("ss://YWVzLTEyOC1nY206dGVzdA@2001:db8::1:8888", "IPv6 host must be in brackets"),
    ("ss://YWVzLTEyOC1nY206dGVzdA@[2001:db8::1:8888", "no closing ']'"),
    ("ss://YWVzLTEyOC1nY206dGVzdA@[not:v6]:8888", "is not an IPv6 address"),
    ("ss://bm8gY29sb24@1.2.3.4:8888", "neither base64 of method:password nor"),
    ("ss://%%%@1.2.3.4:8888", "neither base64 of method:password nor"),
    ("ss://aes-128-gcm:@1.2.3.4:8888", "empty password"),
    ("ss://b64 method:pw@1.2.3.4:8888", "method 'b64 method' is not a cipher name"),
    ("ss://YWVzLTEyOC1nY206dGVzdA@1.2.3.4:8888/path", "path after host:port"),
    ("ss://bm90IGEga2V5", "no user info or host"),
    ("ss://YWVzLTEyOC1nY206dGVzdA@1.2.3.4:8888/?prefix=%C4%80", "prefix has a character above"),
]


@pytest.mark.parametrize(("text", "message"), MISTAKES)
def test_malformed_key_is_one_clear_line(text: str, message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_access_key(text)
    assert message in str(caught.value)
    assert "\n" not in str(caught.value)


def test_error_never_shows_the_password() -> None:
    with pytest.raises(ConfigError) as caught:
        parse_access_key("ss://aes-128-gcm:hunter2@1.2.3.4:notaport")
    assert "hunter2" not in str(caught.value)
