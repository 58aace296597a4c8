"""Shadowsocks share links: SIP002 `ss://` URIs (plus the legacy all-base64 form and Outline's
`prefix` parameter), for Shadowsocks AEAD and Shadowsocks 2022 keys alike."""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Mapping
from typing import Any
from urllib.parse import quote, unquote, unquote_to_bytes

from elsewhere.control.links import (
    AccessKey,
    Scheme,
    format_access_key,
    register_scheme,
    split_hostport,
)
from elsewhere.errors import ConfigError

SS_SHAPE = "ss://BASE64(method:password)@host:port#name"  # what a person is shown on errors
SIP022_METHOD_PREFIX = "2022-"  # SIP002: their user info MUST be percent-encoded, not base64
_METHOD = re.compile(r"[a-z0-9][a-z0-9._+-]*")


# --- formatting -------------------------------------------------------------------------------


def format_ss(key: AccessKey) -> str:
    """The SIP002 URI of a Shadowsocks key: base64url user info without padding for AEAD
    methods, percent-encoded `method:password` for the 2022 ones (as SIP002 requires)."""
    if key.protocol != "ss":
        raise ConfigError(f"cannot write a {key.protocol}:// key as ss://")
    if key.method.startswith(SIP022_METHOD_PREFIX):
        userinfo = f"{quote(key.method, safe='')}:{quote(key.password, safe='')}"
    else:
        raw = f"{key.method}:{key.password}".encode()
        userinfo = base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")
    host = f"[{key.host}]" if ":" in key.host else key.host
    params: list[tuple[str, str]] = []
    if key.plugin:
        params.append(("plugin", key.plugin))
    if key.prefix:
        # Outline reads the prefix as text whose code points are the bytes (U+0000..U+00FF),
        # percent-encoded as UTF-8: byte 0xA8 is written %C2%A8.
        params.append(("prefix", key.prefix.decode("latin-1")))
    params.extend(key.extra.items())
    link = f"ss://{userinfo}@{host}:{key.port}"
    if params:
        # SIP002: the "/" before the query is expected once there is a plugin.
        link += "/?" + "&".join(f"{quote(k, safe='')}={quote(v, safe='')}" for k, v in params)
    if key.name:
        link += "#" + quote(key.name, safe="")
    return link


# --- parsing ----------------------------------------------------------------------------------


def _b64decode(text: str) -> bytes | None:
    """Base64 in either alphabet, with or without padding; None when it is not base64."""
    text = text.rstrip("=").replace("-", "+").replace("_", "/")
    try:
        return base64.b64decode(text + "=" * (-len(text) % 4), validate=True)
    except (binascii.Error, ValueError):
        return None


def _split_userinfo(userinfo: str) -> tuple[str, str]:
    if ":" in userinfo:  # plain, percent-encoded (SIP002 for 2022 methods; allowed for AEAD)
        method, _, password = userinfo.partition(":")
        return unquote(method), unquote(password)
    raw = _b64decode(unquote(userinfo))
    try:
        text = raw.decode() if raw is not None else ""
    except UnicodeDecodeError:
        text = ""
    if ":" not in text:
        raise ConfigError(
            f"access key user info is neither base64 of method:password nor "
            f"method:password: expected {SS_SHAPE}"
        )
    method, _, password = text.partition(":")
    return method, password


def _parse_prefix(raw: str) -> bytes:
    """Outline's prefix: percent-encoded UTF-8 text of code points up to U+00FF, one per byte.
    Percent-encoded bytes that are not UTF-8 are taken as the bytes themselves."""
    data = unquote_to_bytes(raw.replace("+", " "))
    try:
        text = data.decode()
    except UnicodeDecodeError:
        return data
    try:
        return text.encode("latin-1")
    except UnicodeEncodeError:
        raise ConfigError("access key prefix has a character above U+00FF") from None


def _check_method(method: str) -> str:
    method = method.lower()
    if not _METHOD.fullmatch(method):
        raise ConfigError(f"access key method {method!r} is not a cipher name: expected {SS_SHAPE}")
    return method


def parse_ss(text: str) -> AccessKey:
    """A Shadowsocks key: SIP002 (`ss://userinfo@host:port/?plugin=…&prefix=…#name`, user info
    base64 in either alphabet with or without padding, or percent-encoded `method:password`),
    or the legacy `ss://BASE64(method:password@host:port)#name`."""
    _, _, body = text.strip().partition("://")
    body, _, fragment = body.partition("#")
    body, _, query = body.partition("?")
    legacy = "@" not in body
    if legacy:
        decoded = _b64decode(unquote(body.rstrip("/")))
        try:
            body = decoded.decode() if decoded is not None else ""
        except UnicodeDecodeError:
            body = ""
        if "@" not in body:
            raise ConfigError(f"access key has no user info or host: expected {SS_SHAPE}")
        userinfo, _, hostport = body.rpartition("@")
        method, colon, password = userinfo.partition(":")
        if not colon:
            raise ConfigError(f"access key user info is not method:password: expected {SS_SHAPE}")
        hostport = hostport.strip()  # some encoders base64 a trailing newline
    else:
        userinfo, _, hostport = body.rpartition("@")
        method, password = _split_userinfo(userinfo)
        if hostport.endswith("/"):
            hostport = hostport[:-1]
        if "/" in hostport:
            raise ConfigError(f"access key has a path after host:port: expected {SS_SHAPE}")
    host, port = split_hostport(hostport, legacy=legacy, shape=SS_SHAPE)
    if not password:
        raise ConfigError("access key has an empty password")
    plugin = ""
    prefix = b""
    extra: dict[str, str] = {}
    seen: set[str] = set()
    for pair in filter(None, query.split("&")):
        raw_name, _, raw_value = pair.partition("=")
        name = unquote(raw_name.replace("+", " "))
        if name in seen:  # the first one counts, as in Go's url.Values.Get (Outline)
            continue
        seen.add(name)
        if name == "prefix":
            prefix = _parse_prefix(raw_value)
        elif name == "plugin":
            plugin = unquote(raw_value.replace("+", " "))
        else:
            extra[name] = unquote(raw_value.replace("+", " "))
    return AccessKey(
        protocol="ss",
        method=_check_method(method),
        password=password,
        host=host,
        port=port,
        name=unquote(fragment),
        prefix=prefix,
        plugin=plugin,
        extra=extra,
    )


def outbound_options(key: AccessKey) -> Mapping[str, Any]:
    """Shadowsocks or Shadowsocks 2022, by the key's method; the outbound reads the link."""
    kind = "ss2022" if key.method.startswith(SIP022_METHOD_PREFIX) else "shadowsocks"
    return {"type": kind, "key": format_access_key(key)}


register_scheme("ss", Scheme(parse_ss, format_ss, outbound_options, SS_SHAPE))
