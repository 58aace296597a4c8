"""Applying full-device mode's ruleset: one `nft -j -f -` per change, a libnftables JSON
document applied as one transaction (all of it or none), never rule by rule."""

from __future__ import annotations

import json
import shutil
import subprocess
from typing import Any

from elsewhere.device.errors import DeviceError

NFT_TIMEOUT = 30.0


def nft_path() -> str:
    path = shutil.which("nft")
    if path is None:
        raise DeviceError("full-device mode needs nftables (the nft command), which is not "
                          "installed: apt install nftables")
    return path


def apply(document: dict[str, Any]) -> None:
    """Run `document` as one transaction; DeviceError with nft's own words if refused."""
    done = subprocess.run([nft_path(), "-j", "-f", "-"], input=json.dumps(document),
                          capture_output=True, text=True, timeout=NFT_TIMEOUT)
    if done.returncode != 0:
        first = (done.stderr.strip() or done.stdout.strip()).splitlines()[:1]
        raise DeviceError(f"nftables refused the ruleset: {first[0] if first else 'no reason'}")


def tables() -> list[tuple[str, str]]:
    """(family, name) of every nftables table here."""
    done = subprocess.run([nft_path(), "-j", "list", "tables"], capture_output=True, text=True,
                          timeout=NFT_TIMEOUT)
    if done.returncode != 0:
        raise DeviceError(f"cannot read nftables: {done.stderr.strip().splitlines()[:1]}")
    listing = json.loads(done.stdout or '{"nftables": []}')
    return [(item["table"]["family"], item["table"]["name"])
            for item in listing.get("nftables", []) if "table" in item]


CGROUP_ROOT = "/sys/fs/cgroup"  # where nft looks up `socket cgroupv2` paths


def require_cgroup2(paths: list[str]) -> None:
    """Cgroup split rules need the cgroup v2 hierarchy where nft reads it, and each path."""
    import os

    with open("/proc/self/mounts") as mounts:
        unified = any(line.split()[1:3] == [CGROUP_ROOT, "cgroup2"] for line in mounts)
    if not unified:
        raise DeviceError(f"cgroup rules need the cgroup v2 hierarchy mounted at {CGROUP_ROOT} "
                          "(where nftables looks); this machine mounts it elsewhere")
    for path in paths:
        if not os.path.isdir(os.path.join(CGROUP_ROOT, path)):
            raise DeviceError(f"cgroup rule {path}: no such cgroup under {CGROUP_ROOT}")
