"""The lab's network: five namespaces (client, censor, internet, server, domestic) joined by
veth pairs, addressed and routed as `plan` says, with the test sites running in `internet`.
`domestic` is a general host inside the country (a relay, a CDN edge), not any one tool's.
Built and torn down by the code itself with `ip`; every process it starts is tracked by PID
and ended on teardown, which runs on success, on failure, on Ctrl-C (KeyboardInterrupt), on
SIGTERM and at interpreter exit.

    with Lab() as lab:
        lab.run("client", ["curl", "https://bank.test/"])
"""

from __future__ import annotations

import atexit
import contextlib
import itertools
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from types import FrameType, TracebackType
from typing import NamedTuple

from elsewhere.lab import plan, sites
from elsewhere.lab.errors import LabError
from elsewhere.lab.netns import NETNS_RUN_DIR, socket_in
from elsewhere.lab.plan import Role
from elsewhere.lab.wait import wait_until

NETNS_ETC = Path("/etc/netns")  # `ip netns exec` bind-mounts /etc/netns/<ns>/* over /etc/*
NAME_PATTERN = re.compile(r"^ew(\d+)x\d+-")  # ew<pid>x<n>-<role>: the pid that owns the lab
STOP_GRACE = 3.0  # seconds a process gets between SIGTERM and SIGKILL
SITES_START_TIMEOUT = 20.0
COMMAND_TIMEOUT = 30.0

Socket = socket.socket  # the class's `socket` method shadows the module inside the class

_counter = itertools.count()
_live: set[Lab] = set()
_live_lock = threading.Lock()
_handlers_installed = False

class End(NamedTuple):
    """One end of a veth pair: the namespace, the interface's name there, its address."""

    role: Role
    interface: str
    address: str
    prefix_len: int = plan.PREFIX_LEN


# The veth pairs.
LINKS: tuple[tuple[End, End], ...] = (
    (End("client", "to-censor", plan.CLIENT), End("censor", "to-client", plan.CENSOR_INSIDE)),
    (
        End("censor", "to-internet", plan.CENSOR_OUTSIDE),
        End("internet", "to-censor", plan.INTERNET_FROM_CENSOR),
    ),
    (
        End("internet", "to-server", plan.INTERNET_FROM_SERVER),
        End("server", "to-internet", plan.SERVER),
    ),
    (
        End("censor", "to-domestic", plan.CENSOR_TO_DOMESTIC, plan.DOMESTIC_HOST_PREFIX_LEN),
        End("domestic", "to-censor", plan.DOMESTIC_HOST, plan.DOMESTIC_HOST_PREFIX_LEN),
    ),
    (
        End("domestic", "to-internet", plan.DOMESTIC_UPLINK),
        End("internet", "to-domestic", plan.INTERNET_FROM_DOMESTIC),
    ),
)
ROUTES: dict[Role, tuple[str, ...]] = {
    "client": (f"route add default via {plan.CENSOR_INSIDE}",),
    "censor": (f"route add default via {plan.INTERNET_FROM_CENSOR}",),
    "internet": (
        f"route add {plan.CLIENT_NETWORK} via {plan.CENSOR_OUTSIDE}",
        f"route add {plan.DOMESTIC_HOST_NETWORK} via {plan.DOMESTIC_UPLINK}",
        f"route add unreachable {plan.SINKHOLE_NETWORK}",
    ),
    "server": (f"route add default via {plan.INTERNET_FROM_SERVER}",),
    # Users inside the country come (and are answered) through the censor; everything else
    # leaves over the uplink, which no censor sits on.
    "domestic": (
        f"route add {plan.CLIENT_NETWORK} via {plan.CENSOR_TO_DOMESTIC}",
        f"route add default via {plan.INTERNET_FROM_DOMESTIC}",
    ),
}
FORWARDING: tuple[Role, ...] = ("censor", "internet")
RESOLVER_USERS: tuple[Role, ...] = ("client", "server", "domestic")
RESOLV_CONF = f"nameserver {plan.DNS}\noptions timeout:1 attempts:2\n"


class LabProcess:
    """A process started inside a lab namespace; its output goes to `log`."""

    def __init__(self, name: str, role: Role, popen: subprocess.Popen[bytes], log: Path) -> None:
        self.name = name
        self.role = role
        self.popen = popen
        self.log = log

    @property
    def pid(self) -> int:
        return self.popen.pid

    def alive(self) -> bool:
        return self.popen.poll() is None

    def output(self) -> str:
        try:
            return self.log.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def wait_for_output(self, text: str, timeout: float) -> None:
        """Return once `text` appears in the output; LabError if the process dies first."""

        def said_it() -> bool:
            if text in self.output():
                return True
            if not self.alive():
                tail = self.output()[-800:]
                raise LabError(
                    f"{self.name} exited with {self.popen.returncode} before {text!r}:\n{tail}"
                )
            return False

        wait_until(said_it, timeout, f"{self.name} to print {text!r}")

    def stop(self, grace: float = STOP_GRACE) -> None:
        """SIGTERM, then SIGKILL after `grace` seconds; by PID, and only this process."""
        if self.popen.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.popen.pid, signal.SIGTERM)
            try:
                self.popen.wait(grace)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(self.popen.pid, signal.SIGKILL)
                self.popen.wait(grace)


