"""Time to first byte and CPU per connection on loopback, one pair at a time: the quick
counterpart of run.py's TTFB column for profiling (no namespaces, no root needed).

    .venv/bin/python bench/loopback.py [--connections N] [--wrap-server "strace -c -f -o F"] PAIR...

PAIR is `libev` (ss-tunnel -> ss-server), `floor` (floor.py) or `elsewhere` (a tunnel inbound
-> shadowsocks outbound -> shadowsocks inbound -> direct outbound), all aes-256-gcm. Each pair
runs alone: probes.py's answering server, the proxy's server and client, then probes.py's ttfb
over N fresh connections after 200 of warm-up. Prints the added TTFB (median and p90 over the
direct median) and the CPU seconds of the server and client processes per connection."""

from __future__ import annotations

import argparse
import json
import os
import shlex
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from statistics import median

HERE = Path(__file__).resolve().parent
PROBES = str(HERE / "probes.py")
FLOOR = str(HERE / "floor.py")
HOST = "127.0.0.1"
PASSWORD = "loopback-bench"
WARMUP = 200
TIME_LIMIT = 120  # seconds for one probe run: it stops by itself


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


def wait_listening(port: int, proc: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"{proc.args!r} exited with {proc.returncode}")
        try:
            socket.create_connection((HOST, port), 0.2).close()
            return
        except OSError:
            time.sleep(0.05)
    raise SystemExit(f"nothing listens on {port} after 10 s")


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def elsewhere_configs(workdir: Path, server: int, client: int, answer: int) -> list[Path]:
    cli_conf, srv_conf = workdir / "client.toml", workdir / "server.toml"
    key = f'method = "aes-256-gcm"\npassword = "{PASSWORD}"\n'
    srv_conf.write_text(
        f'[[inbounds]]\ntype = "shadowsocks"\nlisten = "{HOST}"\nport = {server}\n{key}'
        '[[outbounds]]\ntype = "direct"\nprivate = "allow"\n'
    )
    cli_conf.write_text(
        f'[[inbounds]]\ntype = "tunnel"\nlisten = "{HOST}"\nport = {client}\n'
        f'destination = "{HOST}:{answer}"\nnetwork = ["tcp"]\n'
        f'[[outbounds]]\ntype = "shadowsocks"\nserver = "{HOST}"\nport = {server}\n{key}'
    )
    return [srv_conf, cli_conf]


def commands(pair: str, workdir: Path, server: int, client: int, answer: int) -> list[list[str]]:
    """[server argv, client argv]"""
    if pair == "libev":
        common = ["-s", HOST, "-p", str(server), "-k", PASSWORD, "-m", "aes-256-gcm"]
        tunnel = ["-b", HOST, "-l", str(client), "-L", f"{HOST}:{answer}"]
        return [
            ["ss-server", *common, "--no-delay"],
            ["ss-tunnel", *common, *tunnel, "--no-delay"],
        ]
    if pair == "floor":
        upstream = [HOST, str(server), HOST, str(answer)]
        return [
            [sys.executable, FLOOR, "server", HOST, str(server), PASSWORD],
            [sys.executable, FLOOR, "client", HOST, str(client), PASSWORD, *upstream],
        ]
    if pair == "elsewhere":
        cli = str(Path(sys.executable).with_name("elsewhere"))
        configs = elsewhere_configs(workdir, server, client, answer)
        return [[cli, "run", "--config", str(c)] for c in configs]
    raise SystemExit(f"unknown pair {pair!r}: libev, floor or elsewhere")


@contextmanager
def started(argv: list[str], port: int, log: Path) -> Iterator[subprocess.Popen[bytes]]:
    with log.open("wb") as out:
        proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=out)
    try:
        wait_listening(port, proc)
        yield proc
    finally:
        proc.terminate()
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def ttfb(port: int, count: int) -> list[float]:
    argv = [sys.executable, PROBES, "ttfb", HOST, str(port), str(count), str(TIME_LIMIT)]
    done = subprocess.run(argv, capture_output=True, text=True, check=True)
    got = json.loads(done.stdout)
    if got["errors"]:
        raise SystemExit(f"{got['errors']} connections failed")
    return list(got["seconds"])


def measure(pair: str, count: int, wrap_server: list[str]) -> str:
    answer, server, client = free_port(), free_port(), free_port()
    with tempfile.TemporaryDirectory(prefix="loopback-") as tmp:
        workdir = Path(tmp)
        srv_argv, cli_argv = commands(pair, workdir, server, client, answer)
        answering = [sys.executable, PROBES, "serve", HOST, str(answer)]
        with (
            started(answering, answer, workdir / "answer.log"),
            started(wrap_server + srv_argv, server, workdir / "server.log") as srv,
            started(cli_argv, client, workdir / "client.log") as cli,
        ):
            direct = median(ttfb(answer, 500))
            ttfb(client, WARMUP)
            before = cpu_seconds(srv.pid), cpu_seconds(cli.pid)
            times = sorted(ttfb(client, count))
            after = cpu_seconds(srv.pid), cpu_seconds(cli.pid)
    ms = [(after[i] - before[i]) * 1e3 / count for i in (0, 1)]
    p90 = times[int(0.9 * len(times))]
    return (
        f"{pair:10} added TTFB median {1e3 * (median(times) - direct):.3f} ms, "
        f"p90 {1e3 * (p90 - direct):.3f} ms; CPU per connection: server {ms[0]:.3f} ms, "
        f"client {ms[1]:.3f} ms"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("pairs", nargs="+", choices=["libev", "floor", "elsewhere"])
    parser.add_argument("--connections", type=int, default=3000)
    parser.add_argument(
        "--wrap-server",
        default="",
        help='a command the server runs under, e.g. "strace -c -f -o F" (its CPU is then counted)',
    )
    args = parser.parse_args()
    for pair in args.pairs:
        print(measure(pair, args.connections, shlex.split(args.wrap_server)), flush=True)


if __name__ == "__main__":
    main()
