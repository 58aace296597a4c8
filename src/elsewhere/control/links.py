"""Access keys as share links: SIP002 `ss://` URIs (plus the legacy all-base64 form and Outline's
`prefix` parameter), parsed into one value, AccessKey, that the CLI builds a client from.

Other link schemes (trojan://, vless://) plug in through SCHEMES: a parser and a formatter each.
"""

from __future__ import annotations

import base64
import binascii
import ipaddress
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from urllib.parse import quote, unquote, unquote_to_bytes

from elsewhere.errors import ConfigError
from elsewhere.session import Destination

SS_SHAPE = "ss://BASE64(method:password)@host:port#name"  # what a person is shown on errors
SIP022_METHOD_PREFIX = "2022-"  # SIP002: their user info MUST be percent-encoded, not base64
MAX_PORT = 65535
_METHOD = re.compile(r"[a-z0-9][a-z0-9._+-]*")


def _no_params() -> Mapping[str, str]:
    return MappingProxyType({})


@dataclass(frozen=True)
class AccessKey:
    """Everything a client needs to reach one server as one user.

    `protocol` is the link scheme ("ss" today; "trojan", "vless" later). `method` is the
    Shadowsocks cipher ("" where a protocol has none); `password` is the secret (a Trojan
    password or a VLESS UUID for those). `prefix` is Outline's salt prefix, `plugin` SIP003's.
    `extra` keeps every other query parameter verbatim (a VLESS key's `sni`, `path`, ...)."""

    protocol: str
    method: str
    password: str
    host: str
    port: int
    name: str = ""
    prefix: bytes = b""
    plugin: str = ""
    extra: Mapping[str, str] = field(default_factory=_no_params, hash=False)

    def __post_init__(self) -> None:
        if not 0 < self.port <= MAX_PORT:
            raise ConfigError(f"access key port {self.port} is not a number from 1 to {MAX_PORT}")
        if not self.host:
            raise ConfigError("access key has no host")
        object.__setattr__(self, "extra", MappingProxyType(dict(self.extra)))

    @property
    def destination(self) -> Destination:
        return Destination(self.host, self.port)

    def __repr__(self) -> str:
        # Secrets never reach logs (DESIGN.md §4), and reprs end up in logs.
        return (
            f"AccessKey(protocol={self.protocol!r}, method={self.method!r}, password='***', "
            f"host={self.host!r}, port={self.port}, name={self.name!r})"
        )


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


def _split_hostport(hostport: str, *, legacy: bool) -> tuple[str, int]:
    if hostport.startswith("["):
        host, bracket, rest = hostport[1:].partition("]")
        if not bracket:
            raise ConfigError(f"access key IPv6 host has no closing ']': expected {SS_SHAPE}")
        if not rest.startswith(":"):
            raise ConfigError(f"access key has no port: expected {SS_SHAPE}")
        port_text = rest[1:]
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            raise ConfigError(f"access key host [{host}] is not an IPv6 address") from None
    else:
        host, colon, port_text = hostport.rpartition(":")
        if not colon:
            raise ConfigError(f"access key has no port: expected {SS_SHAPE}")
        host = unquote(host)
        if ":" in host and not (legacy and _is_ipv6(host)):
            raise ConfigError(
                "access key IPv6 host must be in brackets: expected ss://…@[2001:db8::1]:port"
            )
    if not host:
        raise ConfigError(f"access key has no host: expected {SS_SHAPE}")
    if any(c.isspace() or not c.isprintable() or c in "/?#@[]" for c in host):
        raise ConfigError(f"access key host {host!r} is not a host name or IP address")
    if not (port_text.isascii() and port_text.isdigit() and 0 < int(port_text) <= MAX_PORT):
        raise ConfigError(f"access key port {port_text!r} is not a number from 1 to {MAX_PORT}")
    return host, int(port_text)


def _is_ipv6(text: str) -> bool:
    try:
        ipaddress.IPv6Address(text)
    except ValueError:
        return False
    return True


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
    host, port = _split_hostport(hostport, legacy=legacy)
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


@dataclass(frozen=True, slots=True)
class Scheme:
    """How one link scheme is read and written."""

    parse: Callable[[str], AccessKey]
    format: Callable[[AccessKey], str]


SCHEMES: dict[str, Scheme] = {"ss": Scheme(parse_ss, format_ss)}


def parse_access_key(text: str) -> AccessKey:
    """Read an access key a person pasted. Raises ConfigError with one line saying what is
    wrong and what a valid key looks like; the message never contains the secret."""
    text = text.strip()
    supported = ", ".join(f"{name}://" for name in SCHEMES)
    scheme, sep, _ = text.partition("://")
    if not sep or not scheme:
        raise ConfigError(f"this is not an access key: expected {SS_SHAPE}")
    handler = SCHEMES.get(scheme.lower())
    if handler is None:
        shown = scheme if len(scheme) <= 20 else scheme[:20] + "…"
        raise ConfigError(f"access keys of type {shown}:// are not supported: use {supported}")
    return handler.parse(text)


def format_access_key(key: AccessKey) -> str:
    """The share link of a key, in its protocol's scheme."""
    handler = SCHEMES.get(key.protocol)
    if handler is None:
        raise ConfigError(f"no link format for protocol {key.protocol!r}")
    return handler.format(key)


# trojan:// and vless:// register themselves in SCHEMES (imported last: they build on the above)
from elsewhere.control import links_tls  # noqa: E402, F401