class Lab:
    """One censor lab. Use as a context manager; `build()` happens on entry."""

    def __init__(self, workdir: Path | None = None, *, keep_workdir: bool = False) -> None:
        self.id = f"ew{os.getpid()}x{next(_counter)}"
        self._own_workdir = workdir is None and not keep_workdir
        self.workdir = Path(workdir) if workdir else Path(tempfile.mkdtemp(prefix=f"{self.id}-"))
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.processes: list[LabProcess] = []
        self.ca: sites.LabCA | None = None
        self._namespaces: list[str] = []
        self._closed = False

    # -- names and paths ---------------------------------------------------------------------

    def ns(self, role: Role) -> str:
        """The namespace name for `role` in this lab."""
        return f"{self.id}-{role}"

    @property
    def ca_cert(self) -> Path:
        if self.ca is None:
            raise LabError("the lab is not built yet")
        return self.ca.cert_path

    # -- life cycle --------------------------------------------------------------------------

    def __enter__(self) -> Lab:
        try:
            return self.build()
        except BaseException:
            self.close()
            raise

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def build(self) -> Lab:
        """Create namespaces, links, addresses and routes; start the sites and DNS."""
        if os.geteuid() != 0:
            raise LabError("the censor lab needs root (network namespaces, iptables)")
        _install_teardown_hooks()
        with _live_lock:
            _live.add(self)
        remove_stale_labs()
        self._create_namespaces()
        self._configure_namespaces()
        self.ca = sites.LabCA(self.workdir / "ca")
        sites.prepare_sites(self.ca)
        process = self.spawn(
            "internet",
            self.python("elsewhere.lab.sites", "--workdir", str(self.workdir)),
            name="sites",
        )
        process.wait_for_output(sites.READY, SITES_START_TIMEOUT)
        return self

    def _create_namespaces(self) -> None:
        commands = [f"netns add {self.ns(role)}" for role in plan.ROLES]
        for a, b in LINKS:
            commands.append(
                f"link add {a.interface} netns {self.ns(a.role)} type veth "
                f"peer name {b.interface} netns {self.ns(b.role)}"
            )
        # Recorded before the batch runs so a half-built lab is still torn down.
        self._namespaces = [self.ns(role) for role in plan.ROLES]
        ip_batch(commands)

    def _configure_namespaces(self) -> None:
        per_role: dict[Role, list[str]] = {role: ["link set lo up"] for role in plan.ROLES}
        for end in (end for link in LINKS for end in link):
            per_role[end.role] += [
                f"addr add {end.address}/{end.prefix_len} dev {end.interface}",
                f"link set {end.interface} up",
            ]
        for site in plan.SITES:
            per_role["internet"].append(f"addr add {site.address}/32 dev lo")
        per_role["internet"].append(f"addr add {plan.DNS}/32 dev lo")
        for role, routes in ROUTES.items():
            per_role[role] += list(routes)
        for role, commands in per_role.items():
            ip_batch(commands, namespace=self.ns(role))
        for role in plan.ROLES:
            keys = ["net.ipv6.conf.all.disable_ipv6=1", "net.ipv6.conf.default.disable_ipv6=1"]
            if role in FORWARDING:
                keys.append("net.ipv4.ip_forward=1")
            self.run(role, ["sysctl", "-qw", *keys])
        for role in RESOLVER_USERS:
            etc = NETNS_ETC / self.ns(role)
            etc.mkdir(parents=True, exist_ok=True)
            (etc / "resolv.conf").write_text(RESOLV_CONF)

    def close(self) -> None:
        """Stop every process, delete the namespaces and their /etc/netns files. Idempotent."""
        if self._closed:
            return
        self._closed = True
        for process in reversed(self.processes):
            with contextlib.suppress(Exception):
                process.stop()
        for namespace in self._namespaces:
            delete_namespace(namespace)
        if self._own_workdir:
            shutil.rmtree(self.workdir, ignore_errors=True)
        with _live_lock:
            _live.discard(self)

    # -- running things inside -----------------------------------------------------------------

    @staticmethod
    def python(module: str, *args: str) -> list[str]:
        """argv that runs `python -m module args` with this interpreter (and this package)."""
        return [sys.executable, "-m", module, *args]

    def run(
        self,
        role: Role,
        argv: Sequence[str],
        *,
        check: bool = True,
        timeout: float = COMMAND_TIMEOUT,
        input: str | None = None,
    ) -> subprocess.CompletedProcess[str]:
        """Run a command to completion inside `role`'s namespace."""
        try:
            done = subprocess.run(
                ["ip", "netns", "exec", self.ns(role), *argv],
                capture_output=True,
                text=True,
                timeout=timeout,
                input=input,
                stdin=None if input is not None else subprocess.DEVNULL,
            )
        except subprocess.TimeoutExpired as exc:
            raise LabError(f"{argv[0]} in {role} took longer than {timeout:g} s") from exc
        if check and done.returncode != 0:
            raise LabError(
                f"{' '.join(argv)} in {role} failed ({done.returncode}): {done.stderr.strip()}"
            )
        return done

    def spawn(
        self, role: Role, argv: Sequence[str], *, name: str, env: dict[str, str] | None = None
    ) -> LabProcess:
        """Start a long-running process inside `role`'s namespace; the lab ends it on close."""
        if self._closed:
            raise LabError("the lab is closed")
        log = self.workdir / f"{name}.log"
        with log.open("wb") as out:
            popen = subprocess.Popen(
                ["ip", "netns", "exec", self.ns(role), *argv],
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,  # Ctrl-C reaches us, and we end it in order
                env={**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})},
            )
        process = LabProcess(name, role, popen, log)
        self.processes.append(process)
        return process

    def forget(self, process: LabProcess) -> None:
        """Stop `process` now and stop tracking it."""
        process.stop()
        with contextlib.suppress(ValueError):
            self.processes.remove(process)

    def socket(
        self, role: Role, family: int = socket.AF_INET, kind: int = socket.SOCK_STREAM
    ) -> Socket:
        """A socket of this process that lives in `role`'s namespace."""
        return socket_in(self.ns(role), family, kind)

    def connect(self, role: Role, host: str, port: int, timeout: float = 2.0) -> Socket:
        """A TCP connection from inside `role` (blocking socket with `timeout`)."""
        sock = self.socket(role)
        sock.settimeout(timeout)
        try:
            sock.connect((host, port))
        except BaseException:
            sock.close()
            raise
        return sock

    def wait_tcp(self, role: Role, host: str, port: int, timeout: float = 10.0) -> None:
        """Return once something accepts TCP connections on host:port as seen from `role`."""

        def accepts() -> bool:
            try:
                self.connect(role, host, port, timeout=0.5).close()
            except OSError:
                return False
            return True

        wait_until(accepts, timeout, f"{host}:{port} to accept connections in {role}")


