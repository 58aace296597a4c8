"""`elsewhere vpn` where it must refuse or where the lab's four namespaces are not needed: in a
bare namespace the test makes, one clear line for a missing capability, another VPN in the
way, no nftables, a malformed rule set, a second instance, with nothing changed; and IPv6
tunnel mode's rules and routes, undone exactly by --off."""

from __future__ import annotations

import itertools
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from elsewhere.lab.device import READY, VPN_START_TIMEOUT
from elsewhere.lab.topology import delete_namespace, ip_batch
from elsewhere.lab.wait import wait_until

pytestmark = pytest.mark.lab

LINK = "ss://YWVzLTI1Ni1nY206c2VjcmV0@192.0.2.10:8388#test"  # never reached: nothing routes there
_names = itertools.count(1000)


@pytest.fixture
def netns() -> Iterator[str]:
    name = f"ew{os.getpid()}x{next(_names)}-device"  # the lab's pattern: stale ones are removed
    subprocess.run(["ip", "netns", "add", name], check=True)
    try:
        # no link-local addresses: the kernel adds them some time after a link comes up,
        # which would change the routes between a test's before and after
        subprocess.run(["ip", "netns", "exec", name, "sysctl", "-qw",
                        "net.ipv6.conf.default.addr_gen_mode=1"], check=True)
        ip_batch(["link set lo up", "link add eth0 type veth peer name eth1",
                  "link set eth0 up", "link set eth1 up", "addr add 10.9.0.2/24 dev eth0",
                  "route add default via 10.9.0.1",
                  "addr add 2001:db8:9::2/64 dev eth0 nodad"], namespace=name)
        yield name
    finally:
        delete_namespace(name)


def state(name: str) -> dict[str, str]:
    argvs = {"nftables": ["nft", "list", "ruleset"], "rules4": ["ip", "-4", "rule"],
             "rules6": ["ip", "-6", "rule"], "routes4": ["ip", "-4", "route", "show", "table",
                                                        "all"],
             "routes6": ["ip", "-6", "route", "show", "table", "all"]}
    return {k: subprocess.run(["ip", "netns", "exec", name, *argv], capture_output=True,
                              text=True, check=True).stdout for k, argv in argvs.items()}


def vpn(name: str, *args: str, prefix: tuple[str, ...] = (),
        env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*prefix, sys.executable, "-m", "elsewhere", "vpn", *args,
                           "--netns", name], capture_output=True, text=True, timeout=30,
                          env={**os.environ, **(env or {})})


def one_line(done: subprocess.CompletedProcess[str]) -> str:
    assert done.returncode == 2, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr  # one clear line, never a traceback
    return lines[0]


def test_without_cap_net_admin_one_line_names_it_and_nothing_changes(netns: str) -> None:
    before = state(netns)
    done = vpn(netns, LINK, prefix=("setpriv", "--bounding-set=-net_admin",
                                    "--inh-caps=-net_admin", "--"))
    assert "CAP_NET_ADMIN" in one_line(done)
    assert state(netns) == before


def test_another_vpns_rules_are_named_and_nothing_changes(netns: str) -> None:
    subprocess.run(["ip", "netns", "exec", netns, "nft", "add", "table", "inet", "sing-box"],
                   check=True)
    ip_batch(["rule add fwmark 0x2023 lookup 2022 pref 9000"], namespace=netns)
    before = state(netns)
    line = one_line(vpn(netns, LINK))
    assert "nftables table inet sing-box" in line and "policy rule 9000" in line
    assert "nothing was changed" in line
    assert state(netns) == before


def test_without_nftables_it_says_so(netns: str) -> None:
    before = state(netns)
    line = one_line(vpn(netns, LINK, env={"PATH": "/nonexistent"}))
    assert "nftables" in line and "not installed" in line
    assert state(netns) == before


def test_a_malformed_rule_set_names_the_file_and_line_and_nothing_changes(
    netns: str, tmp_path: Path
) -> None:
    rules = tmp_path / "mine.txt"
    rules.write_text("domain_suffix bank.example\ncidr 10.0.0.0/33\n")
    before = state(netns)
    line = one_line(vpn(netns, LINK, "--rules", str(rules)))
    assert line.startswith(f"elsewhere: {rules}, line 2: '10.0.0.0/33' is not a network")
    assert state(netns) == before


def test_ipv6_tunnel_mode_diverts_both_families_and_off_undoes_it_exactly(
    netns: str, tmp_path: Path
) -> None:
    before = state(netns)
    log = tmp_path / "vpn.log"
    with log.open("w") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "elsewhere", "vpn", LINK, "--netns", netns, "--ipv6",
             "tunnel", "--allow-lan", "--no-status"],
            stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        def ready() -> bool:
            assert process.poll() is None, log.read_text()
            return READY in log.read_text()

        wait_until(ready, VPN_START_TIMEOUT, "elsewhere vpn to say it is on")
        during = state(netns)
        second = one_line(vpn(netns, LINK))
        assert f"already running here (pid {process.pid})" in second
        assert state(netns) == during
        assert "fwmark 0x1e57 lookup 7767" in during["rules4"]
        assert "fwmark 0x1e57 lookup 7767" in during["rules6"]
        assert "local default dev lo table 7767" in during["routes6"]
        assert "tproxy ip6 to [::1]:" in during["nftables"]
        assert "10.9.0.0/24" in during["nftables"]  # the LAN, allowed
        os.kill(process.pid, signal.SIGTERM)
        assert process.wait(10) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    done = vpn(netns, "--off")
    assert done.returncode == 0, done.stderr
    assert state(netns) == before
