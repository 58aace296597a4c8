"""The benchmark's network namespaces, `client` and `server` joined by one veth pair, and a
`relay` (a domestic machine for the two-hop rows) with a veth pair to each; and the processes
started inside them. Everything made here is torn down by `close()`, which run.py calls on
exit, on failure and on Ctrl-C.

    client 10.201.0.1 ───────────────────────── 10.201.0.2 server
    client 10.202.0.1 ── 10.202.0.2 relay 10.203.0.1 ── 10.203.0.2 server
"""

from __future__ import annotations

import contextlib
import os
import resource
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

SUBNET = "10.201.0"  # only ever configured inside the namespaces made here
CLIENT_ADDR = f"{SUBNET}.1"
SERVER_ADDR = f"{SUBNET}.2"
RELAY_ADDR = "10.202.0.2"  # the relay, as the client reaches it
CLIENT_TO_RELAY = "10.202.0.1"
RELAY_UPLINK = "10.203.0.1"
SERVER_FROM_RELAY = "10.203.0.2"  # the exit, as the relay reaches it
OPEN_FILES = 16384  # 1000 idle tunnels cost up to four descriptors per process
CLK_TCK = os.sysconf("SC_CLK_TCK")


@dataclass(frozen=True)
class Endpoint:
    host: str
    port: int

    def __str__(self) -> str:
        return f"{self.host}:{self.port}"


# the destinations behind every server, in the server namespace
IPERF = Endpoint(SERVER_ADDR, 5201)  # iperf3 -s
ANSWER = Endpoint(SERVER_ADDR, 7000)  # probes.py serve: one byte back for the first bytes in


def _raise_open_files() -> None:
    resource.setrlimit(resource.RLIMIT_NOFILE, (OPEN_FILES, OPEN_FILES))


def cpu_seconds(pid: int) -> float:
    """utime + stime of one process (proc(5) fields 14 and 15), in seconds."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError(f"process {pid} has no VmRSS (exited?)")


class Lab:
    """`client` and `server` namespaces with unique names; processes started by `spawn` are
    stopped by PID, then the namespaces are deleted (which removes the veth pair too)."""

    def __init__(self, workdir: Path) -> None:
        tag = f"ebench{os.getpid()}"
        self.client = f"{tag}-c"
        self.server = f"{tag}-s"
        self.relay = f"{tag}-r"
        self.workdir = workdir
        self.processes: list[subprocess.Popen[bytes]] = []
        self.server_links: list[str] = []  # the server's ends towards client and relay
        self._made: list[str] = []

    def __enter__(self) -> Lab:
        try:
            self.build()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def build(self) -> None:
        for ns in (self.client, self.server, self.relay):
            _ip("netns", "add", ns)
            self._made.append(ns)
            _ip("-n", ns, "link", "set", "lo", "up")
        pid = os.getpid()
        ends: list[tuple[str, str]] = []
        for (ns_a, addr_a), (ns_b, addr_b), name in (
            ((self.client, CLIENT_ADDR), (self.server, SERVER_ADDR), "s"),
            ((self.client, CLIENT_TO_RELAY), (self.relay, RELAY_ADDR), "r"),
            ((self.relay, RELAY_UPLINK), (self.server, SERVER_FROM_RELAY), "u"),
        ):
            dev_a, dev_b = f"eb{pid}{name}a", f"eb{pid}{name}b"
            _ip("link", "add", dev_a, "netns", ns_a, "type", "veth",
                "peer", "name", dev_b, "netns", ns_b)
            for ns, dev, addr in ((ns_a, dev_a, addr_a), (ns_b, dev_b, addr_b)):
                _ip("-n", ns, "addr", "add", f"{addr}/24", "dev", dev)
                _ip("-n", ns, "link", "set", dev, "up")
                ends.append((ns, dev))
            if ns_b == self.server:
                self.server_links.append(dev_b)
        # the veth carrier comes up asynchronously: wait (bounded) until both ends say so
        deadline = time.monotonic() + 10
        while not all(
            "LOWER_UP"
            in subprocess.run(
                ["ip", "-n", ns, "-o", "link", "show", "dev", dev], capture_output=True, text=True
            ).stdout
            for ns, dev in ends
        ):
            if time.monotonic() > deadline:
                raise RuntimeError("the veth pairs between the namespaces never came up")
            time.sleep(0.05)

    def spawn(
        self, ns: str, argv: list[str], log: str, env: dict[str, str] | None = None
    ) -> subprocess.Popen[bytes]:
        """Start `argv` inside namespace `ns`. `ip netns exec` execs the command itself, so the
        PID we get is the PID whose /proc counters we read."""
        out = open(self.workdir / f"{log}.log", "wb")  # noqa: SIM115 - closed with the process
        proc = subprocess.Popen(
            ["ip", "netns", "exec", ns, *argv],
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            preexec_fn=_raise_open_files,
            env=env,
        )
        out.close()
        self.processes.append(proc)
        return proc

    def run(
        self, ns: str, argv: list[str], timeout: float, stdin: bytes | None = None
    ) -> subprocess.CompletedProcess[bytes]:
        return subprocess.run(
            ["ip", "netns", "exec", ns, *argv],
            input=stdin,
            capture_output=True,
            timeout=timeout,
            preexec_fn=_raise_open_files,
        )

    def popen(self, ns: str, argv: list[str]) -> subprocess.Popen[bytes]:
        """A helper that talks to us over stdin/stdout; stopped like the others."""
        proc = subprocess.Popen(
            ["ip", "netns", "exec", ns, *argv],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            preexec_fn=_raise_open_files,
        )
        self.processes.append(proc)
        return proc

    def wait_listening(
        self, ns: str, port: int, proc: subprocess.Popen[bytes], limit: float = 15
    ) -> None:
        """Until something in `ns` listens on TCP `port` (polled with ss(8), so no stray
        connection reaches a server that would count it as a probe)."""
        deadline = time.monotonic() + limit
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise RuntimeError(
                    f"{proc.args!r} exited with {proc.returncode}; see {self.workdir}"
                )
            out = subprocess.run(
                ["ip", "netns", "exec", ns, "ss", "-Hltn", f"sport = :{port}"],
                capture_output=True,
                text=True,
            ).stdout
            if out.strip():
                return
            time.sleep(0.05)
        raise RuntimeError(f"nothing listens on port {port} in {ns} after {limit:.0f} s")

    def stop(self, proc: subprocess.Popen[bytes]) -> None:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)
        for stream in (proc.stdin, proc.stdout, proc.stderr):
            if stream is not None:
                stream.close()

    def close(self) -> None:
        for proc in reversed(self.processes):
            with contextlib.suppress(Exception):  # keep tearing down the rest
                self.stop(proc)
        self.processes.clear()
        for ns in reversed(self._made):
            subprocess.run(["ip", "netns", "del", ns], capture_output=True)
        self._made.clear()


def _ip(*args: str) -> None:
    done = subprocess.run(["ip", *args], capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"ip {' '.join(args)}: {done.stderr.strip()}")
