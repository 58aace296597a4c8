"""`trojan://` and `vless://` share links, in the form v2rayN, v2rayNG, Hiddify, sing-box and
Shadowrocket import (the Xray share-link standard, XTLS discussion #716):

    trojan://PASSWORD@host:port?security=tls&sni=…&type=ws&path=%2Fws&host=…#name
    vless://UUID@host:port?encryption=none&security=tls&sni=…&type=tcp&pcs=HEX#name
    vless://UUID@host:port?encryption=none&flow=xtls-rprx-vision&security=reality&sni=…
        &fp=chrome&pbk=KEY&sid=HEX&type=tcp#name

`type` is the transport (tcp, ws, httpupgrade: transports.registry's network layers), `pcs`
the pinned certificate's SHA-256 (for a self-signed server), `fp` the browser fingerprint a
client should mimic; with REALITY, `pbk` the server's X25519 public key, `sid` a short id, and
`flow` XTLS Vision."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any
from urllib.parse import quote, unquote

from elsewhere.control.links import AccessKey, Scheme, register_scheme, split_hostport
from elsewhere.errors import ConfigError
from elsewhere.transports.registry import named

VISION = "xtls-rprx-vision"
# Parameters in the order the apps write them; unknown ones are kept in AccessKey.extra.
ORDER = (
    "encryption",
    "flow",
    "security",
    "sni",
    "alpn",
    "fp",
    "pbk",
    "sid",
    "type",
    "host",
    "path",
    "mode",
    "extra",
    "pcs",
    "allowInsecure",
)


def _parse(text: str, protocol: str) -> AccessKey:
    shape = f"{protocol}://{'PASSWORD' if protocol == 'trojan' else 'UUID'}@host:port?…#name"
    _, _, body = text.strip().partition("://")
    body, _, fragment = body.partition("#")
    body, _, query = body.partition("?")
    if "@" not in body:
        raise ConfigError(f"access key has no secret before @: expected {shape}")
    secret, _, hostport = body.rpartition("@")
    secret = unquote(secret)
    if not secret:
        raise ConfigError(f"access key has an empty secret: expected {shape}")
    host, port = split_hostport(hostport.rstrip("/"), legacy=False, shape=shape)
    params: dict[str, str] = {}
    for pair in filter(None, query.split("&")):
        name, _, value = pair.partition("=")
        params.setdefault(unquote(name), unquote(value))
    if protocol == "vless":
        from elsewhere.codecs.vless import parse_uuid

        parse_uuid(secret)  # a ConfigError naming the problem if it is not a UUID
        if params.get("encryption", "none") != "none":
            raise ConfigError("vless:// keys with encryption other than none are not supported")
        flow = params.get("flow")
        if flow and flow != VISION:
            raise ConfigError(f"vless:// flow {flow!r} is not supported (only {VISION})")
    networks = ("tcp", *named("network"))
    if params.get("type", "tcp") not in networks:
        raise ConfigError(
            f"{protocol}:// transport type={params['type']!r} is not supported: "
            f"use one of {', '.join(networks)}"
        )
    if params.get("security", "tls") not in ("none", *named("security")):
        raise ConfigError(f"{protocol}:// security={params['security']!r} is not supported")
    if params.get("security") == "reality" and not params.get("pbk"):
        raise ConfigError(f"{protocol}:// security=reality needs pbk= (the server's public key)")
    return AccessKey(
        protocol=protocol,
        method="",
        password=secret,
        host=host,
        port=port,
        name=unquote(fragment),
        extra=params,
    )


def _format(key: AccessKey) -> str:
    params = dict(key.extra)
    if key.protocol == "vless":
        params.setdefault("encryption", "none")
    params.setdefault("security", "tls")
    params.setdefault("type", "tcp")
    ordered = [k for k in ORDER if k in params] + sorted(k for k in params if k not in ORDER)
    query = "&".join(f"{k}={quote(params[k], safe='')}" for k in ordered)
    host = f"[{key.host}]" if ":" in key.host else key.host
    secret = quote(key.password, safe="-")
    name = f"#{quote(key.name, safe='')}" if key.name else ""
    return f"{key.protocol}://{secret}@{host}:{key.port}?{query}{name}"


def outbound_options(key: AccessKey) -> Mapping[str, Any]:
    """The outbound config a client builds from a trojan:// or vless:// key."""
    p = key.extra
    options: dict[str, Any] = {
        "type": key.protocol,
        "server": key.host,
        "port": key.port,
        "security": p.get("security", "tls"),
        "network": p.get("type", "tcp"),
    }
    options["password" if key.protocol == "trojan" else "uuid"] = key.password
    if p.get("sni"):
        options["sni"] = p["sni"]
    if p.get("alpn"):
        options["alpn"] = p["alpn"]
    if p.get("path"):
        options["path"] = p["path"]
    if p.get("host"):
        options["host"] = p["host"]
    if p.get("fp"):
        options["fp"] = p["fp"]
    if p.get("mode"):
        options["mode"] = p["mode"]  # xhttp's
    if p.get("extra"):
        options["extra"] = p["extra"]  # xhttp's, Xray's JSON as it is
    if p.get("pcs"):
        options["pin"] = p["pcs"]
    if p.get("allowInsecure") in ("1", "true"):
        options["insecure"] = True
    for name in ("pbk", "sid", "spx"):  # REALITY's (transports/reality.py reads them)
        if name in p:
            options[name] = p[name]
    if p.get("flow"):
        options["flow"] = p["flow"]
    return options


register_scheme(
    "trojan",
    Scheme(
        lambda text: _parse(text, "trojan"),
        _format,
        outbound_options,
        "trojan://PASSWORD@host:port?…#name",
    ),
)
register_scheme(
    "vless",
    Scheme(
        lambda text: _parse(text, "vless"), _format, outbound_options, "vless://UUID@host:port?…#name"
    ),
)
