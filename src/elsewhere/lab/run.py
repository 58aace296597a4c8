"""`elsewhere lab`: the survival matrix as an operator runs it before deploying. Checks what the
lab needs (root, the kernel tools, NetfilterQueue), picks the transports that can run here (a
Debian peer whose package is missing is skipped with a note), runs every transport against every
technique in a lab of its own, prints the table and, if asked, writes JSON.

    rows = run_lab(quick=True, json_path=Path("matrix.json"))
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from elsewhere.errors import ConfigError
from elsewhere.lab import peers
from elsewhere.lab.elsewhere_relay import ElsewhereRelay
from elsewhere.lab.elsewhere_transports import (
    ElsewhereShadowsocks,
    ElsewhereSs2022,
    ElsewhereTls,
    browser_fingerprints_available,
    censor_config,
)
from elsewhere.lab.elsewhere_xhttp import ElsewhereCdn, ElsewhereXhttp
from elsewhere.lab.errors import LabError
from elsewhere.lab.matrix import DEFAULT_TECHNIQUES, Row, print_matrix, run_matrix, techniques_of
from elsewhere.lab.transport import Direct, Transport

# What the lab itself runs: namespaces and links, the censor's rules, the client's fetches.
LAB_COMMANDS: dict[str, str] = {
    "ip": "iproute2", "iptables": "iptables", "iptables-restore": "iptables",
    "conntrack": "conntrack", "curl": "curl", "sysctl": "procps",
}
PIPE_WIDTH = 240
# The operator's everyday censors, for --quick: blocking by name and address, the GFW's two
# Shadowsocks detectors, the Russian freeze, and TLS fingerprints.
QUICK_TECHNIQUES: tuple[str, ...] = (
    "none", "dns_poison+sni_block+ip_block", "fet_gfw", "active_probe", "freeze_16k",
    "fingerprint",
)


@dataclass(frozen=True, slots=True)
class Candidate:
    """A transport the lab knows, what it needs installed, and whether it is one of ours."""

    name: str
    make: Callable[[], Transport]
    commands: tuple[str, ...] = ()  # programs it runs, with the Debian package that has them
    package: str = ""
    ours: bool = True
    available: Callable[[], bool] = lambda: True
    missing_note: str = ""


def candidates() -> list[Candidate]:
    """Every transport, in the order the matrix shows them."""
    return [
        Candidate("direct", Direct),
        Candidate("wireguard-go", peers.WireGuardGo, ("wireguard-go", "wg"),
                  "wireguard-go wireguard-tools", ours=False),
        Candidate("openvpn", peers.OpenVpn, ("openvpn",), "openvpn", ours=False),
        Candidate("shadowsocks-libev", peers.ShadowsocksLibev, ("ss-server", "ss-local"),
                  "shadowsocks-libev", ours=False),
        Candidate("v2ray-vless-tls", peers.V2rayVless, ("v2ray",), "v2ray", ours=False),
        Candidate("elsewhere-ss-prefix", ElsewhereShadowsocks),
        Candidate("elsewhere-ss", lambda: ElsewhereShadowsocks(prefix=b"")),
        Candidate("elsewhere-ss2022", ElsewhereSs2022),
        Candidate("elsewhere-trojan", lambda: ElsewhereTls("trojan")),
        Candidate("elsewhere-vless", lambda: ElsewhereTls("vless")),
        Candidate("elsewhere-vless-ws", lambda: ElsewhereTls("vless", "ws")),
        Candidate("elsewhere-vless-ws-chrome", lambda: ElsewhereTls("vless", "ws", fp="chrome"),
                  available=browser_fingerprints_available,
                  missing_note="needs the browser-fingerprint extra (curl_cffi)"),
        Candidate("elsewhere-relay-ss2022", lambda: ElsewhereRelay("ss2022")),
        Candidate("elsewhere-relay-vless-ws", lambda: ElsewhereRelay("vless-ws")),
        Candidate("elsewhere-xhttp", ElsewhereXhttp),
        Candidate("elsewhere-xhttp-cdn", lambda: ElsewhereCdn("xhttp"), ("nginx",), "nginx"),
        Candidate("elsewhere-vless-ws-cdn", lambda: ElsewhereCdn("ws"), ("nginx",), "nginx"),
    ]


def check_prerequisites() -> None:
    """One clear ConfigError for the first thing the lab cannot run without."""
    if os.geteuid() != 0:
        raise ConfigError("elsewhere lab needs root (it builds network namespaces and "
                          "iptables rules): run it with sudo")
    for command, package in LAB_COMMANDS.items():
        if shutil.which(command) is None:
            raise ConfigError(f"elsewhere lab needs {command}: apt-get install {package}")
    if importlib.util.find_spec("netfilterqueue") is None:
        raise ConfigError("elsewhere lab needs NetfilterQueue: apt-get install "
                          "libnetfilter-queue-dev, then pip install 'elsewhere[lab]'")


def choose_transports(
    names: Sequence[str] | None, quick: bool
) -> tuple[list[Transport], dict[str, str]]:
    """The transports to run, and the ones skipped with why. Default: every transport (with
    --quick: direct and elsewhere's own)."""
    known = {c.name: c for c in candidates()}
    if names:
        unknown = [n for n in names if n not in known]
        if unknown:
            raise ConfigError(f"unknown transport {unknown[0]!r}; transports: {', '.join(known)}")
        chosen = [known[n] for n in names]
    else:
        chosen = [c for c in known.values() if c.ours or not quick]
    transports: list[Transport] = []
    skipped: dict[str, str] = {}
    for candidate in chosen:
        missing = [c for c in candidate.commands if shutil.which(c) is None]
        if missing:
            skipped[candidate.name] = (f"{' and '.join(missing)} not installed "
                                       f"(apt-get install {candidate.package})")
        elif not candidate.available():
            skipped[candidate.name] = candidate.missing_note
        else:
            transports.append(candidate.make())
    return transports, skipped


def choose_techniques(specs: Sequence[str] | None, quick: bool) -> list[str]:
    chosen = list(specs) if specs else list(QUICK_TECHNIQUES if quick else DEFAULT_TECHNIQUES)
    for spec in chosen:
        try:
            techniques_of(spec)
        except LabError as exc:
            raise ConfigError(str(exc)) from None
    return chosen


def run_lab(
    techniques: Sequence[str] | None = None,
    transports: Sequence[str] | None = None,
    *,
    json_path: Path | None = None,
    quick: bool = False,
    console: Any | None = None,
) -> list[Row]:
    """Run the survival matrix in a fresh lab, print it, and write `json_path` if given."""
    from rich.console import Console

    # A table of a dozen transports is wider than a pipe's 80 columns: keep it whole in logs.
    console = console or Console(width=None if sys.stdout.isatty() else PIPE_WIDTH)
    specs = choose_techniques(techniques, quick)
    chosen, skipped = choose_transports(transports, quick)
    check_prerequisites()
    for name, why in skipped.items():
        console.print(f"skipping {name}: {why}", highlight=False, markup=False)
    if not chosen:
        raise ConfigError("no transport can run here (see the skipped ones above)")
    console.print(f"{len(chosen)} transports by {len(specs)} techniques; each cell builds "
                  "a fresh censor", highlight=False)

    def progress(row: Row) -> None:
        verdict = "reached" if row.survived else f"{row.reached}/{row.attempts} reached"
        seen = ", detected" if row.detected else ""
        console.print(f"  {row.technique:<30} {row.transport:<26} {verdict}{seen}",
                      highlight=False, markup=False)

    rows = run_matrix(chosen, specs, config=censor_config(), on_row=progress)
    print_matrix(rows, console)
    if json_path is not None:
        write_document(rows, skipped, json_path)
        console.print(f"wrote {json_path}", highlight=False, markup=False)
    return rows


def write_document(rows: Sequence[Row], skipped: dict[str, str], path: Path) -> None:
    """matrix.write_json's document, with the transports that were skipped and why."""
    from elsewhere.lab.matrix import write_json

    write_json(rows, path)
    document = json.loads(path.read_text())
    document["skipped"] = skipped
    path.write_text(json.dumps(document, indent=2) + "\n")
