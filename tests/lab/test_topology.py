"""The lab builds its four namespaces, serves its sites, and leaves nothing behind — after a
clean exit, after an exception, and after SIGINT/SIGTERM."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from elsewhere.lab import plan
from elsewhere.lab.topology import NETNS_ETC, Lab, lab_namespaces
from elsewhere.lab.transport import fetch

pytestmark = pytest.mark.lab


def _pid_gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False


def test_a_built_lab_serves_the_sites_by_name_with_certificates_the_client_trusts(lab: Lab) -> None:
    for role in plan.ROLES:
        assert lab.ns(role) in lab_namespaces()
    page = fetch(lab, "https://bank.test/")
    assert page.reached and page.size > 16 * 1024
    assert fetch(lab, "https://instagram.test/").reached  # no censor yet: nothing is blocked


def test_nothing_in_the_lab_has_a_route_out_of_it(lab: Lab) -> None:
    # The internet namespace is the end of the world: no default route to anywhere real.
    routes = lab.run("internet", ["ip", "route", "show", "default"]).stdout
    assert routes.strip() == ""
    lookup = lab.run("client", ["ip", "route", "get", "192.0.2.1"], check=False)
    assert "via 10.77.1.1" in lookup.stdout  # only ever towards the censor...
    beyond = lab.run("internet", ["ip", "route", "get", "192.0.2.1"], check=False)
    assert beyond.returncode != 0  # ...and the internet has nowhere to send it


def test_teardown_removes_namespaces_processes_and_resolver_files(tmp_path: Path) -> None:
    with Lab(workdir=tmp_path / "lab") as lab:
        names = [lab.ns(role) for role in plan.ROLES]
        pids = [p.pid for p in lab.processes]
        assert pids and all((NETNS_ETC / lab.ns(r)).exists() for r in ("client", "server"))
    assert not set(names) & set(lab_namespaces())
    assert all(_pid_gone(pid) for pid in pids)
    assert not any((NETNS_ETC / name).exists() for name in names)


def test_teardown_also_happens_when_the_body_fails(tmp_path: Path) -> None:
    with pytest.raises(RuntimeError), Lab(workdir=tmp_path / "lab") as lab:
        names = [lab.ns(role) for role in plan.ROLES]
        raise RuntimeError("a test failed inside the lab")
    assert not set(names) & set(lab_namespaces())


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_an_interrupted_lab_process_tears_its_lab_down(tmp_path: Path, signum: int) -> None:
    script = (
        "import sys, time\n"
        "from elsewhere.lab.topology import Lab\n"
        f"with Lab(workdir=__import__('pathlib').Path({str(tmp_path / 'lab')!r})) as lab:\n"
        "    print(lab.ns('client'), flush=True)\n"
        "    sys.stdin.read()\n"  # blocks until the signal arrives
    )
    child = subprocess.Popen([sys.executable, "-c", script], stdin=subprocess.PIPE,
                             stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout is not None
        client_ns = child.stdout.readline().strip()
        assert client_ns in lab_namespaces()
        child.send_signal(signum)
        child.wait(15)
    finally:
        if child.poll() is None:
            child.kill()
    prefix = client_ns.removesuffix("-client")
    assert not [n for n in lab_namespaces() if n.startswith(prefix + "-")]
