"""Side-by-side benchmark (issues 2, 3 and 4): direct, elsewhere, shadowsocks-libev, v2ray and
trojan-gfw measured in one run over a veth pair between two network namespaces this script
makes and removes.

  sudo .venv/bin/python bench/run.py            # the full run (about 5 minutes)
  sudo .venv/bin/python bench/run.py --quick    # a smoke test (about 1 minute)

Per transport: iperf3 throughput both ways (median of N runs), its ratio to direct, the time to
first byte added to a fresh connection (median and p90), CPU seconds of the proxy processes
per GB carried and per fresh connection, and the server's resident memory per idle tunnel.
See bench/README.md."""

from __future__ import annotations

import argparse
import json
import os
import platform
import select
import signal
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).parent))

from namespaces import ANSWER, IPERF, Endpoint, Lab, cpu_seconds, rss_kib
from transports import TARGETS, TRANSPORTS, ElsewhereTransport, Transport, missing_tools

PROBES = str(Path(__file__).with_name("probes.py"))
DELAY = str(Path(__file__).with_name("delay.py"))
RESULTS = Path(__file__).with_name("results")
TTFB_ROUNDS = 4  # connections are measured in rounds across transports, not in one block
TTFB_WARMUP = 5
RSS_SETTLE = 0.5  # seconds after the last tunnel is up before reading VmRSS


@dataclass
class Row:
    transport: Transport
    local: list[Endpoint] = field(default_factory=list)
    mbps: dict[str, list[float]] = field(default_factory=lambda: {"up": [], "down": []})
    bytes: dict[str, int] = field(default_factory=lambda: {"up": 0, "down": 0})
    cpu: dict[str, float] = field(default_factory=lambda: {"up": 0.0, "down": 0.0})
    errors: list[str] = field(default_factory=list)
    ttfb: list[float] = field(default_factory=list)
    ttfb_errors: int = 0
    ttfb_cpu: float = 0.0  # CPU seconds of the row's processes over all its TTFB connections
    ttfb_made: int = 0  # connections those seconds were spent on (warm-up included)
    ttfb_rtt: list[float] = field(default_factory=list)  # the same with --rtt's delay line
    idle: dict[str, Any] = field(default_factory=dict)
    load: list[float] = field(default_factory=list)  # 1-minute load average at each iperf3 run


class Deadline(Exception):
    pass


