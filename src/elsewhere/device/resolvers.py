"""This machine's own resolvers, which full-device mode asks (directly) only for names a split
rule sends direct. systemd-resolved's stub (127.0.0.53) forwards to the resolvers it lists in
/run/systemd/resolve/resolv.conf, so those are asked instead: the stub's own queries would
otherwise come back to us."""

from __future__ import annotations

import ipaddress
from pathlib import Path

RESOLVED_STUB = ("127.0.0.53", "127.0.0.54")
RESOLVED_UPSTREAMS = Path("/run/systemd/resolve/resolv.conf")


def nameservers(path: str | Path) -> list[str]:
    found = []
    try:
        text = Path(path).read_text()
    except OSError:
        return []
    for line in text.splitlines():
        fields = line.split("#", 1)[0].split()
        if len(fields) >= 2 and fields[0] == "nameserver":
            try:
                found.append(str(ipaddress.ip_address(fields[1].split("%", 1)[0])))
            except ValueError:
                continue
    return found


def system_resolvers(path: str | Path, resolved: str | Path = RESOLVED_UPSTREAMS) -> list[str]:
    servers = nameservers(path)
    if any(s in RESOLVED_STUB for s in servers):
        upstream = [s for s in nameservers(resolved) if s not in RESOLVED_STUB]
        servers = upstream + [s for s in servers if s not in RESOLVED_STUB]
    return servers
