"""An access key as sing-box configuration (sing-box 1.13+, the core of the Hiddify and sing-box
apps): its outbound, and a small profile around it that `sing-box run -c` serves as a local
SOCKS5/HTTP proxy, as `elsewhere client` does.

sing-box reads no share links itself, and the apps that import links into it drop `pcs=` (the
whole-certificate pin Xray reads): a self-signed server is only checked when the profile carries
the pin in sing-box's own form, `certificate_public_key_sha256` (certs.public_key_pin)."""

from __future__ import annotations

from typing import Any

from elsewhere.control.links import AccessKey
from elsewhere.errors import ConfigError

PROXY_PORT = 1080  # the local proxy port of the profile, as `elsewhere client`'s


def outbound(
    key: AccessKey, public_key_pin: str | None = None, tag: str = "proxy"
) -> dict[str, Any]:
    """The sing-box outbound of `key`. For Trojan and VLESS over TLS, `public_key_pin` is the
    server's certificate_public_key_sha256: with it the certificate is checked against the pin
    (and nothing else, as a self-signed one needs); without it against the system's CAs and the
    SNI, unless the key asks for no check at all (allowInsecure, and no pin to check)."""
    if key.protocol == "ss":
        return {
            "type": "shadowsocks",
            "tag": tag,
            "server": key.host,
            "server_port": key.port,
            "method": key.method,
            "password": key.password,  # a 2022 key's is "server PSK:user PSK", as sing-box's
        }
    if key.protocol not in ("trojan", "vless"):
        raise ConfigError(f"no sing-box form for {key.protocol}:// keys")
    p = key.extra
    security = p.get("security", "tls")
    if security != "tls":
        # REALITY needs no pin: Hiddify and the sing-box apps take its link as it is
        raise ConfigError(
            f"sing-box profiles are for keys over TLS; this key is security={security}: "
            "import its link into the app instead"
        )
    out: dict[str, Any] = {
        "type": key.protocol,
        "tag": tag,
        "server": key.host,
        "server_port": key.port,
    }
    if key.protocol == "vless":
        out["uuid"] = key.password
        # plain VLESS UDP: sing-box would otherwise speak XUDP (over Mux.Cool), which we do not
        out["packet_encoding"] = ""
    else:
        out["password"] = key.password
    tls: dict[str, Any] = {"enabled": True, "server_name": p.get("sni") or key.host}
    if p.get("alpn"):
        tls["alpn"] = p["alpn"].split(",")
    if public_key_pin:
        tls["certificate_public_key_sha256"] = [public_key_pin]
    elif p.get("allowInsecure") in ("1", "true"):
        tls["insecure"] = True
    out["tls"] = tls
    network = p.get("type", "tcp")
    if network == "ws":
        transport: dict[str, Any] = {"type": "ws", "path": p.get("path") or "/"}
        if p.get("host"):
            transport["headers"] = {"Host": p["host"]}
        out["transport"] = transport
    elif network == "httpupgrade":
        out["transport"] = {"type": "httpupgrade", "path": p.get("path") or "/"}
        if p.get("host"):
            out["transport"]["host"] = p["host"]
    elif network != "tcp":
        raise ConfigError(f"no sing-box form for transport type={network!r}")
    return out


def profile(
    key: AccessKey,
    public_key_pin: str | None = None,
    *,
    listen: str = "127.0.0.1",
    port: int = PROXY_PORT,
) -> dict[str, Any]:
    """A whole sing-box configuration: a SOCKS5/HTTP proxy on `listen`:`port` whose traffic
    goes out through the key's outbound. Apps that build their own inbounds (Hiddify) take the
    outbound from it."""
    return {
        "log": {"level": "warn"},
        "inbounds": [{"type": "mixed", "tag": "mixed-in", "listen": listen, "listen_port": port}],
        "outbounds": [outbound(key, public_key_pin, tag=key.name or "proxy")],
        "route": {"final": key.name or "proxy"},
    }