def main() -> int:
    args = parse_args()
    if os.geteuid() != 0:
        print("run as root: the benchmark makes network namespaces", file=sys.stderr)
        return 2
    names = args.transports.split(",")
    unknown = [n for n in names if n.partition("@")[0] not in TRANSPORTS]
    if unknown:
        print(f"unknown transport {unknown[0]!r}; known: {', '.join(TRANSPORTS)}", file=sys.stderr)
        return 2
    missing = missing_tools(names)
    if missing:
        print(
            f"missing tools: {', '.join(missing)} (apt-get install iperf3 "
            "shadowsocks-libev v2ray trojan iproute2)",
            file=sys.stderr,
        )
        return 2
    if "direct" not in names:
        names.insert(0, "direct")  # every ratio is to direct
    stamp = time.strftime("%Y%m%d-%H%M%S")
    workdir = RESULTS / f"run-{stamp}"
    workdir.mkdir(parents=True, exist_ok=True)

    def on_signal(signum: int, _frame: Any) -> None:
        raise KeyboardInterrupt(signal.Signals(signum).name)

    def on_alarm(_signum: int, _frame: Any) -> None:
        raise Deadline(f"the whole run took more than {args.time_limit:.0f} s")

    signal.signal(signal.SIGINT, signal.default_int_handler)  # even if started ignoring it
    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGHUP, on_signal)
    signal.signal(signal.SIGALRM, on_alarm)
    signal.alarm(int(args.time_limit))
    load_before = os.getloadavg()
    started = time.time()
    try:
        with Lab(workdir) as lab:
            rows = measure(lab, names, args)
    except Deadline as exc:
        print(f"stopped: {exc}; logs in {workdir}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"interrupted; namespaces removed, logs in {workdir}", file=sys.stderr)
        return 130
    finally:
        signal.alarm(0)
    report = summarise(rows, args, load_before, started)
    print_table(report)
    out = Path(args.json) if args.json else RESULTS / f"bench-{stamp}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n")
    out.with_suffix(".md").write_text(markdown(report))
    print(f"\nJSON: {out} (table in {out.with_suffix('.md').name})\nlogs: {workdir}")
    return 0


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument(
        "--quick",
        action="store_true",
        help="smoke test: 1 run of 3 s, 50 connections, 100 idle tunnels",
    )
    p.add_argument(
        "--transports",
        default=",".join(TRANSPORTS),
        help=f"comma-separated rows (default all: {','.join(TRANSPORTS)})",
    )
    p.add_argument("--runs", type=int, help="iperf3 runs per direction (default 3)")
    p.add_argument("--seconds", type=int, help="length of one iperf3 run (default 10)")
    p.add_argument("--connections", type=int, help="fresh connections for TTFB (default 200)")
    p.add_argument("--tunnels", type=int, help="idle tunnels for the memory figure (default 1000)")
    p.add_argument("--no-reverse", action="store_true", help="skip the download direction (-R)")
    p.add_argument(
        "--rtt",
        type=float,
        default=0,
        help="also measure TTFB with this RTT (ms) on every path to the server (delay.py)",
    )
    p.add_argument("--time-limit", type=float, default=3600, help="stop everything after this")
    p.add_argument("--json", help="where to write the JSON (default bench/results/bench-*.json)")
    p.add_argument(
        "--rev",
        help="run elsewhere as committed at this git revision (default: the working tree); "
        "one row alone: NAME@REV in --transports",
    )
    args = p.parse_args()
    quick = {"runs": 1, "seconds": 3, "connections": 50, "tunnels": 100}
    full = {"runs": 3, "seconds": 10, "connections": 200, "tunnels": 1000}
    for key, value in (quick if args.quick else full).items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    return args


