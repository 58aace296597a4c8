"""XHTTP share links as the apps read them (`type=xhttp&path=…&host=…&mode=…&extra=<JSON>`, the
Xray share-link standard): read into a client that dials XHTTP, written by `keys add --method
xhttp [--cdn HOST]`."""

from __future__ import annotations

import json
from pathlib import Path
from urllib.parse import quote

import pytest

from elsewhere.codecs.xhttp import XhttpSettings
from elsewhere.control import roles
from elsewhere.control.links import format_access_key, parse_access_key
from elsewhere.control.links_tls import outbound_options
from elsewhere.errors import ConfigError
from elsewhere.transports.registry import compose
from elsewhere.transports.settings import StreamSettings

UUID = "b831381d-6324-4d53-ad4f-8cda48b30811"
EXTRA = {"xPaddingBytes": "100-1000", "xmux": {"maxConnections": 3}, "noSSEHeader": False}


def test_a_v2rayn_style_xhttp_link_becomes_an_xhttp_client() -> None:
    link = (
        f"vless://{UUID}@cdn.example.com:443?encryption=none&security=tls"
        "&sni=cdn.example.com&alpn=h2&fp=chrome&type=xhttp&host=cdn.example.com"
        f"&path=%2Fxh&mode=packet-up&extra={quote(json.dumps(EXTRA))}#phone"
    )
    key = parse_access_key(link)
    options = outbound_options(key)
    assert options["network"] == "xhttp"
    assert (options["path"], options["host"], options["mode"]) == (
        "/xh",
        "cdn.example.com",
        "packet-up",
    )
    assert json.loads(options["extra"]) == EXTRA
    settings = StreamSettings.from_options("proxy", options)
    assert [t.name for t in compose(settings)] == ["xhttp-tls"]
    xs = XhttpSettings.parse(settings.path, settings.host, options["mode"], options["extra"])
    assert xs.path == "/xh/" and xs.padding_bytes == (100, 1000)
    assert format_access_key(parse_access_key(format_access_key(key))) == format_access_key(key)


def test_keys_add_xhttp_writes_the_server_s_secret_path(tmp_path: Path) -> None:
    store = roles.open_store(tmp_path)
    try:
        record = roles.add_key(store, "carol", "xhttp", protocol="vless")
        link = roles.share_link(store, record)
        path = store.get_setting("xhttp_path")
    finally:
        store.close()
    key = parse_access_key(link)
    assert key.extra["type"] == "xhttp"
    assert key.extra["path"] == path and path.startswith("/") and len(path) > 8
    assert key.extra["mode"] == "auto"
    assert key.extra["host"] == key.extra["sni"]


def test_keys_add_with_a_cdn_dials_the_cdn_without_a_pin(tmp_path: Path) -> None:
    store = roles.open_store(tmp_path)
    try:
        store.set_setting("tls_pin", "ab" * 32)
        record = roles.add_key(store, "dave", "xhttp:Edge.CDN.example", protocol="vless")
        key = parse_access_key(roles.share_link(store, record))
    finally:
        store.close()
    assert record.method == "xhttp:edge.cdn.example"
    assert (key.host, key.port) == ("edge.cdn.example", 443)
    assert key.extra["sni"] == key.extra["host"] == "edge.cdn.example"
    assert key.extra["mode"] == "packet-up"
    assert "pcs" not in key.extra and "allowInsecure" not in key.extra


@pytest.mark.parametrize(
    ("method", "words"),
    [
        ("ws:cdn.example.com", "--cdn is for XHTTP"),
        ("xhttp:not a host", "host name"),
        ("h3", "not"),
    ],
)
def test_a_wrong_transport_or_cdn_is_one_clear_error(
    tmp_path: Path, method: str, words: str
) -> None:
    store = roles.open_store(tmp_path)
    try:
        with pytest.raises(ConfigError, match=words):
            roles.add_key(store, "x", method, protocol="vless")
    finally:
        store.close()


def test_the_server_serves_xhttp_on_its_tls_port(tmp_path: Path) -> None:
    from elsewhere.protocols.base import ServerSettings
    from elsewhere.protocols.tls import inbound_config

    store = roles.open_store(tmp_path)
    try:
        roles.ensure_settings(store)
        settings = ServerSettings(
            listen="0.0.0.0", host="h", idle_timeout=60, ports={"port_tls": 443}, cert="c", key="k"
        )
        config = inbound_config(settings, store)
        assert config is not None
        assert config["xhttp"] == {"path": store.get_setting("xhttp_path")}
    finally:
        store.close()
