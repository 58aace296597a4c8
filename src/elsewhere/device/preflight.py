"""Before full-device mode changes anything: may we (CAP_NET_ADMIN), can we (nftables), and is
something else already steering this machine's traffic (another VPN's tables, policy rules or
default route through its tunnel device)? Anything in the way is named; nothing is changed."""

from __future__ import annotations

from pyroute2 import IPRoute

from elsewhere.device import nft, routes
from elsewhere.device.errors import DeviceError
from elsewhere.device.ruleset import TABLES

CAP_NET_ADMIN = 12  # <linux/capability.h>
# nftables tables other VPNs create (wg-quick's are wg-quick-<interface>)
VPN_TABLES = ("sing-box", "mullvad", "clash", "mihomo", "nekoray", "v2raya", "xray",
              "outline", "amnezia", "tailscale", "wg-quick")
TUNNEL_KINDS = ("wireguard", "tun", "amneziawg")


def has_net_admin() -> bool:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("CapEff:"):
                return bool(int(line.split()[1], 16) >> CAP_NET_ADMIN & 1)
    return False


def require_net_admin() -> None:
    if not has_net_admin():
        raise DeviceError("elsewhere vpn changes this machine's firewall and routes: it needs "
                          "CAP_NET_ADMIN (run it as root, e.g. with sudo)")


def foreign_tables() -> list[str]:
    found = []
    for family, name in nft.tables():
        if name in TABLES:
            continue
        if any(name == v or name.startswith(v + "-") for v in VPN_TABLES):
            found.append(f"nftables table {family} {name}")
    return found


def tunnel_default_routes() -> list[str]:
    found = []
    with IPRoute() as ipr:
        kinds = {}
        for link in ipr.get_links():
            info = link.get("IFLA_LINKINFO")
            kind = info.get("IFLA_INFO_KIND") if info is not None else None
            kinds[link["index"]] = (link.get("IFLA_IFNAME"), kind)
        for family in routes.FAMILIES.values():
            for route in ipr.get_routes(family=family, table=254):
                if route["dst_len"] != 0:
                    continue
                name, kind = kinds.get(route.get("RTA_OIF"), (None, None))
                if kind in TUNNEL_KINDS:
                    found.append(f"the default route goes through {kind} device {name}")
    return found


def check() -> None:
    """DeviceError naming whatever is in the way; nothing is changed either way."""
    require_net_admin()
    nft.nft_path()
    in_way = foreign_tables() + routes.foreign_rules() + tunnel_default_routes()
    if in_way:
        raise DeviceError("another VPN is steering this machine's traffic ("
                          + "; ".join(in_way) + "); stop it first, nothing was changed")
