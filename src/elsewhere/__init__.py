"""elsewhere: a censorship-resistant VPN (Shadowsocks, Shadowsocks 2022, Trojan, VLESS)."""

__version__ = "0.1.0"