# -- helpers that work on names, for teardown and stale labs ------------------------------------


def ip_batch(commands: Sequence[str], namespace: str | None = None) -> None:
    """Run `ip` commands in one process (faster than one `ip` per command)."""
    argv = ["ip", *(["-n", namespace] if namespace else []), "-batch", "-"]
    done = subprocess.run(
        argv,
        input="\n".join(commands) + "\n",
        capture_output=True,
        text=True,
        timeout=COMMAND_TIMEOUT,
    )
    if done.returncode != 0:
        raise LabError(f"ip failed{' in ' + namespace if namespace else ''}: {done.stderr.strip()}")


def delete_namespace(namespace: str) -> None:
    """Kill what still runs in a lab namespace (by PID), delete it and its /etc/netns files."""
    if os.path.exists(os.path.join(NETNS_RUN_DIR, namespace)):
        pids = subprocess.run(["ip", "netns", "pids", namespace], capture_output=True, text=True)
        for pid in pids.stdout.split():
            with contextlib.suppress(ProcessLookupError, ValueError):
                os.kill(int(pid), signal.SIGKILL)
        for _ in range(3):
            done = subprocess.run(["ip", "netns", "del", namespace], capture_output=True)
            if done.returncode == 0:
                break
            time.sleep(0.05)  # a process killed above may still hold a mount briefly
    shutil.rmtree(NETNS_ETC / namespace, ignore_errors=True)


def lab_namespaces() -> list[str]:
    """Names of all namespaces that look like ours (ew<pid>x<n>-<role>)."""
    try:
        names = os.listdir(NETNS_RUN_DIR)
    except FileNotFoundError:
        return []
    return sorted(n for n in names if NAME_PATTERN.match(n))


def remove_stale_labs() -> None:
    """Delete namespaces left by lab processes that no longer exist (a SIGKILLed test run)."""
    for namespace in lab_namespaces():
        match = NAME_PATTERN.match(namespace)
        assert match is not None
        if not _pid_alive(int(match.group(1))):
            delete_namespace(namespace)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def close_all() -> None:
    """Tear down every lab this process still has open."""
    with _live_lock:
        labs = list(_live)
    for lab in labs:
        lab.close()


def _raise_on_signal(signum: int, frame: FrameType | None) -> None:
    # Unwind like Ctrl-C does, so every `with Lab()` runs its teardown.
    raise SystemExit(128 + signum)


def _install_teardown_hooks() -> None:
    global _handlers_installed
    if _handlers_installed:
        return
    _handlers_installed = True
    atexit.register(close_all)
    if threading.current_thread() is threading.main_thread():
        for signum in (signal.SIGTERM, signal.SIGHUP):
            if signal.getsignal(signum) == signal.SIG_DFL:
                signal.signal(signum, _raise_on_signal)