def measure(lab: Lab, names: list[str], args: argparse.Namespace) -> list[Row]:
    iperf = start_iperf_server(lab)
    answer = lab.spawn(lab.server, [sys.executable, PROBES, "serve", *split(ANSWER)], "answer")
    lab.wait_listening(lab.server, ANSWER.port, answer)

    rows = []
    for index, name in enumerate(names):
        kind, _, rev = name.partition("@")
        transport = TRANSPORTS[kind](lab, index)
        transport.kind = kind
        if isinstance(transport, ElsewhereTransport) and (rev or args.rev):
            transport.run_from(rev or args.rev)
        transport.start_server()
        row = Row(transport, transport.start_client([IPERF, ANSWER]))
        rows.append(row)
        say(f"started {transport.label}: {' '.join(map(str, row.local))}")

    per_round = -(-args.connections // TTFB_ROUNDS)
    for _ in range(TTFB_ROUNDS if args.connections else 0):
        for row in rows:
            warm = not row.ttfb
            pids = row.transport.pids
            cpu_before = sum(cpu_seconds(p) for p in pids)
            got = ttfb(lab, row.local[1], per_round + (TTFB_WARMUP if warm else 0))
            row.ttfb_cpu += sum(cpu_seconds(p) for p in pids) - cpu_before
            row.ttfb_made += len(got["seconds"]) + got["errors"]
            row.ttfb += got["seconds"][TTFB_WARMUP if warm else 0 :]
            row.ttfb_errors += got["errors"]
    for row in rows:
        say(
            f"{row.transport.name}: TTFB median {ms(median(row.ttfb))} ms "
            f"over {len(row.ttfb)}, CPU {ms(row.ttfb_cpu / max(row.ttfb_made, 1))} ms each"
        )

    if args.rtt and args.connections:
        ttfb_at_rtt(lab, rows, args)

    # memory next, while every process is still nearly fresh (the conservative figure). Not
    # first: measured after 14 rows x 1000 idle tunnels had closed, every fresh connection took
    # ~1.5 ms longer and 0.8 ms more CPU, libev's as much as ours (kernel time; most likely
    # connect() searching ports past the TIME_WAIT sockets those tunnels left)
    for row in rows:
        if row.transport.server_pid is not None and args.tunnels:
            row.idle = idle_tunnels(lab, row, args.tunnels)
            say(f"{row.transport.name}: {row.idle.get('kib_per_tunnel', '?')} KiB per idle tunnel")

    directions = ["up"] if args.no_reverse else ["up", "down"]
    for run in range(args.runs):
        for row in rows:
            for direction in directions:
                iperf = throughput(lab, row, direction, args.seconds, iperf)
                if row.mbps[direction]:
                    say(
                        f"run {run + 1}/{args.runs} {row.transport.name} {direction}: "
                        f"{row.mbps[direction][-1]:.0f} Mbit/s"
                    )
    return rows


def ttfb_at_rtt(lab: Lab, rows: list[Row], args: argparse.Namespace) -> None:
    """TTFB rounds with the delay line on the server's links (client-server, relay-server):
    a quarter of the connections, at least 20 per row."""
    line = lab.spawn(lab.server, [sys.executable, DELAY, str(args.rtt), *lab.server_links],
                     "delay")
    log = lab.workdir / "delay.log"
    deadline = time.monotonic() + 15
    while b"delay ready" not in (log.read_bytes() if log.exists() else b""):
        if line.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"the delay line did not start; see {log}")
        time.sleep(0.05)
    try:
        per_round = max(-(-args.connections // (4 * TTFB_ROUNDS)), 5)
        for n in range(TTFB_ROUNDS):
            for row in rows:
                got = ttfb(lab, row.local[1], per_round + (1 if n == 0 else 0))
                row.ttfb_rtt += got["seconds"][1 if n == 0 else 0 :]
                row.ttfb_errors += got["errors"]
    finally:
        lab.stop(line)
    for row in rows:
        say(f"{row.transport.name}: TTFB at {args.rtt:g} ms RTT median "
            f"{ms(median(row.ttfb_rtt))} ms over {len(row.ttfb_rtt)}")


def start_iperf_server(lab: Lab) -> subprocess.Popen[bytes]:
    proc = lab.spawn(
        lab.server, ["iperf3", "-s", "-B", IPERF.host, "-p", str(IPERF.port)], "iperf3"
    )
    lab.wait_listening(lab.server, IPERF.port, proc)
    return proc


def throughput(
    lab: Lab, row: Row, direction: str, seconds: int, iperf: subprocess.Popen[bytes]
) -> subprocess.Popen[bytes]:
    """One iperf3 run through the row's first tunnel; returns the iperf3 server to use next
    (a new one if this run left it stuck)."""
    target = row.local[0]
    argv = [
        "iperf3",
        "-c",
        target.host,
        "-p",
        str(target.port),
        "-t",
        str(seconds),
        "-J",
        "--connect-timeout",
        "5000",
    ] + (["-R"] if direction == "down" else [])
    pids = row.transport.pids
    row.load.append(os.getloadavg()[0])
    cpu_before = sum(cpu_seconds(p) for p in pids)
    try:
        done = lab.run(lab.client, argv, timeout=seconds + 30)
        result = json.loads(done.stdout or b"{}")
    except (subprocess.TimeoutExpired, json.JSONDecodeError) as exc:
        result = {"error": f"iperf3: {type(exc).__name__}"}
    cpu_after = sum(cpu_seconds(p) for p in pids)
    if "error" in result or "end" not in result:
        row.errors.append(f"{direction}: {result.get('error', 'no result')}")
        say(f"{row.transport.name} {direction}: {row.errors[-1]}; restarting the iperf3 server")
        lab.stop(iperf)
        return start_iperf_server(lab)
    received = result["end"]["sum_received"]
    row.mbps[direction].append(received["bits_per_second"] / 1e6)
    row.bytes[direction] += int(received["bytes"])
    row.cpu[direction] += cpu_after - cpu_before
    return iperf


def ttfb(lab: Lab, target: Endpoint, count: int) -> dict[str, Any]:
    limit = 60 + count * 0.05
    argv = [sys.executable, PROBES, "ttfb", *split(target), str(count), str(limit)]
    done = lab.run(lab.client, argv, timeout=limit + 15)
    if done.returncode != 0:
        raise RuntimeError(f"ttfb helper failed: {done.stderr.decode(errors='replace')[-500:]}")
    return json.loads(done.stdout)


def idle_tunnels(lab: Lab, row: Row, count: int) -> dict[str, Any]:
    """Server RSS growth per established idle tunnel: VmRSS before and after `count` tunnels
    that each carried a few bytes both ways."""
    pid = row.transport.server_pid
    assert pid is not None
    limit = 60 + count * 0.05
    before = rss_kib(pid)
    client_before = sum(rss_kib(p) for p in row.transport.client_pids)
    helper = lab.popen(
        lab.client, [sys.executable, PROBES, "idle", *split(row.local[1]), str(count), str(limit)]
    )
    try:
        assert helper.stdout is not None and helper.stdin is not None
        ready, _, _ = select.select([helper.stdout], [], [], limit + 15)
        if not ready:
            raise RuntimeError(f"{row.transport.name}: idle tunnels not up after {limit:.0f} s")
        opened = json.loads(helper.stdout.readline() or b"{}")
        time.sleep(RSS_SETTLE)
        after = rss_kib(pid)
        client_after = sum(rss_kib(p) for p in row.transport.client_pids)
        helper.stdin.write(b"close\n")
        helper.stdin.flush()
        helper.wait(30)
    finally:
        lab.stop(helper)
    established = int(opened.get("established", 0))
    return {
        "tunnels": count,
        "established": established,
        "seconds_to_open": opened.get("seconds"),
        "server_rss_before_kib": before,
        "server_rss_after_kib": after,
        "kib_per_tunnel": round((after - before) / established, 2) if established else None,
        "client_kib_per_tunnel": (
            round((client_after - client_before) / established, 2) if established else None
        ),
    }


def summarise(
    rows: list[Row], args: argparse.Namespace, load_before: tuple[float, ...], started: float
) -> dict[str, Any]:
    direct = rows[0]
    base = {d: median(direct.mbps[d]) for d in ("up", "down")}
    base_ttfb = (median(direct.ttfb), p90(direct.ttfb))
    results = {}
    for row in rows:
        t = row.transport
        up, down = median(row.mbps["up"]), median(row.mbps["down"])
        med, p = median(row.ttfb), p90(row.ttfb)
        results[t.name] = {
            "label": t.label,
            "kind": t.kind,
            "mbps_up": up,
            "mbps_down": down,
            "mbps_up_runs": row.mbps["up"],
            "mbps_down_runs": row.mbps["down"],
            "ratio_up": ratio(up, base["up"]),
            "ratio_down": ratio(down, base["down"]),
            "ttfb_ms_median": ms(med),
            "ttfb_ms_p90": ms(p),
            "added_ttfb_ms_median": ms(med - base_ttfb[0]) if med and base_ttfb[0] else None,
            "added_ttfb_ms_p90": ms(p - base_ttfb[1]) if p and base_ttfb[1] else None,
            "ttfb_connections": len(row.ttfb),
            "ttfb_rtt_ms_median": ms(median(row.ttfb_rtt)),
            "added_ttfb_rtt_ms_median": (
                ms(median(row.ttfb_rtt) - median(direct.ttfb_rtt))  # type: ignore[operator]
                if row.ttfb_rtt and direct.ttfb_rtt else None
            ),
            "ttfb_errors": row.ttfb_errors,
            "cpu_ms_per_connection": (
                ms(row.ttfb_cpu / row.ttfb_made) if t.pids and row.ttfb_made else None
            ),
            "cpu_s_per_gb_up": per_gb(row.cpu["up"], row.bytes["up"]) if t.pids else None,
            "cpu_s_per_gb_down": per_gb(row.cpu["down"], row.bytes["down"]) if t.pids else None,
            "idle": row.idle or None,
            "load_during_throughput": row.load,
            "errors": row.errors,
            "versions": t.versions(),
        }
    return {
        "date": time.strftime("%Y-%m-%d %H:%M:%S %Z", time.localtime(started)),
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "duration_s": round(time.time() - started, 1),
        "settings": {
            k: getattr(args, k) for k in ("runs", "seconds", "connections", "tunnels", "rtt")
        },
        "machine": machine(),
        "load_before": load_before,
        "load_after": os.getloadavg(),
        "results": results,
        "targets": targets(results, args.rtt),
    }


def targets(results: dict[str, Any], rtt_ms: float = 0) -> dict[str, Any]:
    """The issues' targets for each elsewhere row against its peer measured in the same run;
    a verdict is None where the issue sets no such target."""
    out = {}
    for ours, a in results.items():
        target = TARGETS.get(a["kind"])
        peers = [r for r in results.values() if target and r["kind"] == target.peer]
        if target is None or not peers:
            continue
        b = peers[0]
        measured = [k for k in ("mbps_up", "mbps_down") if a[k] and b[k]]
        out[ours] = {
            "peer": peers[0]["label"],
            "issue": target.issue,
            "throughput_target": target.throughput,
            "throughput_vs_peer_up": ratio(a["mbps_up"], b["mbps_up"]),
            "throughput_vs_peer_down": ratio(a["mbps_down"], b["mbps_down"]),
            "throughput_ok": (
                all(a[k] >= target.throughput * b[k] for k in measured) if measured else None
            ),
            "added_ttfb_ok": (
                _le(a["added_ttfb_ms_median"], b["added_ttfb_ms_median"]) if target.ttfb else None
            ),
            # a relay row: its TTFB at the delay line's RTT within one RTT of the one-hop row's
            "ttfb_vs_peer_at_rtt_ms": (
                round(a["ttfb_rtt_ms_median"] - b["ttfb_rtt_ms_median"], 3)
                if a["ttfb_rtt_ms_median"] and b["ttfb_rtt_ms_median"] else None
            ),
            "ttfb_within_rtt_ok": (
                _le(a["ttfb_rtt_ms_median"] - b["ttfb_rtt_ms_median"], rtt_ms)
                if target.within_rtt and a["ttfb_rtt_ms_median"] and b["ttfb_rtt_ms_median"]
                else None
            ),
            "rss_target_kib": target.rss_kib,
            "rss_ok": (
                _le((a["idle"] or {}).get("kib_per_tunnel"), target.rss_kib)
                if target.rss_kib is not None
                else None
            ),
        }
    return out


def table(report: dict[str, Any]) -> list[list[str]]:
    head = [
        "transport",
        "up Mbit/s",
        "xdirect",
        "down Mbit/s",
        "xdirect",
        "+TTFB med/p90 ms",
        "TTFB at RTT ms",
        "CPU s/GB up/down",
        "CPU ms/conn",
        "server KiB/idle tunnel",
    ]
    lines = [head]
    for r in report["results"].values():
        lines.append(
            [
                r["label"],
                f"{r['mbps_up']:.0f}" if r["mbps_up"] else "-",
                f"{r['ratio_up']:.2f}" if r["ratio_up"] else "-",
                f"{r['mbps_down']:.0f}" if r["mbps_down"] else "-",
                f"{r['ratio_down']:.2f}" if r["ratio_down"] else "-",
                f"{fmt(r['added_ttfb_ms_median'])} / {fmt(r['added_ttfb_ms_p90'])}",
                fmt(r.get("ttfb_rtt_ms_median")),
                f"{fmt(r['cpu_s_per_gb_up'])} / {fmt(r['cpu_s_per_gb_down'])}",
                fmt(r.get("cpu_ms_per_connection")),
                fmt((r["idle"] or {}).get("kib_per_tunnel")),
            ]
        )
    return lines


def markdown(report: dict[str, Any]) -> str:
    lines = table(report)
    rows = ["| " + " | ".join(line) + " |" for line in lines]
    rows.insert(1, "| " + " | ".join(["---"] + ["---:"] * (len(lines[0]) - 1)) + " |")
    return "\n".join(rows) + "\n"


def print_table(report: dict[str, Any]) -> None:
    lines = table(report)
    widths = [max(len(line[i]) for line in lines) for i in range(len(lines[0]))]
    print()
    for n, line in enumerate(lines):
        cells = zip(line, widths, strict=True)
        print("  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(cells)))
        if n == 0:
            print("  ".join("-" * w for w in widths))
    print(
        f"\ndirect TTFB: median {fmt(first(report)['ttfb_ms_median'])} ms, "
        f"p90 {fmt(first(report)['ttfb_ms_p90'])} ms; "
        f"load average before {report['load_before'][0]:.2f}, "
        f"after {report['load_after'][0]:.2f}"
    )
    for ours, t in report["targets"].items():
        text = (
            f"issue {t['issue']} {ours} vs {t['peer']}: throughput ≥ x{t['throughput_target']} "
            f"{verdict(t['throughput_ok'])} (x{fmt(t['throughput_vs_peer_up'])} up, "
            f"x{fmt(t['throughput_vs_peer_down'])} down)"
        )
        if t["added_ttfb_ok"] is not None:
            text += f", added TTFB {verdict(t['added_ttfb_ok'])}"
        if t.get("ttfb_within_rtt_ok") is not None:
            text += (
                f", TTFB at RTT {fmt(t['ttfb_vs_peer_at_rtt_ms'])} ms more, within one RTT "
                f"{verdict(t['ttfb_within_rtt_ok'])}"
            )
        if t["rss_ok"] is not None:
            text += f", RSS ≤ {t['rss_target_kib']} KiB {verdict(t['rss_ok'])}"
        print(text)


def machine() -> dict[str, Any]:
    cpu = "?"
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "iperf3": subprocess.run(
            ["iperf3", "--version"], capture_output=True, text=True
        ).stdout.split("\n")[0],
    }


# small things
def say(text: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {text}", flush=True)


def split(ep: Endpoint) -> list[str]:
    return [ep.host, str(ep.port)]


def median(xs: list[float]) -> float | None:
    return statistics.median(xs) if xs else None


def p90(xs: list[float]) -> float | None:
    return statistics.quantiles(xs, n=10)[-1] if len(xs) >= 2 else None


def ratio(a: float | None, b: float | None) -> float | None:
    return round(a / b, 3) if a and b else None


def ms(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds * 1000, 3)


def per_gb(cpu: float, nbytes: int) -> float | None:
    return round(cpu / (nbytes / 1e9), 2) if nbytes else None


def fmt(x: float | None) -> str:
    return "-" if x is None else f"{x:.2f}"


def first(report: dict[str, Any]) -> dict[str, Any]:
    return next(iter(report["results"].values()))


def verdict(ok: bool | None) -> str:
    return {True: "met", False: "MISSED", None: "n/a"}[ok]


def _le(a: float | None, b: float | None) -> bool | None:
    return None if a is None or b is None else a <= b


if __name__ == "__main__":
    sys.exit(main())
